"""The metadata store on a real Postgres server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from kstep import Client, pipeline, step
from kstep.stores.metadata import MetadataStore
from kstep.stores.metadata.models import SCHEMA_REVISION
from stores.schema_checks import schema_differences
from stores.writers import record_run, record_step_run, write_versions

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[MetadataStore]:
    store = MetadataStore.open(postgres_url)
    yield store
    store.close()


def unique(prefix: str) -> str:
    """A name no other test on the shared database uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fresh_postgres_url(postgres: Any) -> str:
    """A database of its own: the session's database is shared with other tests' tables."""
    return str(postgres.create_database())


def test_postgres_store_applies_the_migrations_up_to_the_models(fresh_postgres_url: str) -> None:
    store = MetadataStore.open(fresh_postgres_url)
    try:
        with store.engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        differences = schema_differences(store.engine)
    finally:
        store.close()

    assert revision == SCHEMA_REVISION
    assert differences == []


def test_postgres_store_is_migrated_once_when_opened_at_the_same_time(
    fresh_postgres_url: str,
) -> None:
    opened: list[MetadataStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(MetadataStore.open(fresh_postgres_url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with opened[0].engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    for store in opened:
        store.close()
    assert versions == [(SCHEMA_REVISION,)]


def test_postgres_store_numbers_versions_without_gaps_from_threads(
    postgres_store: MetadataStore,
) -> None:
    name = unique("threads")
    results: list[list[int]] = []

    def writer() -> None:
        results.append(write_versions(postgres_store, name, 10))

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(n for result in results for n in result) == list(range(1, 61))


def test_postgres_store_numbers_versions_without_gaps_from_processes(
    postgres_store: MetadataStore, postgres_url: str
) -> None:
    name = unique("processes")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "stores.writers", postgres_url, name, "15"]

    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]

    assert [process.returncode for process in processes] == [0, 0, 0]
    numbers = sorted(n for output in outputs for n in json.loads(output))
    assert numbers == list(range(1, 46))
    assert [v.version for v in postgres_store.list_artifact_versions(name)] == numbers


def test_postgres_store_keeps_timestamps_timezone_aware(postgres_store: MetadataStore) -> None:
    import datetime

    run_id = record_run(postgres_store)
    step_run_id = record_step_run(postgres_store, run_id, "write")
    offset = datetime.timezone(datetime.timedelta(hours=-5))
    finished = datetime.datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=offset)

    with postgres_store.engine.begin() as connection:
        connection.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
    postgres_store.update_step_run(step_run_id, finished_at=finished)
    step_run = postgres_store.get_step_run(step_run_id)

    assert step_run.finished_at == finished
    assert step_run.finished_at.utcoffset() == datetime.timedelta(0)
    with postgres_store.engine.connect() as connection:
        kinds = connection.execute(
            text(
                "SELECT DISTINCT data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND column_name LIKE '%\\_at'"
            )
        ).all()
    assert kinds == [("timestamp with time zone",)]


def test_postgres_store_records_a_pipeline_run(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KSTEP_METADATA_URL", postgres_url)
    name = unique("pg").replace("-", "_")

    @step
    def produce(rows: int) -> list[int]:
        return list(range(rows))

    @step
    def total(values: list[int]) -> int:
        return sum(values)

    @pipeline(name=name)
    def on_postgres(rows: int) -> None:
        total(produce(rows))

    first = on_postgres(4)
    second = on_postgres(4)

    client = Client()
    assert [run.id for run in client.list_runs(pipeline=name)] == [second.id, first.id]
    assert client.get_run(first.name).steps["total"].outputs["output"].load() == 6
    assert [s.status for s in second.steps.values()] == ["cached", "cached"]
    client.stores.metadata.close()
