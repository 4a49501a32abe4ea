"""`Client`: read access to runs, step runs, artifact versions, logs and lineage.

The objects it returns are views on the metadata store: `Run`, `StepRun` and
`ArtifactVersion`. Related objects (a run's steps, a step run's inputs, an artifact
version's producer) are read when first used.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kstep._status import Status

if TYPE_CHECKING:
    from kstep._settings import Settings
    from kstep.stores import Stores
    from kstep.stores.metadata import ArtifactVersionRecord, RunRecord, StepRunRecord


class Client:
    """Reads what kstep recorded: runs, step runs, artifact versions, logs and lineage.

    Example:
        >>> client = Client()
        >>> run = client.list_runs(pipeline="training")[0]
        >>> model = run.steps["train"].outputs["model"].load()
        >>> [edge.step_run.invocation_id for edge in client.lineage(run.steps["train"]
        ...     .outputs["model"], direction="upstream")]

    Args:
        settings: where the stores are; by default read from `KSTEP_*` variables.
        stores: already open stores to use instead.
    """

    def __init__(self, settings: Settings | None = None, *, stores: Stores | None = None) -> None:
        if settings is None:
            from kstep._settings import Settings

            settings = Settings()
        if stores is None:
            from kstep.stores import Stores

            stores = Stores.open(settings)
        self.settings = settings
        self.stores = stores

    # -------------------------------------------------------------- runs

    def get_run(self, id_or_name: str) -> Run:
        """A run by id or name; raises `NotFoundError` if there is none."""
        return Run(self, self.stores.metadata.get_run(id_or_name))

    def list_runs(
        self,
        pipeline: str | None = None,
        status: str | list[str] | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally of one pipeline and with given statuses."""
        records = self.stores.metadata.list_runs(pipeline_name=pipeline, status=status, limit=limit)
        return [Run(self, record) for record in records]

    def get_step_run(self, step_run_id: str) -> StepRun:
        """A step run (one attempt) by id."""
        return StepRun(self, self.stores.metadata.get_step_run(step_run_id))

    def resume_run(self, run: Run | str) -> Run:
        """Run an unfinished or failed run again on the local engine, reusing finished work.

        Every invocation that already completed (matched by invocation id and inputs) is
        reused, never executed again. Returns the run once it ends; raises `RunFailed` if it
        fails again.
        """
        from kstep.engine import LocalEngine

        engine = LocalEngine(self.settings, stores=self.stores)
        try:
            return engine.resume(run.id if isinstance(run, Run) else run)
        finally:
            engine.inline_pool.shutdown(wait=True)

    # -------------------------------------------------------------- artifacts

    def get_artifact_version(self, name_or_id: str, version: int | None = None) -> ArtifactVersion:
        """An artifact version by artifact name (and version, default the latest) or by id."""
        from kstep._errors import NotFoundError

        metadata = self.stores.metadata
        try:
            return ArtifactVersion(self, metadata.find_artifact_version(name_or_id, version))
        except NotFoundError:
            if version is not None:
                raise
        try:
            return ArtifactVersion(self, metadata.get_artifact_version(name_or_id))
        except NotFoundError:
            raise NotFoundError(
                f"no artifact is named {name_or_id!r} and no artifact version has that id"
            ) from None

    def list_artifact_versions(self, name: str | None = None) -> list[ArtifactVersion]:
        """Versions of one artifact, or of all artifacts, by name then version."""
        return [
            ArtifactVersion(self, record)
            for record in self.stores.metadata.list_artifact_versions(name)
        ]

    def lineage(
        self,
        artifact_version: ArtifactVersion,
        direction: Literal["upstream", "downstream"] = "upstream",
    ) -> list[LineageEdge]:
        """Every edge reachable from an artifact version, walking producers or consumers.

        Upstream: each step run that produced an artifact version on the way, with the
        artifact versions it consumed. Downstream: each step run that consumed one, with the
        artifact versions it produced.
        """
        if direction not in ("upstream", "downstream"):
            raise ValueError(f"direction={direction!r} is invalid; use 'upstream' or 'downstream'")
        edges: list[LineageEdge] = []
        seen: set[str] = set()
        frontier = [artifact_version]
        while frontier:
            current = frontier.pop()
            if current.id in seen:
                continue
            seen.add(current.id)
            if direction == "upstream":
                producer = current.producer
                if producer is None:
                    continue
                for consumed in producer.input_versions():
                    edges.append(LineageEdge(consumed, producer, current))
                    frontier.append(consumed)
            else:
                for consumer in current.consumers:
                    for produced in consumer.outputs.values():
                        edges.append(LineageEdge(current, consumer, produced))
                        frontier.append(produced)
        return edges


