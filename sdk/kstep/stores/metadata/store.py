"""`MetadataStore`: every read and write of run metadata, on SQLite or Postgres.

Hot paths use SQLAlchemy Core statements on the models' tables: one transaction when a step
run starts and one when it ends. On SQLite, writers take the database lock up front
(`BEGIN IMMEDIATE`) so concurrent writers queue instead of failing, and threads of one
process queue on an in-process lock first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from kstep._errors import NotFoundError, StoreError
from kstep._interrupts import interrupts_deferred
from kstep.stores.metadata import models
from kstep.stores.metadata.records import (
    ArtifactVersionRecord,
    InputEdge,
    NewArtifactVersion,
    RunRecord,
    StepRunRecord,
    utcnow,
)

logger = logging.getLogger(__name__)

_tables = models.Base.metadata.tables
runs_t = _tables["pipeline_runs"]
steps_t = _tables["step_runs"]
pipelines_t = _tables["pipelines"]
artifacts_t = _tables["artifacts"]
versions_t = _tables["artifact_versions"]
inputs_t = _tables["step_run_inputs"]
outputs_t = _tables["step_run_outputs"]
metadata_t = _tables["metadata_entries"]

_RUN_FIELDS = [f.name for f in dataclasses.fields(RunRecord)]
_STEP_FIELDS = [f.name for f in dataclasses.fields(StepRunRecord)]
_VERSION_COLUMNS = [
    versions_t.c.id,
    artifacts_t.c.name,
    versions_t.c.version,
    versions_t.c.uri,
    versions_t.c.materializer,
    versions_t.c.materializer_version,
    versions_t.c.data_type,
    versions_t.c.content_hash,
    versions_t.c.producer_step_run_id,
    versions_t.c.created_at,
]
_versions_joined = versions_t.join(artifacts_t, versions_t.c.artifact_id == artifacts_t.c.id)

# Statements of the per-step hot path, built once: building a statement costs more than
# SQLAlchemy's cached execution of it. Updates take their SET columns from the parameters.
_INSERT_STEP_RUN = insert(steps_t)
_INSERT_INPUTS = insert(inputs_t)
_INSERT_OUTPUTS = insert(outputs_t)
_INSERT_VERSION = insert(versions_t)
_INSERT_METADATA = insert(metadata_t)
_UPDATE_STEP_RUN = update(steps_t).where(steps_t.c.id == bindparam("step_run_id_"))
_INSERT_RUN = insert(runs_t)


def _cache_hit_query(since: bool) -> Any:
    # One statement for the newest completed step run under a cache key and its outputs
    # (none for a step without outputs, hence the outer join).
    newest = (
        select(steps_t.c.id)
        .where(steps_t.c.cache_key == bindparam("cache_key"), steps_t.c.status == "completed")
        .order_by(steps_t.c.finished_at.desc())
        .limit(1)
    )
    if since:
        newest = newest.where(steps_t.c.finished_at >= bindparam("not_before"))
    # Flat outer joins: SQLite would materialize a parenthesized inner join over every output.
    produced = (
        steps_t.outerjoin(outputs_t, outputs_t.c.step_run_id == steps_t.c.id)
        .outerjoin(versions_t, outputs_t.c.artifact_version_id == versions_t.c.id)
        .outerjoin(artifacts_t, versions_t.c.artifact_id == artifacts_t.c.id)
    )
    return (
        select(*[steps_t.c[name] for name in _STEP_FIELDS], outputs_t.c.name, *_VERSION_COLUMNS)
        .select_from(produced)
        .where(steps_t.c.id == newest.scalar_subquery())
    )


_CACHE_HIT = _cache_hit_query(since=False)
_CACHE_HIT_SINCE = _cache_hit_query(since=True)
_UPDATE_RUN = update(runs_t).where(runs_t.c.id == bindparam("run_id_"))
_SELECT_RUN = select(runs_t).where(
    (runs_t.c.id == bindparam("id_or_name")) | (runs_t.c.name == bindparam("id_or_name"))
)


def new_id() -> str:
    """A fresh id for a row."""
    return uuid.uuid4().hex


class MetadataStore:
    """Reads and writes runs, step runs, artifact versions, lineage and metadata."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = engine.url
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._pipeline_ids: dict[str, str] = {}
        self._compiled: dict[tuple[int, tuple[str, ...]], tuple[str, list[Any]]] = {}

        # On SQLite, connections wait for the next transaction in this free list: checking
        # one out of the pool and back costs more than a step's small write itself. It holds
        # at most as many connections as transactions ever ran at once.
        self._idle: list[Connection] = []

        # Dialect-specific upserts, built once for the same reason as the statements above.
        upsert = self._dialect_insert(metadata_t)
        self._upsert_metadata_statement = upsert.on_conflict_do_update(
            index_elements=["entity_type", "entity_id", "key"],
            set_={"value": upsert.excluded.value, "created_at": upsert.excluded.created_at},
        )
        self._next_version = (
            self._dialect_insert(artifacts_t)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"latest_version": artifacts_t.c.latest_version + 1},
            )
            .returning(artifacts_t.c.id, artifacts_t.c.latest_version)
        )

    @classmethod
    def open(cls, url: str) -> MetadataStore:
        """Connect to the store at `url`, creating and migrating its schema if needed."""
        from kstep.stores.metadata.schema import ensure_schema

        engine = make_engine(url)
        ensure_schema(engine)
        return cls(engine)

    def close(self) -> None:
        """Release the store's connections (the store opens new ones if used again)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        self.engine.dispose()

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        if not self.is_sqlite:
            with self.engine.connect() as connection:
                yield connection
            return
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self.engine.connect()
        try:
            yield connection
        except BaseException:
            # After a failure the connection goes back to the pool, which resets it.
            connection.close()
            raise
        if connection.in_transaction() or connection.invalidated:
            connection.close()
        else:
            self._idle.append(connection)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction (the SQLite write lock is taken when it begins)."""
        lock = self._write_lock or contextlib.nullcontext()
        with interrupts_deferred(), lock, self._connection() as connection:
            connection.info["kstep_write"] = True
            try:
                with connection.begin():
                    yield connection
            except OperationalError as error:
                raise StoreError(f"metadata store {self.url!r} failed a write: {error}") from error
            finally:
                connection.info["kstep_write"] = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction."""
        with self._connection() as connection, connection.begin():
            yield connection

    # ------------------------------------------------------------ runs

    def create_run(self, run: RunRecord) -> None:
        """Insert a new run row (and its pipeline row on first use)."""
        with self.writing() as connection:
            pipeline_id = self._pipeline_id(connection, run.pipeline_name)
            connection.execute(
                _INSERT_RUN, {**_row_of(run, _RUN_FIELDS), "pipeline_id": pipeline_id}
            )
        # Remembered only once committed: other threads must never refer to a row that a
        # transaction still open (or later rolled back) created.
        self._pipeline_ids[run.pipeline_name] = pipeline_id

    def _pipeline_id(self, connection: Connection, name: str) -> str:
        cached = self._pipeline_ids.get(name)
        if cached is not None:
            return cached
        # Insert-or-ignore, then read: another process may create the row at the same time.
        connection.execute(
            self._dialect_insert(pipelines_t).on_conflict_do_nothing(index_elements=["name"]),
            {"id": new_id(), "name": name, "created_at": utcnow()},
        )
        found = connection.execute(
            select(pipelines_t.c.id).where(pipelines_t.c.name == name)
        ).scalar_one()
        return str(found)

    def update_run(self, run_id: str, **values: Any) -> None:
        """Set columns of a run row (status, times, message, owner...)."""
        values["updated_at"] = utcnow()
        with self.writing() as connection:
            connection.execute(_UPDATE_RUN, {"run_id_": run_id, **values})

    def get_run(self, id_or_name: str) -> RunRecord:
        """A run by id or by name."""
        with self.reading() as connection:
            row = connection.execute(_SELECT_RUN, {"id_or_name": id_or_name}).first()
        if row is None:
            raise NotFoundError(f"no pipeline run has the id or name {id_or_name!r}")
        return _run(row)

    def list_runs(
        self,
        *,
        pipeline_name: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally of one pipeline and with given statuses."""
        query = select(runs_t).order_by(runs_t.c.created_at.desc(), runs_t.c.id)
        if pipeline_name is not None:
            query = query.where(runs_t.c.pipeline_name == pipeline_name)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(runs_t.c.status.in_(statuses))
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as connection:
            return [_run(row) for row in connection.execute(query)]

    # ------------------------------------------------------------ step runs

    def _write(self, connection: Connection, statement: Any, rows: Any) -> Any:
        """Execute a write of a step's hot path (one row or a list of rows); return the cursor.

        On SQLite the statement goes straight to the driver: SQLAlchemy compiles it once per
        set of columns, with its own bind processors (timestamps, JSON), and each call then
        skips the execution machinery, which costs more than the small write itself.
        """
        if not self.is_sqlite:
            return connection.execute(statement, rows)
        first = rows[0] if isinstance(rows, list) else rows
        key = (id(statement), tuple(first))
        compiled = self._compiled.get(key)
        if compiled is None:
            form = statement.compile(dialect=self.engine.dialect, column_keys=list(first))
            processors = form._bind_processors
            # Binds the statement fills itself (the 1 of `latest_version + 1`) keep its value.
            fixed = {name: form.binds[name].effective_value for name in form.binds}
            binds = [
                (name, processors.get(name), name in first, fixed.get(name))
                for name in form.positiontup or ()
            ]
            compiled = (str(form), binds)
            self._compiled[key] = compiled
        sql, binds = compiled

        def values(row: dict[str, Any]) -> list[Any]:
            found = [row[name] if given else value for name, _, given, value in binds]
            return [
                value if process is None else process(value)
                for value, (_, process, _, _) in zip(found, binds, strict=True)
            ]

        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if isinstance(rows, list):
                cursor.executemany(sql, [values(row) for row in rows])
            else:
                cursor.execute(sql, values(rows))
        except sqlite3.DatabaseError as error:
            # Callers handle SQLAlchemy's errors (a clash is its IntegrityError) on every
            # dialect, so the driver's own error is raised as the one SQLAlchemy would raise.
            raise DBAPIError.instance(
                sql, rows, error, sqlite3.DatabaseError, dialect=self.engine.dialect
            ) from error
        return cursor

    def start_step_run(self, step_run: StepRunRecord, inputs: Iterable[InputEdge] = ()) -> None:
        """Insert a step run row and its input edges."""
        self.record_step_runs([(step_run, inputs, None)])

    def start_step_runs(self, entries: Sequence[tuple[StepRunRecord, Iterable[InputEdge]]]) -> None:
        """Insert several step run rows and their input edges, all in one transaction."""
        self.record_step_runs([(step_run, inputs, None) for step_run, inputs in entries])

    def update_step_run(self, step_run_id: str, **values: Any) -> None:
        """Set columns of a step run row."""
        values["updated_at"] = utcnow()
        # On the hot path too: every inline step that waited for a pool thread is marked
        # running with this when the thread takes it, one such write per invocation.
        with self.writing() as connection:
            self._write(connection, _UPDATE_STEP_RUN, {**values, "step_run_id_": step_run_id})

    def finish_step_run(
        self,
        step_run_id: str,
        *,
        status: str,
        outputs: Sequence[NewArtifactVersion] = (),
        metadata: dict[str, Any] | None = None,
        **values: Any,
    ) -> list[ArtifactVersionRecord]:
        """Record a step run's end: its new artifact versions, output edges and metadata.

        All in one transaction, so a reader sees either none or all of it.
        """
        now = utcnow()
        with self.writing() as connection:
            records = [self._insert_version(connection, new, step_run_id, now) for new in outputs]
            if records:
                self._write(
                    connection,
                    _INSERT_OUTPUTS,
                    [
                        {
                            "step_run_id": step_run_id,
                            "name": new.output_name,
                            "artifact_version_id": new.id,
                        }
                        for new in outputs
                    ],
                )

            # A new version has no metadata yet, so its entries need no upsert.
            entries = [
                _metadata_row("artifact_version", new.id, key, value, now)
                for new in outputs
                for key, value in new.metadata.items()
            ]
            if entries:
                self._write(connection, _INSERT_METADATA, entries)
            if metadata:
                self._upsert_metadata(connection, "step_run", step_run_id, metadata)

            self._write(
                connection,
                _UPDATE_STEP_RUN,
                {
                    "status": status,
                    "finished_at": now,
                    "updated_at": now,
                    **values,
                    "step_run_id_": step_run_id,
                },
            )
        return records

    def _insert_version(
        self,
        connection: Connection,
        new: NewArtifactVersion,
        producer_id: str | None,
        now: datetime.datetime,
    ) -> ArtifactVersionRecord:
        # The version number comes from an atomic upsert on the artifact's row, so
        # concurrent writers of the same artifact get 1, 2, 3 ... without gaps or clashes.
        artifact_id, version = self._write(
            connection,
            self._next_version,
            {"id": new_id(), "name": new.artifact_name, "latest_version": 1, "created_at": now},
        ).fetchone()
        self._write(
            connection,
            _INSERT_VERSION,
            {
                "id": new.id,
                "artifact_id": artifact_id,
                "version": version,
                "uri": new.uri,
                "materializer": new.materializer,
                "materializer_version": new.materializer_version,
                "data_type": new.data_type,
                "content_hash": new.content_hash,
                "producer_step_run_id": producer_id,
                "created_at": now,
            },
        )
        return ArtifactVersionRecord(
            id=new.id,
            name=new.artifact_name,
            version=version,
            uri=new.uri,
            materializer=new.materializer,
            materializer_version=new.materializer_version,
            data_type=new.data_type,
            content_hash=new.content_hash,
            producer_step_run_id=producer_id,
            created_at=now,
        )

    def record_step_run(
        self,
        step_run: StepRunRecord,
        inputs: Iterable[InputEdge] = (),
        outputs: dict[str, str] | None = None,
    ) -> None:
        """Insert a finished step run in one go (a cache hit or a skipped step)."""
        self.record_step_runs([(step_run, inputs, outputs)])

    def record_step_runs(
        self,
        entries: Sequence[tuple[StepRunRecord, Iterable[InputEdge], dict[str, str] | None]],
    ) -> None:
        """Insert step runs with their edges (outputs for finished ones), in one transaction."""
        if not entries:
            return
        steps = [_row_of(step_run, _STEP_FIELDS) for step_run, _, _ in entries]
        inputs = [_input_row(step_run.id, edge) for step_run, edges, _ in entries for edge in edges]
        outputs = [
            {"step_run_id": step_run.id, "name": name, "artifact_version_id": version_id}
            for step_run, _, produced in entries
            for name, version_id in (produced or {}).items()
        ]
        with self.writing() as connection:
            self._write(connection, _INSERT_STEP_RUN, steps)
            if inputs:
                self._write(connection, _INSERT_INPUTS, inputs)
            if outputs:
                self._write(connection, _INSERT_OUTPUTS, outputs)

    def get_step_run(self, step_run_id: str) -> StepRunRecord:
        """A step run by id."""
        with self.reading() as connection:
            row = connection.execute(select(steps_t).where(steps_t.c.id == step_run_id)).first()
        if row is None:
            raise NotFoundError(f"no step run has the id {step_run_id!r}")
        return _step(row)

    def step_runs_of(self, run_id: str) -> list[StepRunRecord]:
        """Every step run (every attempt) of a run, in creation order."""
        with self.reading() as connection:
            rows = connection.execute(
                select(steps_t)
                .where(steps_t.c.run_id == run_id)
                .order_by(steps_t.c.created_at, steps_t.c.attempt)
            )
            return [_step(row) for row in rows]

    def find_cache_hit(
        self, cache_key: str, not_before: datetime.datetime | None = None
    ) -> tuple[StepRunRecord, dict[str, ArtifactVersionRecord]] | None:
        """The newest step run that produced outputs under `cache_key`, with those outputs."""
        parameters: dict[str, Any] = {"cache_key": cache_key}
        query = _CACHE_HIT
        if not_before is not None:
            query = _CACHE_HIT_SINCE
            parameters["not_before"] = not_before
        with self.reading() as connection:
            rows = connection.execute(query, parameters).all()
        if not rows:
            return None
        width = len(_STEP_FIELDS)
        step_run = StepRunRecord(*tuple(rows[0])[:width])
        outputs = {
            row[width]: _version(row, offset=width + 1) for row in rows if row[width] is not None
        }
        return step_run, outputs

    # ------------------------------------------------------------ artifacts and lineage

    def _outputs(
        self, connection: Connection, step_run_id: str
    ) -> dict[str, ArtifactVersionRecord]:
        rows = connection.execute(
            select(outputs_t.c.name, *_VERSION_COLUMNS)
            .select_from(
                outputs_t.join(_versions_joined, outputs_t.c.artifact_version_id == versions_t.c.id)
            )
            .where(outputs_t.c.step_run_id == step_run_id)
        )
        return {row.name: _version(row, offset=1) for row in rows}

    def outputs_of(self, step_run_id: str) -> dict[str, ArtifactVersionRecord]:
        """Output name -> artifact version of a step run."""
        with self.reading() as connection:
            return self._outputs(connection, step_run_id)

    def inputs_of(self, step_run_id: str) -> list[tuple[InputEdge, ArtifactVersionRecord]]:
        """Input edges of a step run with the artifact versions they point at."""
        with self.reading() as connection:
            rows = connection.execute(
                select(inputs_t.c.name, inputs_t.c.position, inputs_t.c.item, *_VERSION_COLUMNS)
                .select_from(
                    inputs_t.join(
                        _versions_joined, inputs_t.c.artifact_version_id == versions_t.c.id
                    )
                )
                .where(inputs_t.c.step_run_id == step_run_id)
                .order_by(inputs_t.c.name, inputs_t.c.position)
            )
            return [
                (InputEdge(row.name, row.id, row.position, row.item), _version(row, offset=3))
                for row in rows
            ]

    def consumers_of(self, artifact_version_id: str) -> list[StepRunRecord]:
        """Step runs that consumed an artifact version as an input."""
        with self.reading() as connection:
            rows = connection.execute(
                select(steps_t)
                .where(
                    steps_t.c.id.in_(
                        select(inputs_t.c.step_run_id).where(
                            inputs_t.c.artifact_version_id == artifact_version_id
                        )
                    )
                )
                .order_by(steps_t.c.created_at)
            )
            return [_step(row) for row in rows]

    def get_artifact_version(self, artifact_version_id: str) -> ArtifactVersionRecord:
        """An artifact version by id."""
        with self.reading() as connection:
            row = connection.execute(
                select(*_VERSION_COLUMNS)
                .select_from(_versions_joined)
                .where(versions_t.c.id == artifact_version_id)
            ).first()
        if row is None:
            raise NotFoundError(f"no artifact version has the id {artifact_version_id!r}")
        return _version(row)

    def find_artifact_version(self, name: str, version: int | None = None) -> ArtifactVersionRecord:
        """An artifact version by artifact name and version number (default: the latest)."""
        query = (
            select(*_VERSION_COLUMNS)
            .select_from(_versions_joined)
            .where(artifacts_t.c.name == name)
        )
        if version is None:
            query = query.order_by(versions_t.c.version.desc()).limit(1)
        else:
            query = query.where(versions_t.c.version == version)
        with self.reading() as connection:
            row = connection.execute(query).first()
        if row is None:
            which = "any version" if version is None else f"version {version}"
            raise NotFoundError(f"artifact {name!r} has no {which} in the metadata store")
        return _version(row)

    def list_artifact_versions(self, name: str | None = None) -> list[ArtifactVersionRecord]:
        """Artifact versions, of one artifact or all, by name then version."""
        query = select(*_VERSION_COLUMNS).select_from(_versions_joined)
        if name is not None:
            query = query.where(artifacts_t.c.name == name)
        query = query.order_by(artifacts_t.c.name, versions_t.c.version)
        with self.reading() as connection:
            return [_version(row) for row in connection.execute(query)]

    def versions_by_id(self, ids: Iterable[str]) -> dict[str, ArtifactVersionRecord]:
        """Artifact versions by id, for the ids that exist."""
        wanted = list(set(ids))
        if not wanted:
            return {}
        with self.reading() as connection:
            rows = connection.execute(
                select(*_VERSION_COLUMNS)
                .select_from(_versions_joined)
                .where(versions_t.c.id.in_(wanted))
            )
            return {row.id: _version(row) for row in rows}

    # ------------------------------------------------------------ metadata

    def log_metadata(self, entity_type: str, entity_id: str, values: dict[str, Any]) -> None:
        """Attach key/value metadata to a run, step run or artifact version."""
        with self.writing() as connection:
            self._upsert_metadata(connection, entity_type, entity_id, values)

    def metadata_of(self, entity_type: str, entity_id: str) -> dict[str, Any]:
        """Key/value metadata of an entity."""
        with self.reading() as connection:
            rows = connection.execute(
                select(metadata_t.c.key, metadata_t.c.value)
                .where(metadata_t.c.entity_type == entity_type, metadata_t.c.entity_id == entity_id)
                .order_by(metadata_t.c.key)
            )
            return {row.key: row.value for row in rows}

    def _upsert_metadata(
        self, connection: Connection, entity_type: str, entity_id: str, values: dict[str, Any]
    ) -> None:
        now = utcnow()
        rows = [
            _metadata_row(entity_type, entity_id, key, value, now) for key, value in values.items()
        ]
        connection.execute(self._upsert_metadata_statement, rows)

    def _dialect_insert(self, table: Any) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        dialect_insert: Any = sqlite.insert if self.is_sqlite else postgresql.insert
        return dialect_insert(table)

    # ------------------------------------------------------------ housekeeping

    def count(self, table_name: str) -> int:
        """Rows in a table (for diagnostics and tests)."""
        table = models.Base.metadata.tables[table_name]
        with self.reading() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for the store, with SQLite tuned for concurrent local use."""
    try:
        if url.startswith("sqlite"):
            return _sqlite_engine(url)
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (SQLAlchemyError, ImportError, ValueError) as error:
        raise StoreError(
            f"metadata store URL {url!r} cannot be used ({error}); expected sqlite:///path "
            "or postgresql+psycopg://user:password@host/database"
        ) from None


def _sqlite_engine(url: str) -> Engine:
    import os

    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        raise StoreError(
            f"metadata store URL {url!r} names no database file; kstep needs a file "
            "(several processes share it), for example sqlite:////home/me/.kstep/kstep.db"
        )
    directory = os.path.dirname(os.path.abspath(database))
    os.makedirs(directory, exist_ok=True)
    # No cap on connections: SQLite's are cheap, and the store keeps idle ones checked out
    # in its free list, so a capped pool could leave a burst of threads waiting for one.
    engine = create_engine(
        url, connect_args={"timeout": 60, "check_same_thread": False}, max_overflow=-1
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _: Any) -> None:
        # Let the dialect's begin hook below, not the driver, start transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor, database)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    def _begin(dbapi_connection: Any) -> None:
        # Writers take the lock up front; a deferred transaction that later writes can fail
        # with "database is locked" instead of waiting its turn. `info` is the dictionary
        # that `Connection.info` shows.
        immediate = dbapi_connection.info.get("kstep_write", False)
        dbapi_connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    # The dialect's begin hook, not a "begin" event: once an engine has any connection
    # event, SQLAlchemy dispatches events around every statement, which costs more than a
    # step's small inserts.
    engine.dialect.do_begin = _begin  # type: ignore[method-assign]
    return engine


def _enable_wal(cursor: Any, database: str, timeout: float = 60.0) -> None:
    """Switch the database to WAL mode, waiting while another connection switches it."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            # Converting a new database file to WAL takes an exclusive lock without waiting
            # on the busy timeout, so processes opening a fresh store at once collide here.
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            logger.debug("SQLite database %s is locked; retrying WAL mode.", database)
            time.sleep(0.02)


