"""Code archives: how a user's code reaches a cluster whose image does not contain it.

`pack_code` turns a directory (the *code root*) into a deterministic `.tar.gz`: the same tree
always gives the same bytes, so the archive is content-addressed by its sha256 and stored once,
at `code/<sha256>.tar.gz` in the artifact store. `unpack_code` is the other end: a step pod,
an orchestrator pod or an operator worker downloads an archive once per sha256, verifies it,
extracts it safely and puts the directory first on `sys.path`.

What is packed: every regular file under the root, except version control, virtual
environments (any directory holding a `pyvenv.cfg`), caches (`__pycache__`, `*.pyc`, tool
caches) and the patterns given in `exclude`. Symbolic links to files are packed as the files
they point to; symbolic links to directories are not followed. A file over `MAX_FILE_BYTES`,
or a tree over `MAX_TOTAL_BYTES`, is refused with the largest files named: keep data out of
the code root, exclude it, or build an image that contains the code.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import stat
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kstep._errors import CodeArchiveError
from kstep.cluster.specs import CodeSpec

if TYPE_CHECKING:
    from kstep.stores.artifacts import ArtifactStore

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 * 1024 * 1024
"""The largest single file a code archive takes (16 MiB): code, not data."""

MAX_TOTAL_BYTES = 64 * 1024 * 1024
"""The largest total size (uncompressed) of the files in a code archive (64 MiB)."""

EXCLUDED_DIRECTORIES = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    ".kstep",
    "node_modules",
)
"""Directory names never packed, wherever they are in the tree."""

EXCLUDED_FILES = ("*.pyc", "*.pyo", ".DS_Store")
"""File name patterns never packed."""

ARCHIVE_PREFIX = "code"
"""Where archives live under the artifact store's root: `code/<sha256>.tar.gz`."""

# Every entry gets the same owner, time and one of two modes, so that only paths and contents
# decide the archive's bytes (and so its sha256). 1980-01-01 is the earliest time zip accepts,
# which keeps the archive convertible without surprises.
_MTIME = 315_532_800
_FILE_MODE = 0o644
_EXECUTABLE_MODE = 0o755


@dataclass(frozen=True)
class CodeArchive:
    """A packed code root: the `.tar.gz` bytes, their sha256 and what went in."""

    data: bytes
    sha256: str
    files: tuple[str, ...]
    size: int
    """Total size of the packed files, uncompressed, in bytes."""

    @property
    def key(self) -> str:
        """The artifact store key the archive is stored under."""
        return f"{ARCHIVE_PREFIX}/{self.sha256}.tar.gz"


# ------------------------------------------------------------------ code roots


def default_code_root(module_name: str) -> str:
    """The directory to pack for code defined in `module_name`.

    For a script (run as `__main__`, or loaded from a `.py` path) it is the script's
    directory; for a module `pkg.sub.mod` it is the directory containing the top-level
    package `pkg`, so that `import pkg.sub.mod` works with that directory on `sys.path`.

    Raises:
        CodeArchiveError: the module has no file (an interactive session), or is installed
            in site-packages (its code belongs in the image).
    """
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if is_script_module(module_name):
        if path is None:
            raise CodeArchiveError(
                f"module {module_name!r} has no file (an interactive session); define the "
                "pipeline in a script or module so its code can be packed"
            )
        return os.path.dirname(os.path.realpath(str(path)))

    top_file, top_paths = _locate_top_package(module_name.partition(".")[0])
    if top_file is not None and os.path.basename(top_file) == "__init__.py":
        root = os.path.dirname(os.path.dirname(os.path.realpath(top_file)))
    elif top_file is not None:
        root = os.path.dirname(os.path.realpath(top_file))
    elif top_paths:
        # A namespace package: no __init__.py, but a directory.
        root = os.path.dirname(os.path.realpath(top_paths[0]))
    else:
        raise CodeArchiveError(
            f"module {module_name!r} has no file on disk; its code cannot be packed, so it "
            "must be in the image"
        )
    if is_installed(root):
        raise CodeArchiveError(
            f"module {module_name!r} is installed in {root}; installed code belongs in the "
            "image: pass image= with an image that contains it and pack=False, or pass "
            "code_root= naming the directory of your own code"
        )
    return root


def _locate_top_package(name: str) -> tuple[str | None, list[str]]:
    """The file and package directories of a top-level module, imported or not."""
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None), list(getattr(module, "__path__", None) or [])
    try:
        # Finding a top-level module's spec does not run its code.
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None, []
    origin = spec.origin if spec.has_location else None
    return origin, list(spec.submodule_search_locations or [])


def is_script_module(module_name: str) -> bool:
    """Whether a module was loaded from a script path rather than imported by name."""
    return module_name == "__main__" or module_name.startswith("__kstep_script__.")


