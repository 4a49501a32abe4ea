"""Tables of the metadata store (SQLAlchemy 2.0 declarative models).

Every schema change gets an Alembic migration in `kstep/stores/migrations/versions/` and a
new `SCHEMA_REVISION`; a test checks that the migrations produce exactly these tables.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_REVISION = "0001"

ID = String(32)


class UTCDateTime(TypeDecorator[datetime.datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no timezone; kstep stores UTC times")
        value = value.astimezone(datetime.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention, so migrations name them stably."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Pipeline(Base):
    """A pipeline definition, known by name."""

    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class PipelineRun(Base):
    """One execution of a pipeline."""

    __tablename__ = "pipeline_runs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    pipeline_name: Mapped[str] = mapped_column(String(128), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    execution_mode: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    entrypoint: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    failed_step: Mapped[str | None] = mapped_column(String(253))
    owner: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    logs_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class StepRun(Base):
    """One attempt of one step invocation in a run."""

    __tablename__ = "step_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "invocation_id", "attempt", name="uq_step_runs_attempt"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    invocation_id: Mapped[str] = mapped_column(String(253))
    step_name: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    runtime: Mapped[str] = mapped_column(String(16))
    cache_key: Mapped[str | None] = mapped_column(String(64), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    upstream: Mapped[list[str]] = mapped_column(JSON)
    input_fingerprint: Mapped[str | None] = mapped_column(String(64))
    original_step_run_id: Mapped[str | None] = mapped_column(ID)
    error_type: Mapped[str | None] = mapped_column(String(256))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    logs_uri: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


Index("ix_step_runs_run_invocation", StepRun.run_id, StepRun.invocation_id)


class Artifact(Base):
    """A named output; its versions are numbered 1, 2, ... in the order they were stored."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class ArtifactVersion(Base):
    """One stored value of an artifact."""

    __tablename__ = "artifact_versions"
    __table_args__ = (
        UniqueConstraint("artifact_id", "version", name="uq_artifact_versions_version"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    version: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(Text)
    materializer: Mapped[str] = mapped_column(String(256))
    materializer_version: Mapped[str] = mapped_column(String(64))
    data_type: Mapped[str] = mapped_column(String(256))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    producer_step_run_id: Mapped[str | None] = mapped_column(ID, index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class StepRunInput(Base):
    """Lineage edge: an artifact version consumed by a step run as (an item of) an input."""

    __tablename__ = "step_run_inputs"

    step_run_id: Mapped[str] = mapped_column(
        ForeignKey("step_runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_version_id: Mapped[str] = mapped_column(ForeignKey("artifact_versions.id"), index=True)
    item: Mapped[int | None] = mapped_column(Integer)


class StepRunOutput(Base):
    """Lineage edge: an artifact version a step run produced (or reused from the cache)."""

    __tablename__ = "step_run_outputs"

    step_run_id: Mapped[str] = mapped_column(
        ForeignKey("step_runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    artifact_version_id: Mapped[str] = mapped_column(ForeignKey("artifact_versions.id"), index=True)


class MetadataEntry(Base):
    """A key/value pair attached to a run, a step run or an artifact version."""

    __tablename__ = "metadata_entries"
    __table_args__ = (
        UniqueConstraint("entity_type", "entity_id", "key", name="uq_metadata_entries_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(ID)
    key: Mapped[str] = mapped_column(String(256))
    value: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


Index("ix_metadata_entries_entity", MetadataEntry.entity_type, MetadataEntry.entity_id)