def _input_row(step_run_id: str, edge: InputEdge) -> dict[str, Any]:
    return {
        "step_run_id": step_run_id,
        "name": edge.name,
        "position": edge.position,
        "artifact_version_id": edge.artifact_version_id,
        "item": edge.item,
    }


def _metadata_row(
    entity_type: str, entity_id: str, key: str, value: Any, now: datetime.datetime
) -> dict[str, Any]:
    return {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "key": key,
        "value": value,
        "created_at": now,
    }


def _row_of(record: Any, fields: list[str]) -> dict[str, Any]:
    # A shallow copy: `dataclasses.asdict` deep-copies every JSON value, which costs more
    # than the insert itself, and the row is only read while the statement runs.
    return {name: getattr(record, name) for name in fields}


def _run(row: Row[Any]) -> RunRecord:
    mapping = row._mapping
    return RunRecord(**{name: mapping[name] for name in _RUN_FIELDS})


def _step(row: Row[Any]) -> StepRunRecord:
    mapping = row._mapping
    return StepRunRecord(**{name: mapping[name] for name in _STEP_FIELDS})


def _version(row: Row[Any], offset: int = 0) -> ArtifactVersionRecord:
    values = tuple(row)[offset : offset + len(_VERSION_COLUMNS)]
    return ArtifactVersionRecord(*values)