def is_installed(path: str) -> bool:
    """Whether `path` is inside the standard library or a site-packages directory."""
    real = os.path.realpath(path)
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        directory = sysconfig.get_paths().get(name)
        if directory and is_within(real, os.path.realpath(directory)):
            return True
    return "site-packages" in real.split(os.sep) or "dist-packages" in real.split(os.sep)


def is_within(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or below it (both real, absolute paths)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


# ------------------------------------------------------------------ packing


def build_archive(root: str | os.PathLike[str], *, exclude: Sequence[str] = ()) -> CodeArchive:
    """Pack a code root into a deterministic `.tar.gz`, without storing it anywhere.

    Args:
        root: the directory to pack; it becomes the first entry of `sys.path` where the
            archive is unpacked.
        exclude: further glob patterns of paths (relative to `root`, `/`-separated) or names
            to leave out, such as `"data/*"` or `"*.parquet"`.

    Raises:
        CodeArchiveError: `root` is not a directory, or a file or the tree is too large.
    """
    base = os.path.realpath(os.fspath(root))
    if not os.path.isdir(base):
        raise CodeArchiveError(f"code root {os.fspath(root)!r} is not a directory")

    files = sorted(_collect(base, tuple(exclude)))
    _check_sizes(base, files)

    buffer = io.BytesIO()
    # `filename=""` and a fixed `mtime` keep the gzip header free of the time and the name.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for relative, size, executable in files:
            info = tarfile.TarInfo(relative)
            info.size = size
            info.mtime = _MTIME
            info.mode = _EXECUTABLE_MODE if executable else _FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(os.path.join(base, relative), "rb") as file:
                archive.addfile(info, file)
    data = buffer.getvalue()
    return CodeArchive(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=tuple(relative for relative, _, _ in files),
        size=sum(size for _, size, _ in files),
    )


def pack_code(
    root: str | os.PathLike[str],
    store: ArtifactStore,
    *,
    image: str | None = None,
    exclude: Sequence[str] = (),
    allow_local_store: bool = False,
) -> CodeSpec:
    """Pack a code root and store it in the artifact store, once per content.

    Args:
        root: the directory whose contents become importable in the step pods (see
            `default_code_root`).
        store: the artifact store the cluster's pods read from (`s3://...`).
        image: the image the pods run (with kstep and the code's dependencies installed);
            None for the operator's default image.
        exclude: further glob patterns to leave out (see `build_archive`).
        allow_local_store: accept a local-directory artifact store. Only for clusters whose
            pods share this machine's file system, such as a test bed.

    Returns:
        The `CodeSpec` of a PipelineRun: image, archive URI and sha256.

    Raises:
        CodeArchiveError: the store is a local directory, or the tree cannot be packed.

    Example:
        >>> from kstep.stores.artifacts import S3ArtifactStore
        >>> code = pack_code("src", S3ArtifactStore("s3://ml/kstep"))  # doctest: +SKIP
        >>> code.archive  # doctest: +SKIP
        's3://ml/kstep/code/3f1c...e9.tar.gz'
    """
    check_shared_store(store, allow_local_store=allow_local_store)
    archive = build_archive(root, exclude=exclude)
    return store_archive(archive, store, image=image, allow_local_store=allow_local_store)


def check_shared_store(store: ArtifactStore, *, allow_local_store: bool = False) -> None:
    """Refuse an artifact store that a cluster's pods cannot read (a local directory).

    Raises:
        CodeArchiveError: `store` is a local directory and `allow_local_store` is false.
    """
    from kstep.stores.artifacts import LocalArtifactStore

    if isinstance(store, LocalArtifactStore) and not allow_local_store:
        raise CodeArchiveError(
            f"the artifact store is the local directory {store.root}, which pods on a cluster "
            "cannot read; set KSTEP_ARTIFACT_ROOT=s3://bucket/prefix so the code archive (and "
            "the artifacts) are shared, or pass image= with an image that contains the code "
            "and pack=False"
        )


def store_archive(
    archive: CodeArchive,
    store: ArtifactStore,
    *,
    image: str | None = None,
    allow_local_store: bool = False,
) -> CodeSpec:
    """Upload a built archive unless the store already has it; return its `CodeSpec`."""
    check_shared_store(store, allow_local_store=allow_local_store)
    uri = store.object_uri(archive.key)
    if store.has_object(uri):
        logger.debug("Code archive %s is already stored; it is reused.", uri)
    else:
        uri = store.put_object(archive.key, archive.data)
        logger.debug(
            "Code archive %s holds %d files (%d bytes).", uri, len(archive.files), archive.size
        )
    return CodeSpec(image=image, archive=uri, archive_sha256=archive.sha256)


def _collect(base: str, exclude: tuple[str, ...]) -> Iterable[tuple[str, int, bool]]:
    for directory, subdirectories, names in os.walk(base):
        relative_directory = os.path.relpath(directory, base)
        # Pruning in place stops os.walk from descending; sorting fixes the order.
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not _excluded_directory(directory, name, relative_directory, exclude)
        )
        for name in sorted(names):
            relative = _join(relative_directory, name)
            if _excluded(relative, name, EXCLUDED_FILES + exclude):
                continue
            path = os.path.join(directory, name)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                logger.debug("Link %s points nowhere; it is left out.", path)
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            yield relative, info.st_size, bool(info.st_mode & stat.S_IXUSR)


