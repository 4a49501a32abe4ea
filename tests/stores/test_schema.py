"""Migrations: they build exactly the models' schema, once, whoever opens the store first."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from kstep.stores.metadata import MetadataStore
from kstep.stores.metadata.models import SCHEMA_REVISION, Base
from kstep.stores.metadata.schema import MIGRATIONS
from stores.schema_checks import schema_differences


def test_schema_revision_is_the_head_of_the_migrations() -> None:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)

    heads = ScriptDirectory.from_config(config).get_heads()

    assert heads == [SCHEMA_REVISION]


def test_schema_migrations_build_exactly_the_models(sqlite_store: MetadataStore) -> None:
    assert schema_differences(sqlite_store.engine) == []


def test_schema_migrations_create_every_table_of_the_models(sqlite_store: MetadataStore) -> None:
    tables = set(inspect(sqlite_store.engine).get_table_names())

    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_schema_is_migrated_once_when_stores_open_at_the_same_time(sqlite_url: str) -> None:
    opened: list[MetadataStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(MetadataStore.open(sqlite_url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    assert versions == [(SCHEMA_REVISION,)]
    for store in opened:
        store.close()


def test_schema_of_an_existing_store_is_left_as_it_is(sqlite_url: str, tmp_path: Path) -> None:
    first = MetadataStore.open(sqlite_url)
    first.log_metadata("run", "r1", {"kept": True})
    first.close()

    second = MetadataStore.open(sqlite_url)

    assert second.metadata_of("run", "r1") == {"kept": True}
    second.close()