@dataclass(frozen=True)
class LineageEdge:
    """`source` was consumed by `step_run`, which produced `target`."""

    source: ArtifactVersion
    step_run: StepRun
    target: ArtifactVersion


class Run:
    """A pipeline run as recorded in the metadata store."""

    def __init__(self, client: Client, record: RunRecord) -> None:
        self._client = client
        self._record = record

    def __repr__(self) -> str:
        return f"<Run {self.name!r} {self.status}>"

    @property
    def id(self) -> str:
        """The run's id."""
        return self._record.id

    @property
    def name(self) -> str:
        """The run's unique name."""
        return self._record.name

    @property
    def pipeline_name(self) -> str:
        """Name of the pipeline this is a run of."""
        return self._record.pipeline_name

    @property
    def status(self) -> Status:
        """One of pending, running, completed, failed, cancelled."""
        return Status(self._record.status)

    @property
    def mode(self) -> str:
        """`static` or `dynamic`."""
        return self._record.mode

    @property
    def parameters(self) -> dict[str, Any]:
        """The pipeline parameters the run was called with."""
        return dict(self._record.parameters)

    @property
    def started_at(self) -> datetime.datetime | None:
        """When the run started (UTC)."""
        return self._record.started_at

    @property
    def finished_at(self) -> datetime.datetime | None:
        """When the run ended (UTC), or None while it runs."""
        return self._record.finished_at

    @property
    def message(self) -> str | None:
        """Why the run failed, if it did."""
        return self._record.message

    @property
    def failed_step(self) -> str | None:
        """The invocation whose failure failed the run, if any."""
        return self._record.failed_step

    @functools.cached_property
    def steps(self) -> Mapping[str, StepRun]:
        """Invocation id -> its latest step run (attempt), in the order they started."""
        latest: dict[str, StepRunRecord] = {}
        for record in self._client.stores.metadata.step_runs_of(self.id):
            known = latest.get(record.invocation_id)
            if known is None or record.attempt >= known.attempt:
                latest[record.invocation_id] = record
        return {key: StepRun(self._client, record) for key, record in latest.items()}

    @property
    def metadata(self) -> dict[str, Any]:
        """Key/value metadata attached to the run."""
        return self._client.stores.metadata.metadata_of("run", self.id)

    def logs(self) -> str:
        """The orchestrator's own log (a dynamic pipeline function's output), if any."""
        uri = self._record.logs_uri
        return self._client.stores.artifacts.read_log(uri) if uri else ""

    def refresh(self) -> Run:
        """A fresh view of the same run."""
        return self._client.get_run(self.id)


