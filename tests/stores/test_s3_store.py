"""The artifact store on a real S3-compatible server, and a whole run on Postgres and S3."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine import steps_isolated
from kstep import Client, pipeline, step
from kstep._errors import ArtifactLoadError
from kstep.materializers import BytesMaterializer, JsonMaterializer
from kstep.materializers._numpy import NumpyMaterializer
from kstep.materializers._pandas import PandasMaterializer
from kstep.stores.artifacts import INLINE_VERSION_BYTES, S3ArtifactStore

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_credentials(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test bucket's credentials in boto3's environment variables; its endpoint is not."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return s3


@pytest.fixture
def s3_store(s3_credentials: Any, tmp_path: Path) -> Iterator[S3ArtifactStore]:
    # Every version as S3 objects, however small: versions kept in their URI have their own
    # tests (`inline_store`).
    yield S3ArtifactStore(
        f"s3://{s3_credentials.bucket}/kstep",
        endpoint_url=s3_credentials.endpoint_url,
        region=s3_credentials.region,
        cache_dir=str(tmp_path / "cache"),
        log_flush_seconds=0.2,
        inline_bytes=0,
    )


def inline_store(s3_credentials: Any, cache_dir: Path) -> S3ArtifactStore:
    """A store with the default size up to which a version is kept in its URI."""
    return S3ArtifactStore(
        f"s3://{s3_credentials.bucket}/kstep",
        endpoint_url=s3_credentials.endpoint_url,
        region=s3_credentials.region,
        cache_dir=str(cache_dir),
    )


def requested_keys(store: S3ArtifactStore, operation: str) -> list[str]:
    """The keys of every `operation` request (GetObject, PutObject) the store's client makes
    from now on."""
    keys: list[str] = []
    store.client.meta.events.register(
        f"before-parameter-build.s3.{operation}", lambda params, **_: keys.append(params["Key"])
    )
    return keys


def object_keys(store: S3ArtifactStore, prefix: str) -> list[str]:
    answer = store.client.list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in answer.get("Contents", []))


@pytest.mark.parametrize(
    ("materializer", "value"),
    [
        (JsonMaterializer, {"rows": [1, 2, 3], "name": "iris"}),
        (BytesMaterializer, b"\x00" * 1000),
        (NumpyMaterializer, np.arange(1000, dtype=np.int64).reshape(10, 100)),
        (PandasMaterializer, pd.DataFrame({"a": [1.5, 2.5], "b": ["x", "y"]})),
    ],
)
def test_s3_store_saves_and_loads_through_materializers(
    s3_store: S3ArtifactStore, materializer: Any, value: Any
) -> None:
    staged = s3_store.stage("thing", "v1")
    materializer(staged).save(value)

    before = s3_store.exists(staged.uri)
    uri = staged.commit()
    loaded = materializer(s3_store.location(uri)).load(type(value))

    assert before is False
    assert s3_store.exists(uri)
    assert uri == f"s3://{s3_store.bucket}/kstep/artifacts/thing/v1"
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    elif isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    else:
        assert loaded == value


def test_s3_store_reads_a_version_it_committed_without_downloading_it(
    s3_credentials: Any, s3_store: S3ArtifactStore, tmp_path: Path
) -> None:
    small = s3_store.stage("small", "v1")
    JsonMaterializer(small).save({"rows": [1, 2, 3]})
    big = s3_store.stage("big", "v1")
    NumpyMaterializer(big).save(np.ones(1_100_000, dtype=np.float64))
    small_uri, big_uri = small.commit(), big.commit()
    other = S3ArtifactStore(
        s3_store.root,
        endpoint_url=s3_credentials.endpoint_url,
        region=s3_credentials.region,
        cache_dir=str(tmp_path / "other-cache"),
    )
    ours, theirs = requested_keys(s3_store, "GetObject"), requested_keys(other, "GetObject")

    loaded_here = JsonMaterializer(s3_store.location(small_uri)).load(dict)
    loaded_elsewhere = JsonMaterializer(other.location(small_uri)).load(dict)
    big_here = NumpyMaterializer(s3_store.location(big_uri)).load(np.ndarray)

    assert loaded_here == loaded_elsewhere == {"rows": [1, 2, 3]}
    assert float(big_here.sum()) == 1_100_000.0
    # The small version came from this store's cache; the 8.8 MB array, over the size kept
    # after an upload, and the other store's copy came from the server.
    assert not [key for key in ours if key.startswith("kstep/artifacts/small/")]
    assert [key for key in ours if key.startswith("kstep/artifacts/big/")]
    assert [key for key in theirs if key.startswith("kstep/artifacts/small/")]


def test_s3_store_puts_a_small_file_without_waiting_for_100_continue(
    s3_store: S3ArtifactStore,
) -> None:
    sent: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(dict(request.headers))

    s3_store.client.meta.events.register("before-send.s3.PutObject", record)
    staged = s3_store.stage("small", "v2")
    JsonMaterializer(staged).save({"rows": [1]})
    uri = staged.commit()

    # One request, body and headers together: no round trip waits for the server's answer.
    assert len(sent) == 1
    assert "Expect" not in sent[0]
    assert JsonMaterializer(s3_store.location(uri)).load(dict) == {"rows": [1]}


@pytest.mark.parametrize(
    ("materializer", "value"),
    [
        (JsonMaterializer, {"rows": [1, 2, 3], "name": "iris"}),
        (BytesMaterializer, b"\x00" * 1000),
        (NumpyMaterializer, np.arange(20, dtype=np.int64)),
    ],
)
def test_s3_store_keeps_a_small_version_in_its_uri_and_reads_it_anywhere(
    s3_credentials: Any, tmp_path: Path, materializer: Any, value: Any
) -> None:
    store = inline_store(s3_credentials, tmp_path / "cache")
    elsewhere = inline_store(s3_credentials, tmp_path / "other-cache")
    puts, gets = requested_keys(store, "PutObject"), requested_keys(elsewhere, "GetObject")
    staged = store.stage("small", "v1")
    materializer(staged).save(value)

    uri = staged.commit()
    here = materializer(store.location(uri)).load(type(value))
    there = materializer(elsewhere.location(uri)).load(type(value))

    assert uri.startswith("data:")
    assert puts == []
    assert gets == []
    assert object_keys(store, "kstep/artifacts/small/") == []
    assert store.exists(uri)
    assert elsewhere.exists(uri)
    for loaded in (here, there):
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded, value)
        else:
            assert loaded == value


def test_s3_store_uploads_a_version_over_the_inline_size(
    s3_credentials: Any, tmp_path: Path
) -> None:
    store = inline_store(s3_credentials, tmp_path / "cache")
    staged = store.stage("larger", "v1")
    BytesMaterializer(staged).save(b"\x01" * (INLINE_VERSION_BYTES + 1))

    uri = staged.commit()

    assert uri == f"s3://{store.bucket}/kstep/artifacts/larger/v1"
    assert object_keys(store, "kstep/artifacts/larger/v1/")
    assert BytesMaterializer(store.location(uri)).load(bytes) == b"\x01" * (
        INLINE_VERSION_BYTES + 1
    )


def test_s3_store_names_a_damaged_inline_version_without_printing_it(
    s3_credentials: Any, tmp_path: Path
) -> None:
    store = inline_store(s3_credentials, tmp_path / "cache")
    staged = store.stage("small", "v2")
    JsonMaterializer(staged).save([1, 2])
    uri = staged.commit()
    damaged = uri[:-8] + "!!!!!!!!"

    with pytest.raises(ArtifactLoadError, match="is damaged") as failure:
        store.location(damaged)
    with pytest.raises(ArtifactLoadError, match=r"'other.json' is not in .* files are"):
        store.location(uri).open("other.json")

    assert "kept in its metadata row" in str(failure.value)
    assert damaged not in str(failure.value)


def test_s3_store_reports_a_missing_file_of_a_version(s3_store: S3ArtifactStore) -> None:
    staged = s3_store.stage("thing", "v1")
    JsonMaterializer(staged).save([1])
    uri = staged.commit()

    with pytest.raises(
        ArtifactLoadError, match=f"artifact file 'other.json' could not be read from {uri}"
    ):
        s3_store.location(uri).open("other.json")


def test_s3_store_writes_logs_in_parts_while_the_step_runs(s3_store: S3ArtifactStore) -> None:
    uri = s3_store.log_uri("run-1", "step-1")
    writer = s3_store.open_log(uri)

    writer.write("first line\n")
    deadline = time.monotonic() + 10
    while s3_store.read_log(uri) == "" and time.monotonic() < deadline:
        time.sleep(0.05)
    while_running = s3_store.read_log(uri)
    writer.write("second line\n")
    writer.close()

    assert while_running == "first line\n"
    assert s3_store.read_log(uri) == "first line\nsecond line\n"
    _, key = uri.split(f"s3://{s3_store.bucket}/")
    assert object_keys(s3_store, key + "/") == [f"{key}/00000001.log", f"{key}/00000002.log"]


@pytest.mark.postgres
def test_s3_and_postgres_run_a_pipeline_end_to_end(
    s3_credentials: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KSTEP_METADATA_URL", postgres_url)
    monkeypatch.setenv("KSTEP_ARTIFACT_ROOT", f"s3://{s3_credentials.bucket}/runs")
    monkeypatch.setenv("KSTEP_S3_ENDPOINT_URL", s3_credentials.endpoint_url)
    monkeypatch.setenv("KSTEP_S3_REGION", s3_credentials.region)
    name = f"cloud_{os.urandom(4).hex()}"

    @step
    def rows(count: int) -> np.ndarray:
        print(f"making {count} rows")
        return np.arange(count)

    @step
    def mean(values: np.ndarray) -> float:
        return float(values.mean())

    @pipeline(name=name)
    def cloud(count: int) -> None:
        values = rows(count)
        mean(values)
        steps_isolated.describe_context(3, after=values)

    # 500 rows are over the size a version is kept in its URI; their mean is under it.
    first = cloud(500)
    second = cloud(500)

    client = Client()
    run = client.get_run(first.id)
    assert run.status == "completed"
    assert run.steps["mean"].outputs["output"].load() == 249.5
    assert run.steps["mean"].outputs["output"].uri.startswith("data:")
    assert run.steps["rows"].outputs["output"].uri.startswith(f"s3://{s3_credentials.bucket}/runs/")
    assert run.steps["rows"].logs() == "making 500 rows\n"
    isolated = run.steps["describe_context"]
    assert isolated.outputs["output"].load()["run_id"] == run.id
    assert "to stdout\n" in isolated.logs()
    assert {s.status for s in second.steps.values()} == {"cached"}
    client.stores.metadata.close()