def _excluded_directory(
    parent: str, name: str, relative_parent: str, exclude: tuple[str, ...]
) -> bool:
    path = os.path.join(parent, name)
    if name in EXCLUDED_DIRECTORIES or os.path.islink(path):
        return True
    if os.path.exists(os.path.join(path, "pyvenv.cfg")):
        return True
    return _excluded(_join(relative_parent, name), name, exclude)


def _excluded(relative: str, name: str, patterns: tuple[str, ...]) -> bool:
    return any(
        fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern)
        for pattern in patterns
    )


def _join(relative_directory: str, name: str) -> str:
    if relative_directory == ".":
        return name
    return f"{relative_directory.replace(os.sep, '/')}/{name}"


def _check_sizes(base: str, files: list[tuple[str, int, bool]]) -> None:
    too_large = [(size, relative) for relative, size, _ in files if size > MAX_FILE_BYTES]
    total = sum(size for _, size, _ in files)
    if not too_large and total <= MAX_TOTAL_BYTES:
        return
    largest = sorted(((size, relative) for relative, size, _ in files), reverse=True)[:5]
    listed = ", ".join(f"{relative} ({_size(size)})" for size, relative in largest)
    if too_large:
        problem = f"{len(too_large)} file(s) exceed the per-file limit of {_size(MAX_FILE_BYTES)}"
    else:
        problem = f"its files total {_size(total)}, over the limit of {_size(MAX_TOTAL_BYTES)}"
    raise CodeArchiveError(
        f"code root {base} cannot be packed: {problem}; largest: {listed}. A code archive "
        "holds code, not data: move data to the artifact store or S3, exclude it "
        "(exclude=['data/*']), or build an image that contains the code"
    )


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


# ------------------------------------------------------------------ unpacking


def unpack_code(code: CodeSpec, store: ArtifactStore, cache_dir: str) -> str:
    """Download, verify and extract a code archive once; return the directory to import from.

    The archive is extracted to `<cache_dir>/<sha256>`, first into a temporary directory
    beside it and then renamed into place, so a crash or a concurrent unpacker never leaves a
    half-extracted tree that looks complete. Members with absolute paths, `..` components,
    links or anything but regular files and directories are refused.

    Args:
        code: the `CodeSpec` of the run; it must name an archive and its sha256.
        store: the artifact store holding the archive.
        cache_dir: a directory for unpacked archives, shared by the processes of one host.

    Returns:
        The directory to put first on `sys.path`.

    Raises:
        CodeArchiveError: the spec names no archive, the download does not match its
            sha256, or the archive holds an unsafe member.
    """
    if not code.archive or not code.archive_sha256:
        raise CodeArchiveError(
            f"code {code.model_dump(by_alias=True, exclude_none=True)} names no archive with "
            "its archiveSha256; nothing to unpack"
        )
    sha256 = code.archive_sha256
    target = os.path.join(os.path.abspath(cache_dir), sha256)
    if os.path.isdir(target):
        return target

    data = store.get_object(code.archive)
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise CodeArchiveError(
            f"code archive {code.archive} has sha256 {found}, not the expected {sha256}; it "
            "was changed or damaged after it was packed"
        )

    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=os.path.dirname(target))
    try:
        _extract(data, staging, code.archive)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process unpacked the same archive first: its copy is as good as ours.
            if not os.path.isdir(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.debug("Code archive %s is unpacked in %s.", code.archive, target)
    return target


def _extract(data: bytes, directory: str, uri: str) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
            total = 0
            for member in members:
                _check_member(member, uri)
                total += member.size
            if total > MAX_TOTAL_BYTES:
                raise CodeArchiveError(
                    f"code archive {uri} unpacks to {_size(total)}, over the limit of "
                    f"{_size(MAX_TOTAL_BYTES)}"
                )
            if hasattr(tarfile, "data_filter"):
                # The "data" filter repeats these checks in the standard library's own terms.
                archive.extractall(directory, members=members, filter="data")
            else:
                archive.extractall(directory, members=members)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise CodeArchiveError(f"code archive {uri} cannot be extracted: {error}") from None


def _check_member(member: tarfile.TarInfo, uri: str) -> None:
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ":" in parts[0]:
        problem = "an absolute path"
    elif ".." in parts:
        problem = "a path that leaves the archive's directory"
    elif member.issym() or member.islnk():
        problem = f"a link (to {member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        problem = "neither a file nor a directory"
    else:
        return
    raise CodeArchiveError(
        f"code archive {uri} is unsafe: member {name!r} is {problem}; code archives hold "
        "only files and directories below their root"
    )