class StepRun:
    """One attempt of one step invocation."""

    def __init__(self, client: Client, record: StepRunRecord) -> None:
        self._client = client
        self._record = record

    def __repr__(self) -> str:
        return f"<StepRun {self.invocation_id!r} attempt {self.attempt} {self.status}>"

    @property
    def id(self) -> str:
        """The step run's id."""
        return self._record.id

    @property
    def run_id(self) -> str:
        """Id of the run it belongs to."""
        return self._record.run_id

    @property
    def invocation_id(self) -> str:
        """The invocation's id within its run."""
        return self._record.invocation_id

    @property
    def step_name(self) -> str:
        """Name of the step definition."""
        return self._record.step_name

    @property
    def status(self) -> Status:
        """The attempt's status."""
        return Status(self._record.status)

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2, 3, ... for retries."""
        return self._record.attempt

    @property
    def runtime(self) -> str:
        """`inline` or `isolated`."""
        return self._record.runtime

    @property
    def cache_key(self) -> str | None:
        """The step's cache key for these inputs."""
        return self._record.cache_key

    @property
    def parameters(self) -> dict[str, Any]:
        """Literal (non-artifact) inputs."""
        return dict(self._record.parameters)

    @property
    def upstream(self) -> list[str]:
        """Invocations this one waited for (data and `after=`)."""
        return list(self._record.upstream)

    @property
    def started_at(self) -> datetime.datetime | None:
        """When the attempt started (UTC)."""
        return self._record.started_at

    @property
    def finished_at(self) -> datetime.datetime | None:
        """When the attempt ended (UTC)."""
        return self._record.finished_at

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, if both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def error_type(self) -> str | None:
        """Qualified name of the exception the attempt failed with."""
        return self._record.error_type

    @property
    def error_message(self) -> str | None:
        """Message of that exception (or why the attempt was lost)."""
        return self._record.error_message

    @property
    def original_step_run_id(self) -> str | None:
        """For a cached step run, the step run whose outputs it reused."""
        return self._record.original_step_run_id

    @functools.cached_property
    def outputs(self) -> dict[str, ArtifactVersion]:
        """Output name -> artifact version."""
        records = self._client.stores.metadata.outputs_of(self.id)
        return {name: ArtifactVersion(self._client, record) for name, record in records.items()}

    @functools.cached_property
    def inputs(self) -> dict[str, ArtifactVersion | list[ArtifactVersion]]:
        """Input name -> artifact version (a list for list inputs, in order)."""
        found: dict[str, Any] = {}
        for edge, record in self._client.stores.metadata.inputs_of(self.id):
            version = ArtifactVersion(self._client, record)
            if edge.position < 0:
                found[edge.name] = version
            else:
                found.setdefault(edge.name, []).append(version)
        return found

    def input_versions(self) -> list[ArtifactVersion]:
        """Every artifact version consumed, flattened."""
        flat: list[ArtifactVersion] = []
        for value in self.inputs.values():
            flat.extend(value if isinstance(value, list) else [value])
        return flat

    @property
    def metadata(self) -> dict[str, Any]:
        """Key/value metadata logged by the step."""
        return self._client.stores.metadata.metadata_of("step_run", self.id)

    @functools.cached_property
    def attempts(self) -> list[StepRun]:
        """Every attempt of this invocation in its run, first to last."""
        return [
            StepRun(self._client, record)
            for record in self._client.stores.metadata.step_runs_of(self.run_id)
            if record.invocation_id == self.invocation_id
        ]

    def logs(self) -> str:
        """What the step printed and logged (for a cache hit: the original step run's log)."""
        uri = self._record.logs_uri
        return self._client.stores.artifacts.read_log(uri) if uri else ""

    @property
    def run(self) -> Run:
        """The run this step run belongs to."""
        return self._client.get_run(self.run_id)


class ArtifactVersion:
    """One stored value of an artifact."""

    def __init__(self, client: Client, record: ArtifactVersionRecord) -> None:
        self._client = client
        self._record = record

    def __repr__(self) -> str:
        return f"<ArtifactVersion {self.name!r} version {self.version}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactVersion) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def id(self) -> str:
        """The artifact version's id."""
        return self._record.id

    @property
    def name(self) -> str:
        """The artifact's name."""
        return self._record.name

    @property
    def version(self) -> int:
        """1, 2, ... in the order versions of this artifact were stored."""
        return self._record.version

    @property
    def uri(self) -> str:
        """Where its files live in the artifact store."""
        return self._record.uri

    @property
    def materializer(self) -> str:
        """The materializer that saved it (`module.Class`)."""
        return self._record.materializer

    @property
    def data_type(self) -> str:
        """The type of the stored value (`module.Class`)."""
        return self._record.data_type

    @property
    def content_hash(self) -> str | None:
        """A hash of the content, when its materializer computes one."""
        return self._record.content_hash

    @property
    def created_at(self) -> datetime.datetime:
        """When it was stored (UTC)."""
        return self._record.created_at

    @property
    def metadata(self) -> dict[str, Any]:
        """Key/value metadata its materializer extracted."""
        return self._client.stores.metadata.metadata_of("artifact_version", self.id)

    @functools.cached_property
    def producer(self) -> StepRun | None:
        """The step run that produced it."""
        producer_id = self._record.producer_step_run_id
        return None if producer_id is None else self._client.get_step_run(producer_id)

    @property
    def consumers(self) -> list[StepRun]:
        """Step runs that consumed it as an input."""
        return [
            StepRun(self._client, record)
            for record in self._client.stores.metadata.consumers_of(self.id)
        ]

    def load(self) -> Any:
        """Load the value with the materializer that saved it."""
        from kstep.runner import load_artifact

        return load_artifact(self._record, self._client.stores)
