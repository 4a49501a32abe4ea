"""Plain records read from and written to the metadata store."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.datetime.now(datetime.UTC)


@dataclass
class RunRecord:
    """A pipeline run row."""

    id: str
    name: str
    pipeline_name: str
    mode: str
    status: str
    execution_mode: str
    parameters: dict[str, Any]
    entrypoint: str | None = None
    message: str | None = None
    failed_step: str | None = None
    owner: dict[str, Any] | None = None
    logs_uri: str | None = None
    created_at: datetime.datetime = field(default_factory=utcnow)
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    updated_at: datetime.datetime = field(default_factory=utcnow)


@dataclass
class StepRunRecord:
    """A step run row: one attempt of one invocation."""

    id: str
    run_id: str
    invocation_id: str
    step_name: str
    attempt: int
    status: str
    runtime: str
    parameters: dict[str, Any] = field(default_factory=dict)
    upstream: list[str] = field(default_factory=list)
    cache_key: str | None = None
    input_fingerprint: str | None = None
    original_step_run_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    logs_uri: str | None = None
    owner: dict[str, Any] | None = None
    created_at: datetime.datetime = field(default_factory=utcnow)
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    updated_at: datetime.datetime = field(default_factory=utcnow)


@dataclass
class ArtifactVersionRecord:
    """An artifact version row joined with its artifact's name."""

    id: str
    name: str
    version: int
    uri: str
    materializer: str
    materializer_version: str
    data_type: str
    content_hash: str | None
    producer_step_run_id: str | None
    created_at: datetime.datetime


@dataclass
class NewArtifactVersion:
    """An artifact version whose files are committed and whose row is to be written."""

    id: str
    output_name: str
    artifact_name: str
    uri: str
    materializer: str
    materializer_version: str
    data_type: str
    content_hash: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputEdge:
    """An artifact version consumed by a step run as input `name` (item `position` of a list)."""

    name: str
    artifact_version_id: str
    position: int = -1
    item: int | None = None
