"""The local artifact store: versions appear whole or not at all; logs append while running."""

from __future__ import annotations

from pathlib import Path

import pytest

from kstep._errors import ArtifactLoadError, StoreError
from kstep._settings import Settings
from kstep.stores.artifacts import (
    LocalArtifactStore,
    S3ArtifactStore,
    open_artifact_store,
    parse_s3_uri,
)


def test_local_store_shows_a_version_only_once_committed(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("model", "v1")
    with staged.open("weights.bin") as file:
        file.write(b"\x01\x02")

    before = store.exists(staged.uri)
    uri = staged.commit()

    assert before is False
    assert store.exists(uri)
    assert uri == str(tmp_path / "artifacts" / "model" / "v1")
    with store.location(uri).open("weights.bin") as file:
        assert file.read() == b"\x01\x02"


def test_local_store_discard_leaves_no_trace(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("model", "v1")
    with staged.open("weights.bin") as file:
        file.write(b"partial")

    staged.discard()

    assert not store.exists(staged.uri)
    assert list((tmp_path / "artifacts" / "model" / ".staging").iterdir()) == []


def test_local_store_reports_a_missing_file_of_a_version(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("model", "v1")
    uri = staged.commit()

    with pytest.raises(ArtifactLoadError) as caught:
        store.location(uri).open("weights.bin")

    assert str(caught.value) == f"artifact file 'weights.bin' is missing from {uri}"


def test_local_store_appends_to_a_log_while_it_is_written(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    uri = store.log_uri("run-1", "step-1")
    writer = store.open_log(uri)

    writer.write("first\n")
    while_running = store.read_log(uri)
    writer.write("second\n")
    writer.close()
    writer.write("after close\n")

    assert while_running == "first\n"
    assert store.read_log(uri) == "first\nsecond\n"
    assert store.read_log(store.log_uri("run-1", "never-written")) == ""


def test_local_store_puts_and_gets_whole_objects(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))

    uri = store.put_object("code/archive.tar", b"bytes")

    assert store.get_object(uri) == b"bytes"
    with pytest.raises(ArtifactLoadError, match="does not exist in the artifact store"):
        store.get_object(str(tmp_path / "code" / "other.tar"))


def test_artifact_store_is_chosen_by_the_root_setting(tmp_path: Path) -> None:
    local = open_artifact_store(Settings(home=str(tmp_path)))
    s3 = open_artifact_store(
        Settings(
            home=str(tmp_path),
            artifact_root="s3://bucket/prefix",
            s3_endpoint_url="http://127.0.0.1:1",
            s3_region="us-east-1",
        )
    )

    assert isinstance(local, LocalArtifactStore) and local.root == str(tmp_path)
    assert isinstance(s3, S3ArtifactStore)
    assert s3.version_uri("model", "v1") == "s3://bucket/prefix/artifacts/model/v1"


def test_artifact_store_refuses_an_unknown_root_scheme(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        open_artifact_store(Settings(home=str(tmp_path), artifact_root="gs://bucket/x"))

    assert str(caught.value) == (
        "artifact root 'gs://bucket/x' is not supported; use a local directory or "
        "s3://bucket/prefix"
    )


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/a/b/", ("bucket", "a/b")),
    ],
)
def test_s3_uri_is_split_into_bucket_and_key(uri: str, parts: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == parts


@pytest.mark.parametrize("uri", ["s3:///key", "http://bucket/key"])
def test_s3_uri_without_a_bucket_is_refused(uri: str) -> None:
    with pytest.raises(StoreError, match="expected s3://bucket/prefix"):
        parse_s3_uri(uri)
