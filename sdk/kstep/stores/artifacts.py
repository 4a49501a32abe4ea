"""Artifact stores: where artifact versions' files and step logs live.

Layout under the root: `artifacts/<artifact name>/<version id>/...` and
`logs/<run id>/<step run id>.log`. A version is written completely before its metadata row
exists, and only that row makes it visible, so no reader ever sees a half-written artifact:
locally the files are written to a staging directory and renamed into place; on S3 each
object is uploaded whole before the row is inserted. On S3, a version of a few bytes (most
step outputs: a number, a short list, a small dict) is kept in its URI instead, a `data:` URI
in the row itself: an upload costs more than such a step, and the row is committed with the
step's outcome, so the version is exactly as durable as its record.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from kstep._errors import ArtifactLoadError, ArtifactPathError, StoreError

if TYPE_CHECKING:
    from kstep._settings import Settings

logger = logging.getLogger(__name__)

# Files up to this size move to and from S3 in one request; larger ones in parallel parts.
SINGLE_REQUEST_BYTES = 8 * 1024 * 1024


# A version whose files come to at most this many bytes is kept in its URI on S3.
INLINE_VERSION_BYTES = 2048
_INLINE_PREFIX = "data:application/vnd.kstep.version+json;base64,"


def inline_version_uri(files: dict[str, bytes]) -> str:
    """A `data:` URI that holds a small version's files themselves."""
    document = {path: base64.b64encode(data).decode("ascii") for path, data in files.items()}
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return _INLINE_PREFIX + base64.b64encode(payload).decode("ascii")


def is_inline(uri: str) -> bool:
    """Whether `uri` holds its version's files itself (see `inline_version_uri`)."""
    return uri.startswith("data:")


def describe_uri(uri: str) -> str:
    """`uri` as messages show it: a version kept in its URI is summed up, not printed."""
    if is_inline(uri):
        return f"data:... (a version kept in its metadata row, {len(uri)} characters)"
    return uri


