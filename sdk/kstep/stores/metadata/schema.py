"""Creating and migrating the metadata store's schema with Alembic.

Opening a store costs one query when the schema is current. Otherwise Alembic upgrades it,
under a lock (a file lock for SQLite, an advisory lock for Postgres) so that processes
starting at once do not migrate twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from kstep._errors import StoreError
from kstep.stores.metadata.models import SCHEMA_REVISION

logger = logging.getLogger(__name__)

MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations")
_ADVISORY_LOCK_ID = 0x6B73746570  # "kstep"


def current_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at, or None for an empty database."""
    try:
        with connection.begin_nested() if connection.in_transaction() else contextlib.nullcontext():
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


def ensure_schema(engine: Engine) -> None:
    """Bring the database to `SCHEMA_REVISION`, migrating if it is behind."""
    try:
        with engine.connect() as connection:
            revision = current_revision(connection)
            connection.rollback()
        if revision == SCHEMA_REVISION:
            return
        with _migration_lock(engine):
            upgrade(engine)
    except SQLAlchemyError as error:
        raise StoreError(
            f"metadata store {engine.url!r} is unreachable or unusable: {error}"
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to `revision`."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.connect() as connection:
        # On SQLite the flag makes the transaction begin with the write lock (BEGIN
        # IMMEDIATE); it must be set before the transaction begins, and cleared before the
        # connection goes back to the pool, where readers would otherwise take that lock.
        connection.info["kstep_write"] = engine.dialect.name == "sqlite"
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                logger.debug("Migrating the metadata store %s to %s.", engine.url, revision)
                command.upgrade(config, revision)
        finally:
            connection.info["kstep_write"] = False


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        import fcntl

        database = engine.url.database or ""
        with open(f"{database}.migrate-lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
            connection.commit()
