"""The SQLite metadata store: concurrent writers, version numbers, timestamps, lookups."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, StatementError

from kstep._errors import NotFoundError, StoreError
from kstep.stores.metadata import MetadataStore, StepRunRecord
from kstep.stores.metadata.store import new_id
from stores.writers import new_version, record_run, record_step_run, write_versions


def test_sqlite_store_numbers_versions_without_gaps_under_concurrent_writers(
    sqlite_store: MetadataStore,
) -> None:
    results: list[list[int]] = []

    def writer() -> None:
        results.append(write_versions(sqlite_store, "shared", 10))

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    numbers = sorted(number for result in results for number in result)
    assert numbers == list(range(1, 61))
    assert all(result == sorted(result) for result in results)
    stored = sqlite_store.list_artifact_versions("shared")
    assert [version.version for version in stored] == list(range(1, 61))


def test_sqlite_store_numbers_each_artifact_on_its_own(sqlite_store: MetadataStore) -> None:
    assert write_versions(sqlite_store, "model", 2) == [1, 2]
    assert write_versions(sqlite_store, "dataset", 1) == [1]
    assert write_versions(sqlite_store, "model", 1) == [3]


def test_sqlite_store_returns_timezone_aware_utc_timestamps(sqlite_store: MetadataStore) -> None:
    run_id = record_run(sqlite_store)
    step_run_id = record_step_run(sqlite_store, run_id, "write")
    finished = datetime.datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )

    sqlite_store.update_step_run(step_run_id, finished_at=finished)
    step_run = sqlite_store.get_step_run(step_run_id)

    assert step_run.finished_at == finished
    assert step_run.finished_at.tzinfo == datetime.UTC
    assert step_run.created_at.tzinfo == datetime.UTC


def test_sqlite_store_refuses_naive_timestamps(sqlite_store: MetadataStore) -> None:
    run_id = record_run(sqlite_store)

    with pytest.raises(StatementError, match="has no timezone; kstep stores UTC times"):
        sqlite_store.update_run(run_id, finished_at=datetime.datetime(2030, 1, 1))


def test_sqlite_store_finishes_a_step_run_with_all_its_rows_at_once(
    sqlite_store: MetadataStore,
) -> None:
    run_id = record_run(sqlite_store)
    step_run_id = record_step_run(sqlite_store, run_id, "write")
    version = new_version("model")
    version.metadata = {"rows": 3}

    records = sqlite_store.finish_step_run(
        step_run_id, status="completed", outputs=[version], metadata={"accuracy": 0.9}
    )

    assert sqlite_store.get_step_run(step_run_id).status == "completed"
    assert sqlite_store.outputs_of(step_run_id) == {"output": records[0]}
    assert sqlite_store.metadata_of("artifact_version", version.id) == {"rows": 3}
    assert sqlite_store.metadata_of("step_run", step_run_id) == {"accuracy": 0.9}
    assert records[0].producer_step_run_id == step_run_id


def test_sqlite_store_keeps_the_last_value_of_a_metadata_key(sqlite_store: MetadataStore) -> None:
    sqlite_store.log_metadata("run", "r1", {"loss": 0.5, "epochs": 1})
    sqlite_store.log_metadata("run", "r1", {"loss": 0.25})

    assert sqlite_store.metadata_of("run", "r1") == {"epochs": 1, "loss": 0.25}


def test_sqlite_store_rolls_back_a_step_run_whose_outputs_cannot_be_stored(
    sqlite_store: MetadataStore,
) -> None:
    run_id = record_run(sqlite_store)
    step_run_id = record_step_run(sqlite_store, run_id, "write")
    duplicate = new_version("model")

    with pytest.raises(IntegrityError):
        sqlite_store.finish_step_run(
            step_run_id, status="completed", outputs=[duplicate, duplicate]
        )

    assert sqlite_store.get_step_run(step_run_id).status == "running"
    assert sqlite_store.list_artifact_versions() == []


def test_sqlite_store_raises_not_found_with_the_missing_id(sqlite_store: MetadataStore) -> None:
    with pytest.raises(NotFoundError) as step_run:
        sqlite_store.get_step_run("missing")
    with pytest.raises(NotFoundError) as version:
        sqlite_store.get_artifact_version("gone")

    assert str(step_run.value) == "no step run has the id 'missing'"
    assert str(version.value) == "no artifact version has the id 'gone'"


def test_sqlite_store_lists_step_runs_of_a_run_in_creation_order(
    sqlite_store: MetadataStore,
) -> None:
    run_id = record_run(sqlite_store)
    ids = [record_step_run(sqlite_store, run_id, f"step_{index}") for index in range(3)]
    sqlite_store.record_step_run(
        StepRunRecord(
            id=new_id(),
            run_id=run_id,
            invocation_id="step_3",
            step_name="write",
            attempt=1,
            status="skipped",
            runtime="inline",
        )
    )

    step_runs = sqlite_store.step_runs_of(run_id)

    assert [s.id for s in step_runs[:3]] == ids
    assert [s.status for s in step_runs] == ["running", "running", "running", "skipped"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "sqlite://",
            "metadata store URL 'sqlite://' names no database file; kstep needs a file (several "
            "processes share it), for example sqlite:////home/me/.kstep/kstep.db",
        ),
        (
            "sqlite:///:memory:",
            "metadata store URL 'sqlite:///:memory:' names no database file; kstep needs a file "
            "(several processes share it), for example sqlite:////home/me/.kstep/kstep.db",
        ),
    ],
)
def test_sqlite_store_refuses_a_url_without_a_file(url: str, message: str) -> None:
    with pytest.raises(StoreError) as caught:
        MetadataStore.open(url)

    assert str(caught.value) == message


def test_metadata_store_refuses_an_unknown_url_scheme() -> None:
    with pytest.raises(StoreError) as caught:
        MetadataStore.open("mongodb://localhost/kstep")

    assert str(caught.value).startswith("metadata store URL 'mongodb://localhost/kstep' cannot be")
    assert str(caught.value).endswith(
        "expected sqlite:///path or postgresql+psycopg://user:password@host/database"
    )


def test_sqlite_store_creates_the_directory_of_its_file(tmp_path: Path) -> None:
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'deep' / 'er' / 'kstep.db'}")

    assert (tmp_path / "deep" / "er" / "kstep.db").exists()
    store.close()
