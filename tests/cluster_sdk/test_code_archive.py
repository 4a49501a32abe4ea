"""Code archives: deterministic packing, safe unpacking, and where the code root is."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from cluster_sdk_support import EXAMPLES

from kstep._errors import CodeArchiveError
from kstep.cluster import code as code_module
from kstep.cluster.code import (
    build_archive,
    default_code_root,
    pack_code,
    store_archive,
    unpack_code,
)
from kstep.cluster.specs import CodeSpec
from kstep.runner._references import import_reference
from kstep.stores.artifacts import LocalArtifactStore


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return archive.getmembers()


def tar_gz(add: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, content in add:
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def stored(store: LocalArtifactStore, data: bytes) -> CodeSpec:
    sha256 = hashlib.sha256(data).hexdigest()
    uri = store.put_object(f"code/{sha256}.tar.gz", data)
    return CodeSpec(archive=uri, archive_sha256=sha256)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "project",
        {
            "train.py": "VALUE = 1\n",
            "pkg/__init__.py": "",
            "pkg/model.py": "def fit():\n    return 2\n",
            "pkg/__pycache__/model.cpython-311.pyc": "x",
            "pkg/old.pyc": "x",
            ".git/HEAD": "ref: refs/heads/main\n",
            ".venv/bin/python": "",
            "env/pyvenv.cfg": "home = /usr\n",
            "env/lib/site.py": "",
            "data/big.csv": "1,2\n",
        },
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(str(tmp_path / "store"))


# ------------------------------------------------------------------ packing


def test_build_archive_gives_the_same_sha256_for_the_same_tree(tree: Path, tmp_path: Path) -> None:
    first = build_archive(tree)
    # The same files, written later in another order and with other permissions.
    copy = write_tree(
        tmp_path / "copy",
        {name: (tree / name).read_text() for name in reversed(first.files)},
    )
    os.utime(copy / "train.py", (1, 1))
    (copy / "pkg" / "model.py").chmod(0o600)

    second = build_archive(copy)

    assert second.sha256 == first.sha256
    assert second.data == first.data
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()


def test_build_archive_changes_its_sha256_when_a_file_changes(tree: Path) -> None:
    before = build_archive(tree)
    (tree / "pkg" / "model.py").write_text("def fit():\n    return 3\n", encoding="utf-8")

    assert build_archive(tree).sha256 != before.sha256


def test_build_archive_leaves_out_caches_version_control_and_virtual_environments(
    tree: Path,
) -> None:
    archive = build_archive(tree)

    assert archive.files == ("data/big.csv", "pkg/__init__.py", "pkg/model.py", "train.py")


def test_build_archive_leaves_out_the_given_patterns(tree: Path) -> None:
    archive = build_archive(tree, exclude=["data/*", "train.py"])

    assert archive.files == ("pkg/__init__.py", "pkg/model.py")


def test_build_archive_normalises_owner_time_and_mode(tree: Path) -> None:
    (tree / "train.py").chmod(0o700)

    found = {info.name: info for info in members(build_archive(tree).data)}

    assert sorted(found) == ["data/big.csv", "pkg/__init__.py", "pkg/model.py", "train.py"]
    assert {(i.uid, i.gid, i.uname, i.gname, i.mtime) for i in found.values()} == {
        (0, 0, "", "", 315_532_800)
    }
    assert found["train.py"].mode == 0o755
    assert found["pkg/model.py"].mode == 0o644


def test_build_archive_packs_a_file_link_as_its_target_and_skips_directory_links(
    tree: Path, tmp_path: Path
) -> None:
    outside = write_tree(tmp_path / "outside", {"shared.py": "X = 1\n"})
    (tree / "shared.py").symlink_to(outside / "shared.py")
    (tree / "linked").symlink_to(outside, target_is_directory=True)

    archive = build_archive(tree)

    assert "shared.py" in archive.files
    assert not any(name.startswith("linked") for name in archive.files)
    assert all(info.isfile() for info in members(archive.data))


def test_build_archive_refuses_a_file_over_the_size_limit(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_module, "MAX_FILE_BYTES", 3)

    with pytest.raises(CodeArchiveError) as caught:
        build_archive(tree)

    message = str(caught.value)
    assert f"code root {tree.resolve()} cannot be packed" in message
    assert "file(s) exceed the per-file limit" in message
    assert "largest: pkg/model.py (24 B), train.py (10 B), data/big.csv (4 B)" in message
    assert "exclude=['data/*']" in message


def test_build_archive_refuses_a_tree_over_the_total_limit(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_module, "MAX_TOTAL_BYTES", 10)

    with pytest.raises(CodeArchiveError, match="its files total 38 B, over the limit of 10 B"):
        build_archive(tree)


def test_build_archive_refuses_a_root_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CodeArchiveError, match="is not a directory"):
        build_archive(tmp_path / "missing")


def test_pack_code_refuses_a_local_artifact_store(tree: Path, store: LocalArtifactStore) -> None:
    with pytest.raises(CodeArchiveError) as caught:
        pack_code(tree, store)

    assert str(caught.value) == (
        f"the artifact store is the local directory {store.root}, which pods on a cluster "
        "cannot read; set KSTEP_ARTIFACT_ROOT=s3://bucket/prefix so the code archive (and the "
        "artifacts) are shared, or pass image= with an image that contains the code and "
        "pack=False"
    )


def test_pack_code_stores_the_archive_once_under_its_sha256(
    tree: Path, store: LocalArtifactStore
) -> None:
    first = pack_code(tree, store, image="kstep:dev", allow_local_store=True)
    path = Path(str(first.archive))
    stamp = path.stat().st_mtime_ns
    second = pack_code(tree, store, image="kstep:dev", allow_local_store=True)

    assert first == second
    assert first.image == "kstep:dev"
    assert path == Path(store.root) / "code" / f"{first.archive_sha256}.tar.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first.archive_sha256
    assert path.stat().st_mtime_ns == stamp


def test_store_archive_refuses_a_local_store_too(tree: Path, store: LocalArtifactStore) -> None:
    with pytest.raises(CodeArchiveError, match="pods on a cluster cannot read"):
        store_archive(build_archive(tree), store)


# ------------------------------------------------------------------ unpacking


def test_unpack_code_extracts_once_and_returns_an_importable_directory(
    tree: Path, store: LocalArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = pack_code(tree, store, allow_local_store=True)
    cache = tmp_path / "cache"

    directory = unpack_code(code, store, str(cache))
    # A second unpack reuses the directory without downloading again.
    Path(str(code.archive)).unlink()
    again = unpack_code(code, store, str(cache))

    assert directory == again == str(cache / str(code.archive_sha256))
    assert sorted(p.name for p in cache.iterdir()) == [code.archive_sha256]
    assert (Path(directory) / "pkg" / "model.py").read_text() == "def fit():\n    return 2\n"
    monkeypatch.syspath_prepend(directory)
    monkeypatch.delitem(sys.modules, "pkg", raising=False)
    monkeypatch.delitem(sys.modules, "pkg.model", raising=False)
    assert import_reference("pkg.model:fit")() == 2


def test_unpack_code_is_safe_when_processes_race(
    tree: Path, store: LocalArtifactStore, tmp_path: Path
) -> None:
    code = pack_code(tree, store, allow_local_store=True)
    results: list[str] = []
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            results.append(unpack_code(code, store, str(tmp_path / "cache")))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=unpack) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(set(results)) == 1
    assert os.listdir(tmp_path / "cache") == [code.archive_sha256]


def test_unpack_code_refuses_an_archive_whose_sha256_differs(
    tree: Path, store: LocalArtifactStore, tmp_path: Path
) -> None:
    code = pack_code(tree, store, allow_local_store=True)
    Path(str(code.archive)).write_bytes(build_archive(tree, exclude=["train.py"]).data)

    with pytest.raises(CodeArchiveError) as caught:
        unpack_code(code, store, str(tmp_path / "cache"))

    assert f"not the expected {code.archive_sha256}" in str(caught.value)
    assert not (tmp_path / "cache" / str(code.archive_sha256)).exists()


def test_unpack_code_refuses_a_spec_without_an_archive(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(CodeArchiveError, match="names no archive"):
        unpack_code(CodeSpec(image="kstep:dev"), store, str(tmp_path))


def file_member(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def link_member(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (file_member("/etc/evil.py"), "is an absolute path"),
        (file_member("../evil.py"), "is a path that leaves the archive's directory"),
        (file_member("pkg/../../evil.py"), "is a path that leaves the archive's directory"),
        (link_member("evil", "/etc/passwd", tarfile.SYMTYPE), "is a link (to '/etc/passwd')"),
        (link_member("evil", "../../x", tarfile.SYMTYPE), "is a link (to '../../x')"),
        (link_member("evil", "train.py", tarfile.LNKTYPE), "is a link (to 'train.py')"),
        (link_member("fifo", "", tarfile.FIFOTYPE), "is neither a file nor a directory"),
    ],
    ids=["absolute", "dotdot", "inner-dotdot", "symlink-out", "symlink-up", "hardlink", "fifo"],
)
def test_unpack_code_refuses_an_unsafe_member(
    member: tuple[tarfile.TarInfo, bytes | None],
    problem: str,
    store: LocalArtifactStore,
    tmp_path: Path,
) -> None:
    code = stored(store, tar_gz([file_member("train.py"), member]))

    with pytest.raises(CodeArchiveError) as caught:
        unpack_code(code, store, str(tmp_path / "cache"))

    assert f"member {member[0].name!r} {problem}" in str(caught.value)
    assert os.listdir(tmp_path / "cache") == []
    assert not (tmp_path / "evil.py").exists()


def test_unpack_code_refuses_an_archive_that_is_not_a_tar_gz(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    code = stored(store, b"not an archive")

    with pytest.raises(CodeArchiveError, match="cannot be extracted"):
        unpack_code(code, store, str(tmp_path / "cache"))


# ------------------------------------------------------------------ code roots


def test_default_code_root_of_a_script_is_its_directory() -> None:
    training = import_reference(f"{EXAMPLES}/quickstart.py:training")

    assert default_code_root(training.fn.__module__) == str(EXAMPLES)


def test_default_code_root_of_a_package_module_is_above_its_top_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(
        tmp_path, {"shop/__init__.py": "", "shop/flows/__init__.py": "", "shop/flows/a.py": ""}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import_reference("shop.flows.a:__name__")

    assert default_code_root("shop.flows.a") == str(tmp_path.resolve())


def test_default_code_root_refuses_installed_code() -> None:
    with pytest.raises(CodeArchiveError, match=r"'yaml\.constructor' is installed in"):
        default_code_root("yaml.constructor")