def inline_version_files(uri: str) -> dict[str, bytes]:
    """The files an inline version's URI holds, by relative path.

    Raises:
        ArtifactLoadError: `uri` is not a URI `inline_version_uri` made, or it is damaged.
    """
    if not uri.startswith(_INLINE_PREFIX):
        raise ArtifactLoadError(
            f"{describe_uri(uri)} is not a version kept in its URI; such URIs begin with "
            f"{_INLINE_PREFIX!r}"
        )
    try:
        document = json.loads(base64.b64decode(uri[len(_INLINE_PREFIX) :], validate=True))
        return {str(path): base64.b64decode(data, validate=True) for path, data in document.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise ArtifactLoadError(f"the version {describe_uri(uri)} is damaged: {error}") from None


def refuse_writes(mode: str, uri: str) -> None:
    """Raise if `mode` would write to a file of the committed version at `uri`."""
    if any(flag in mode for flag in "wax+"):
        raise ArtifactPathError(f"artifact {describe_uri(uri)} is committed and cannot be written")


def check_relative(relative_path: str, uri: str) -> str:
    """Return `relative_path` normalized, refusing anything outside the artifact's location."""
    normalized = posixpath.normpath(relative_path.replace(os.sep, "/"))
    if (
        not relative_path
        or posixpath.isabs(normalized)
        or normalized == ".."
        or normalized.startswith("../")
        or normalized == "."
    ):
        raise ArtifactPathError(
            f"path {relative_path!r} is outside the artifact's location {uri}; materializers "
            "may only use relative paths inside it, such as 'data.json' or 'parts/0.bin'"
        )
    return normalized


class ArtifactStore(ABC):
    """Stores artifact versions' files and step logs under one root."""

    root: str

    @abstractmethod
    def version_uri(self, artifact_name: str, version_id: str) -> str:
        """The URI an artifact version's files live under once committed."""

    @abstractmethod
    def stage(self, artifact_name: str, version_id: str) -> StagedVersion:
        """A writable location for a new version; nothing is visible until `commit()`."""

    @abstractmethod
    def location(self, uri: str) -> ReadLocation:
        """A readable location for a committed version."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether a committed version's files are still present."""

    @abstractmethod
    def log_uri(self, run_id: str, name: str) -> str:
        """Where the log of a step run (or an orchestrator) of a run is kept."""

    @abstractmethod
    def open_log(self, uri: str) -> LogWriter:
        """A writer that appends to a log while its step runs."""

    @abstractmethod
    def read_log(self, uri: str) -> str:
        """The whole log written so far ('' when nothing was written)."""

    @abstractmethod
    def put_object(self, key: str, data: bytes) -> str:
        """Store `data` at `key` under the root (written whole); return its URI."""

    @abstractmethod
    def get_object(self, uri: str) -> bytes:
        """Read back an object stored with `put_object`."""

    def object_uri(self, key: str) -> str:
        """The URI `put_object(key, ...)` stores an object at."""
        raise NotImplementedError(f"{type(self).__name__} cannot name objects before storing them")

    def has_object(self, uri: str) -> bool:
        """Whether an object stored with `put_object` exists at `uri`."""
        try:
            self.get_object(uri)
        except ArtifactLoadError:
            return False
        return True


class StagedVersion(ABC):
    """A new artifact version being written."""

    uri: str

    @abstractmethod
    def open(self, relative_path: str, mode: str = "wb") -> IO[Any]:
        """Open a file of the new version."""

    @abstractmethod
    def local_path(self, relative_path: str) -> str:
        """A local path to write a file of the new version to."""

    @abstractmethod
    def exists(self, relative_path: str) -> bool:
        """Whether a file of the new version was written."""

    @abstractmethod
    def commit(self) -> str:
        """Make the files final at `uri` and return it."""

    @abstractmethod
    def discard(self) -> None:
        """Drop everything written so far."""


class ReadLocation(ABC):
    """A committed artifact version, read-only."""

    uri: str

    def open(self, relative_path: str, mode: str = "rb") -> IO[Any]:
        """Open a file of the version for reading."""
        refuse_writes(mode, self.uri)
        return open(self.local_path(relative_path), mode)

    @abstractmethod
    def local_path(self, relative_path: str) -> str:
        """A local path to a file of the version."""

    @abstractmethod
    def exists(self, relative_path: str) -> bool:
        """Whether the version has that file."""


class LogWriter(ABC):
    """Appends text to one log while its step runs."""

    @abstractmethod
    def write(self, text: str) -> None:
        """Append text."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close; later writes are dropped."""


# ---------------------------------------------------------------- local directory


class LocalArtifactStore(ArtifactStore):
    """An artifact store in a local directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        os.makedirs(self.root, exist_ok=True)

    def version_uri(self, artifact_name: str, version_id: str) -> str:
        return os.path.join(self.root, "artifacts", artifact_name, version_id)

    def stage(self, artifact_name: str, version_id: str) -> StagedVersion:
        final = self.version_uri(artifact_name, version_id)
        staging = os.path.join(self.root, "artifacts", artifact_name, ".staging", version_id)
        try:
            # The staging folder of an artifact exists after its first version; one mkdir
            # then does, where makedirs would first look at every parent.
            os.mkdir(staging)
        except FileNotFoundError:
            os.makedirs(staging, exist_ok=True)
        return _LocalStaged(final, staging)

    def location(self, uri: str) -> ReadLocation:
        return _LocalRead(uri)

    def exists(self, uri: str) -> bool:
        return os.path.isdir(uri)

    def log_uri(self, run_id: str, name: str) -> str:
        return os.path.join(self.root, "logs", run_id, f"{name}.log")

    def open_log(self, uri: str) -> LogWriter:
        return _LocalLog(uri)

    def read_log(self, uri: str) -> str:
        try:
            with open(uri, encoding="utf-8", errors="replace") as file:
                return file.read()
        except FileNotFoundError:
            return ""

    def object_uri(self, key: str) -> str:
        return os.path.join(self.root, check_relative(key, self.root))

    def has_object(self, uri: str) -> bool:
        return os.path.isfile(uri)

    def put_object(self, key: str, data: bytes) -> str:
        path = self.object_uri(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".put-")
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
        return path

    def get_object(self, uri: str) -> bytes:
        try:
            with open(uri, "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise ArtifactLoadError(f"object {uri} does not exist in the artifact store") from None


class _LocalPaths:
    base: str
    uri: str

    def _path(self, relative_path: str) -> str:
        return os.path.join(self.base, check_relative(relative_path, self.uri))

    def local_path(self, relative_path: str) -> str:
        return self._path(relative_path)

    def exists(self, relative_path: str) -> bool:
        return os.path.exists(self._path(relative_path))


class _LocalStaged(_LocalPaths, StagedVersion):
    def __init__(self, uri: str, staging: str) -> None:
        self.uri = uri
        self.base = staging

    def open(self, relative_path: str, mode: str = "wb") -> IO[Any]:
        relative = check_relative(relative_path, self.uri)
        path = os.path.join(self.base, relative)
        if "/" in relative:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, mode)

    def local_path(self, relative_path: str) -> str:
        path = self._path(relative_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def commit(self) -> str:
        # One rename publishes every file of the version at once.
        os.rename(self.base, self.uri)
        return self.uri

    def discard(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class _LocalRead(_LocalPaths, ReadLocation):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.base = uri

    def open(self, relative_path: str, mode: str = "rb") -> IO[Any]:
        refuse_writes(mode, self.uri)
        try:
            return open(self._path(relative_path), mode)
        except FileNotFoundError:
            raise ArtifactLoadError(
                f"artifact file {relative_path!r} is missing from {self.uri}"
            ) from None


class _LocalLog(LogWriter):
    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def write(self, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            if self._file is None:
                # Created on the first write: steps that print nothing cost no file.
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()


# ---------------------------------------------------------------- S3


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into bucket and key."""
    if not uri.startswith("s3://"):
        raise StoreError(f"{uri!r} is not an S3 URI; expected s3://bucket/prefix")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StoreError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
    return bucket, key.strip("/")


class S3ArtifactStore(ArtifactStore):
    """An artifact store in an S3 bucket (AWS or any S3-compatible server), through boto3.

    Credentials come from boto3's usual chain (environment, config files, instance role).
    Files are staged in a local directory and uploaded on commit; reads download each file
    once into a local cache so path-based libraries and memory-mapping work. A committed
    version's small files move into that cache too: a version never changes once committed,
    and the next step in the same pod (an orchestrator's or a worker's inline chain) then
    reads its input without a request to the server.
    """

    def __init__(
        self,
        root: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        cache_dir: str | None = None,
        log_flush_seconds: float = 2.0,
        inline_bytes: int = INLINE_VERSION_BYTES,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.root = root.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(self.root)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        # botocore asks for `Expect: 100-continue` on every PutObject: the server must answer
        # before the body is sent, one more round trip per request. That pays off for large
        # bodies a server may refuse; this store's single PUTs are small (see
        # SINGLE_REQUEST_BYTES), and most are a few bytes, for which it doubles the latency.
        self.client.meta.events.register("before-sign.s3.PutObject", _send_without_expect)
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="kstep-s3-cache-")
        # Staging directories are made inside it, and a fresh pod has none of its home yet.
        os.makedirs(self.cache_dir, exist_ok=True)
        self.log_flush_seconds = log_flush_seconds
        # Versions up to this size are kept in their URI; 0 puts every version in S3.
        self.inline_bytes = inline_bytes

    def key(self, *parts: str) -> str:
        """The object key of a path under the root."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri_of(self, key: str) -> str:
        """The `s3://` URI of an object key."""
        return f"s3://{self.bucket}/{key}"

    def version_uri(self, artifact_name: str, version_id: str) -> str:
        return self.uri_of(self.key("artifacts", artifact_name, version_id))

    def stage(self, artifact_name: str, version_id: str) -> StagedVersion:
        return _S3Staged(self, self.version_uri(artifact_name, version_id))

    def location(self, uri: str) -> ReadLocation:
        if is_inline(uri):
            return _InlineRead(uri, self.inline_path(uri))
        return _S3Read(self, uri)

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        if is_inline(uri):
            return uri.startswith(_INLINE_PREFIX)
        bucket, key = parse_s3_uri(uri)
        try:
            answer = self.client.list_objects_v2(Bucket=bucket, Prefix=key + "/", MaxKeys=1)
        except ClientError as error:
            # A bucket that is gone (or no longer ours) holds nothing we can read.
            if error.response.get("Error", {}).get("Code") in ("NoSuchBucket", "AccessDenied"):
                return False
            raise
        return bool(answer.get("KeyCount", 0))

    def log_uri(self, run_id: str, name: str) -> str:
        return self.uri_of(self.key("logs", run_id, f"{name}.log"))

    def open_log(self, uri: str) -> LogWriter:
        return _S3Log(self, uri)

    def read_log(self, uri: str) -> str:
        bucket, key = parse_s3_uri(uri)
        parts: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key + "/"):
            parts.extend(item["Key"] for item in page.get("Contents", []))
        chunks = [
            self.client.get_object(Bucket=bucket, Key=part)["Body"].read() for part in sorted(parts)
        ]
        return b"".join(chunks).decode("utf-8", errors="replace")

    def object_uri(self, key: str) -> str:
        return self.uri_of(self.key(check_relative(key, self.root)))

    def has_object(self, uri: str) -> bool:
        bucket, key = parse_s3_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def put_object(self, key: str, data: bytes) -> str:
        object_key = self.key(check_relative(key, self.root))
        self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)
        return self.uri_of(object_key)

    def get_object(self, uri: str) -> bytes:
        bucket, key = parse_s3_uri(uri)
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            raise ArtifactLoadError(f"object {uri} does not exist in the artifact store") from None

    def inline_path(self, uri: str) -> str:
        """The local folder an inline version's files are written out to when read."""
        return os.path.join(self.cache_dir, "inline", hashlib.sha256(uri.encode()).hexdigest())

    def cached_path(self, uri: str, relative_path: str) -> str:
        """Where one file of a version is kept in the local cache."""
        bucket, key = parse_s3_uri(uri)
        return os.path.join(self.cache_dir, bucket, key, check_relative(relative_path, uri))

    def download(self, uri: str, relative_path: str) -> str:
        """Download one file of a version into the local cache (once) and return its path."""
        path = self.cached_path(uri, relative_path)
        if os.path.exists(path):
            return path
        bucket, key = parse_s3_uri(uri)
        relative = check_relative(relative_path, uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.part-{threading.get_ident()}"
        try:
            self._download(bucket, f"{key}/{relative}", temporary)
        except Exception as error:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise ArtifactLoadError(
                f"artifact file {relative_path!r} could not be read from {uri}: {error}"
            ) from None
        os.replace(temporary, path)
        return path

    def _download(self, bucket: str, key: str, target: str) -> None:
        # Most artifact files are small: one GET costs a fraction of the transfer manager's
        # set-up (a thread pool per call). Large ones go through it, in parallel parts.
        answer = self.client.get_object(Bucket=bucket, Key=key)
        if answer.get("ContentLength", 0) > SINGLE_REQUEST_BYTES:
            answer["Body"].close()
            self.client.download_file(bucket, key, target)
            return
        with open(target, "wb") as file:
            shutil.copyfileobj(answer["Body"], file)


class _S3Staged(StagedVersion):
    def __init__(self, store: S3ArtifactStore, uri: str) -> None:
        self.store = store
        self.uri = uri
        self.base = tempfile.mkdtemp(prefix="kstep-stage-", dir=store.cache_dir)

    def _path(self, relative_path: str) -> str:
        path = os.path.join(self.base, check_relative(relative_path, self.uri))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def open(self, relative_path: str, mode: str = "wb") -> IO[Any]:
        return open(self._path(relative_path), mode)

    def local_path(self, relative_path: str) -> str:
        return self._path(relative_path)

    def exists(self, relative_path: str) -> bool:
        return os.path.exists(self._path(relative_path))

    def commit(self) -> str:
        sizes = {path: os.path.getsize(path) for path in _walk_files(self.base)}
        if sum(sizes.values()) <= self.store.inline_bytes:
            return self._commit_inline(list(sizes))
        bucket, key = parse_s3_uri(self.uri)
        for path, size in sizes.items():
            relative = os.path.relpath(path, self.base).replace(os.sep, "/")
            if size > SINGLE_REQUEST_BYTES:
                self.store.client.upload_file(path, bucket, f"{key}/{relative}")
                continue
            # One PUT for a small file: see `S3ArtifactStore._download`.
            with open(path, "rb") as file:
                self.store.client.put_object(Bucket=bucket, Key=f"{key}/{relative}", Body=file)
            # Uploaded as is, so it is the version's file: kept where a read looks first.
            # Large files are not kept, to spare the pod's disk; they are read back in parts.
            cached = self.store.cached_path(self.uri, relative)
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            os.replace(path, cached)
        shutil.rmtree(self.base, ignore_errors=True)
        return self.uri

    def _commit_inline(self, paths: list[str]) -> str:
        files: dict[str, bytes] = {}
        for path in paths:
            with open(path, "rb") as file:
                files[os.path.relpath(path, self.base).replace(os.sep, "/")] = file.read()
        uri = inline_version_uri(files)
        # The staged folder holds exactly the version's files: it becomes the folder a read
        # of this URI looks in, unless an equal version got there first.
        target = self.store.inline_path(uri)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with contextlib.suppress(OSError):
            os.rename(self.base, target)
        shutil.rmtree(self.base, ignore_errors=True)
        return uri

    def discard(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class _InlineRead(ReadLocation):
    """A version kept in its URI; each file is written out to a local folder when first read."""

    def __init__(self, uri: str, folder: str) -> None:
        self.uri = uri
        self._files = inline_version_files(uri)
        self._folder = folder

    def local_path(self, relative_path: str) -> str:
        relative = check_relative(relative_path, describe_uri(self.uri))
        if relative not in self._files:
            raise ArtifactLoadError(
                f"artifact file {relative_path!r} is not in {describe_uri(self.uri)}; its "
                f"files are {sorted(self._files)}"
            )
        path = os.path.join(self._folder, relative)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.part-{threading.get_ident()}"
            with open(temporary, "wb") as file:
                file.write(self._files[relative])
            os.replace(temporary, path)
        return path

    def exists(self, relative_path: str) -> bool:
        return check_relative(relative_path, describe_uri(self.uri)) in self._files


def _send_without_expect(request: Any, **_: Any) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _walk_files(base: str) -> Iterator[str]:
    for directory, _, files in os.walk(base):
        for name in sorted(files):
            yield os.path.join(directory, name)


class _S3Read(ReadLocation):
    def __init__(self, store: S3ArtifactStore, uri: str) -> None:
        self.store = store
        self.uri = uri

    def local_path(self, relative_path: str) -> str:
        return self.store.download(self.uri, relative_path)

    def exists(self, relative_path: str) -> bool:
        bucket, key = parse_s3_uri(self.uri)
        relative = check_relative(relative_path, self.uri)
        answer = self.store.client.list_objects_v2(
            Bucket=bucket, Prefix=f"{key}/{relative}", MaxKeys=1
        )
        return bool(answer.get("KeyCount", 0))


class _S3Log(LogWriter):
    """Buffers log text and uploads it as numbered part objects while the step runs.

    S3 has no append: each flush writes a new part (`<log uri>/<seq>.log`); readers list the
    parts and concatenate them in order.
    """

    def __init__(self, store: S3ArtifactStore, uri: str) -> None:
        self.store = store
        self.bucket, self.key = parse_s3_uri(uri)
        self._buffer: list[str] = []
        self._sequence = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # Started on the first write: steps that print nothing cost no thread.
        self._flusher: threading.Thread | None = None

    def write(self, text: str) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._buffer.append(text)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_periodically, daemon=True)
                self._flusher.start()

    def _flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            data = "".join(self._buffer).encode()
            self._buffer.clear()
            self._sequence += 1
            part = f"{self.key}/{self._sequence:08d}.log"
        try:
            self.store.client.put_object(Bucket=self.bucket, Key=part, Body=data)
        except Exception:
            logger.warning("Uploading log part %s failed; the text is dropped.", part)

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self.store.log_flush_seconds):
            self._flush()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            flusher = self._flusher
        # A part the flusher is uploading right now must land before the last one, so that
        # a reader listing the parts after the step ended finds them all.
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()
        self._flush()


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """Open the artifact store at `settings.artifact_root` (a directory or `s3://...`)."""
    root = settings.artifact_root
    if root.startswith("s3://"):
        return S3ArtifactStore(
            root,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            cache_dir=os.path.join(settings.home, "cache", "s3"),
        )
    if "://" in root:
        raise StoreError(
            f"artifact root {root!r} is not supported; use a local directory or s3://bucket/prefix"
        )
    return LocalArtifactStore(root)
