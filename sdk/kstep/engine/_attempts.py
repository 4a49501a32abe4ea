"""Launching one attempt of one invocation: cache check, step run row, inline or isolated.

Shared by the static scheduler and dynamic runs. An attempt ends by calling its `on_done`
callback exactly once with a `StepOutcome`, from whatever thread finished it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kstep._caching import InputToken, compute_cache_key, step_fingerprint
from kstep._compile import ArtifactRef, Binding, InputList, Param
from kstep._errors import ExecutionError, StepFailed
from kstep._params import canonical_json
from kstep.engine._owner import current_owner
from kstep.engine._replay import ReplayIndex
from kstep.materializers import materializer_version, resolve_materializer, type_path
from kstep.runner import RunInfo, StepOutcome, StepRequest, execute_step
from kstep.runner._isolated import request_to_json
from kstep.runner._request import bindings_to_json
from kstep.stores.metadata import ArtifactVersionRecord, InputEdge, StepRunRecord, utcnow
from kstep.stores.metadata.store import new_id

if TYPE_CHECKING:
    from kstep._steps import Step
    from kstep.engine._local import LocalEngine
    from kstep.stores.metadata.store import MetadataStore

logger = logging.getLogger(__name__)

OnDone = Callable[[StepOutcome], None]

# A cache hit's step run with its input edges and outputs (output name -> version id).
CachedStepRun = tuple[StepRunRecord, list[InputEdge], dict[str, str]]


@dataclass
class PreparedInvocation:
    """An invocation with its inputs resolved, ready for a cache check or an attempt."""

    invocation_id: str
    step: Step[..., Any]
    inputs: dict[str, Binding]
    versions: dict[str, ArtifactVersionRecord]
    upstream: list[str]
    parameters: dict[str, Any]
    edges: list[InputEdge]
    cache_key: str
    input_fingerprint: str
    runtime: str
    cache_enabled: bool
    attempts: int = 0
    attempt_base: int = 0
    step_run_ids: list[str] = field(default_factory=list)

    @property
    def next_attempt_is_final(self) -> bool:
        """Whether the attempt about to start is the last one its retry policy allows."""
        return self.attempts + 1 > self.step.config.retry.max_retries


class RunningAttempt:
    """Handle on an attempt in progress: keeps it from starting, or stops an isolated one.

    An attempt waits for an inline worker or an isolated slot before its body starts;
    `withdraw` makes it end as `skipped` instead if it is still waiting.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.cancelled = False
        self.withdrawn_because: str | None = None
        self._started = False
        self._lock = threading.Lock()

    def begin(self) -> bool:
        """Mark the body as starting; False if the attempt was withdrawn first."""
        with self._lock:
            if self.withdrawn_because is None:
                self._started = True
            return self._started

    def withdraw(self, reason: str) -> None:
        """Keep the attempt from starting, if it has not started yet; `reason` is recorded."""
        with self._lock:
            if not self._started:
                self.withdrawn_because = reason

    def cancel(self) -> None:
        """Terminate the attempt's process, if it has one (inline threads cannot be stopped)."""
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()


class QueuedStepRuns:
    """Step run rows of inline attempts still waiting for a worker thread, written in batches.

    A dynamic pipeline queues invocations much faster than they run (a `.map()` over a
    thousand items takes a few hundred milliseconds), and one transaction per queued row on
    the pipeline function's thread would make that thread wait for the write lock behind
    every running step. The rows are written together instead: by the first worker that
    takes an attempt (its own row inserted as `running` at once), or by a timer `delay`
    seconds after the first row was queued, so a queued attempt shows as `pending` within
    that delay. An attempt that never reached a worker before its process died has no row;
    it never started, so no data is lost.
    """

    def __init__(self, metadata: MetadataStore, delay: float = 0.05) -> None:
        self.metadata = metadata
        self.delay = delay
        self._rows: dict[str, tuple[StepRunRecord, list[InputEdge]]] = {}
        self._lock = threading.Lock()
        # Held while rows taken from the queue are written: whoever then finds its row gone
        # from the queue knows that row is committed.
        self._writing = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, step_run: StepRunRecord, edges: list[InputEdge]) -> None:
        """Queue a `pending` step run row."""
        with self._lock:
            self._rows[step_run.id] = (step_run, edges)
            if self._timer is None:
                self._timer = threading.Timer(self.delay, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.write()
        except Exception:
            # The rows are written by the next attempt that begins, or by a later timer.
            logger.exception("Writing queued step runs failed; they are retried later.")

    def write(
        self, running: str | None = None, started_at: datetime.datetime | None = None
    ) -> bool:
        """Write every queued row, the one of `running` as running; True if it was queued."""
        with self._writing:
            with self._lock:
                queued, self._rows = self._rows, {}
            if not queued:
                return False
            own = queued.get(running) if running is not None else None
            written = dict(queued)
            if own is not None:
                step_run, edges = own
                begun = dataclasses.replace(step_run, status="running", started_at=started_at)
                written[step_run.id] = (begun, edges)
            try:
                self.metadata.start_step_runs(list(written.values()))
            except BaseException:
                # Queued again, ahead of rows queued meanwhile, for the next write to retry.
                with self._lock:
                    self._rows = {**queued, **self._rows}
                raise
            return own is not None


class AttemptLauncher:
    """Starts attempts of a run's invocations on the local engine."""

    def __init__(
        self,
        engine: LocalEngine,
        run: RunInfo,
        pipeline_cache: bool,
        replay: ReplayIndex | None = None,
    ) -> None:
        self.engine = engine
        self.stores = engine.stores
        self.settings = engine.settings
        self.run = run
        self.pipeline_cache = pipeline_cache
        self.replay = replay
        # A step's fingerprint (source hash, output materializers) does not change during a
        # run; a chain of the same step would otherwise recompute it per invocation.
        self._fingerprints: dict[Step[..., Any], dict[str, Any]] = {}
        self._queued = QueuedStepRuns(self.stores.metadata)

    # -------------------------------------------------------------- preparing

    def prepare(
        self,
        invocation_id: str,
        step: Step[..., Any],
        inputs: dict[str, Binding],
        versions: dict[str, ArtifactVersionRecord],
        upstream: list[str],
    ) -> PreparedInvocation:
        """Resolve what the cache key and the step run row need from resolved inputs."""
        parameters: dict[str, Any] = {}
        edges: list[InputEdge] = []
        tokens: dict[str, Any] = {}
        for name, binding in inputs.items():
            if isinstance(binding, Param):
                parameters[name] = binding.value
            elif isinstance(binding, ArtifactRef):
                edges.append(InputEdge(name, binding.artifact_version_id, -1, binding.item))
                tokens[name] = InputToken.of(versions[binding.artifact_version_id], binding.item)
            elif isinstance(binding, InputList):
                tokens[name] = []
                for position, item in enumerate(binding.items):
                    if isinstance(item, ArtifactRef):
                        edges.append(InputEdge(name, item.artifact_version_id, position, item.item))
                        tokens[name].append(
                            InputToken.of(versions[item.artifact_version_id], item.item)
                        )
                    elif isinstance(item, Param):
                        tokens[name].append(item.value)
        fingerprint = self._fingerprints.get(step)
        if fingerprint is None:
            fingerprint = self._fingerprints[step] = step_fingerprint(step)
        cache_key = compute_cache_key(fingerprint, parameters, tokens)
        enabled = step.config.enable_cache
        inputs_hash = hashlib.sha256(canonical_json(bindings_to_json(inputs)).encode()).hexdigest()
        last_attempt = self.replay.last_attempt.get(invocation_id, 0) if self.replay else 0
        return PreparedInvocation(
            invocation_id=invocation_id,
            step=step,
            inputs=inputs,
            versions=versions,
            upstream=upstream,
            parameters=parameters,
            edges=edges,
            cache_key=cache_key,
            input_fingerprint=inputs_hash,
            runtime=step.config.runtime or "inline",
            cache_enabled=self.pipeline_cache if enabled is None else enabled,
            attempt_base=last_attempt,
        )

    # -------------------------------------------------------------- cache

    def try_cache(
        self, prepared: PreparedInvocation, pending: list[CachedStepRun] | None = None
    ) -> dict[str, ArtifactVersionRecord] | None:
        """Record a cached step run and return its outputs if a valid cache hit exists.

        With `pending`, the cached step run is appended there instead of written at once,
        for the caller to write several together with `record_cached`.
        """
        if not prepared.cache_enabled:
            return None
        expires = prepared.step.config.cache_expires_after
        not_before = utcnow() - datetime.timedelta(seconds=expires) if expires else None
        hit = self.stores.metadata.find_cache_hit(prepared.cache_key, not_before)
        if hit is None:
            return None
        original, outputs = hit
        if not self._reusable(prepared, outputs):
            return None
        self._record_reuse(prepared, original, outputs, pending)
        logger.debug("Step %r is a cache hit of step run %s.", prepared.invocation_id, original.id)
        return outputs

    def try_replay(self, prepared: PreparedInvocation) -> dict[str, ArtifactVersionRecord] | None:
        """Reuse a step run this run already completed, if one matches (see `ReplayIndex`)."""
        if self.replay is None:
            return None
        claimed = self.replay.claim(
            prepared.invocation_id, prepared.step.name, prepared.input_fingerprint
        )
        if claimed is None:
            return None
        outputs = self.stores.metadata.outputs_of(claimed.id)
        if not self._reusable(prepared, outputs):
            return None
        if claimed.invocation_id != prepared.invocation_id:
            self._record_reuse(prepared, claimed, outputs)
        else:
            prepared.step_run_ids.append(claimed.id)
        logger.debug("Step %r reuses step run %s of this run.", prepared.invocation_id, claimed.id)
        return outputs

    def _reusable(
        self, prepared: PreparedInvocation, outputs: dict[str, ArtifactVersionRecord]
    ) -> bool:
        return set(outputs) == set(prepared.step.output_names) and all(
            self._still_valid(record) for record in outputs.values()
        )

    def _record_reuse(
        self,
        prepared: PreparedInvocation,
        original: StepRunRecord,
        outputs: dict[str, ArtifactVersionRecord],
        pending: list[CachedStepRun] | None = None,
    ) -> None:
        now = utcnow()
        step_run = StepRunRecord(
            id=new_id(),
            run_id=self.run.id,
            invocation_id=prepared.invocation_id,
            step_name=prepared.step.name,
            attempt=prepared.attempt_base + 1,
            status="cached",
            runtime=prepared.runtime,
            parameters=prepared.parameters,
            upstream=prepared.upstream,
            cache_key=prepared.cache_key,
            input_fingerprint=prepared.input_fingerprint,
            original_step_run_id=original.original_step_run_id or original.id,
            logs_uri=original.logs_uri,
            created_at=now,
            started_at=now,
            finished_at=now,
            updated_at=now,
        )
        entry = (step_run, prepared.edges, {name: record.id for name, record in outputs.items()})
        if pending is None:
            self.record_cached([entry])
        else:
            pending.append(entry)
        prepared.step_run_ids.append(step_run.id)

    def record_cached(self, entries: list[CachedStepRun]) -> None:
        """Write cached step runs (and their edges) in one transaction."""
        self.stores.metadata.record_step_runs(entries)

    def _still_valid(self, record: ArtifactVersionRecord) -> bool:
        # A hit is only as good as its artifacts: gone files, or a materializer whose code
        # changed since, make it a miss.
        try:
            current = materializer_version(resolve_materializer(record.materializer))
        except Exception:
            return False
        return current == record.materializer_version and self.stores.artifacts.exists(record.uri)

    def record_skipped(
        self, invocation_id: str, step: Step[..., Any], upstream: list[str], reason: str
    ) -> str:
        """Record an invocation that will never start; return its step run id."""
        now = utcnow()
        step_run_id = new_id()
        self.stores.metadata.record_step_run(
            StepRunRecord(
                id=step_run_id,
                run_id=self.run.id,
                invocation_id=invocation_id,
                step_name=step.name,
                attempt=1,
                status="skipped",
                runtime=step.config.runtime or "inline",
                upstream=upstream,
                error_message=reason,
                created_at=now,
                finished_at=now,
                updated_at=now,
            )
        )
        return step_run_id

    # -------------------------------------------------------------- attempts

    def start(
        self, prepared: PreparedInvocation, on_done: OnDone, *, here: bool = False
    ) -> RunningAttempt:
        """Record a new attempt's step run and start it on its runtime."""
        final = prepared.next_attempt_is_final
        prepared.attempts += 1
        attempt = prepared.attempt_base + prepared.attempts
        step_run_id = new_id()
        prepared.step_run_ids.append(step_run_id)
        now = utcnow()
        logs_uri = self.stores.artifacts.log_uri(self.run.id, step_run_id)
        # Pending until a thread or an isolated slot is free; `_begin` marks it running.
        # A step run on this very thread starts now, which saves that second write.
        starts_now = here and prepared.runtime == "inline"
        step_run = StepRunRecord(
            id=step_run_id,
            run_id=self.run.id,
            invocation_id=prepared.invocation_id,
            step_name=prepared.step.name,
            attempt=attempt,
            status="running" if starts_now else "pending",
            started_at=now if starts_now else None,
            runtime=prepared.runtime,
            parameters=prepared.parameters,
            upstream=prepared.upstream,
            cache_key=prepared.cache_key,
            input_fingerprint=prepared.input_fingerprint,
            logs_uri=logs_uri,
            owner=current_owner(),
            created_at=now,
            updated_at=now,
        )
        if prepared.runtime == "inline" and not here:
            self._queued.add(step_run, prepared.edges)
        else:
            self.stores.metadata.start_step_run(step_run, prepared.edges)
        request = StepRequest(
            run=self.run,
            step_run_id=step_run_id,
            invocation_id=prepared.invocation_id,
            step=prepared.step,
            attempt=attempt,
            final_attempt=final,
            inputs=prepared.inputs,
            logs_uri=logs_uri,
            known_versions=prepared.versions,
        )
        handle = RunningAttempt()
        if prepared.runtime == "isolated":
            threading.Thread(
                target=self._run_isolated,
                args=(request, handle, on_done),
                name=f"kstep-isolated-{prepared.invocation_id}",
                daemon=True,
            ).start()
        elif here:
            # The caller's thread is one of the orchestration environment's too; the outcome
            # is reported before this returns.
            self._run_inline(request, handle, on_done, here=True)
        else:
            self.engine.inline_pool.submit(self._run_inline, request, handle, on_done)
        return handle

    def _begin(self, request: StepRequest) -> None:
        now = utcnow()
        if not self._queued.write(running=request.step_run_id, started_at=now):
            self.stores.metadata.update_step_run(
                request.step_run_id, status="running", started_at=now
            )

    def _run_inline(
        self, request: StepRequest, handle: RunningAttempt, on_done: OnDone, here: bool = False
    ) -> None:
        interrupted: KeyboardInterrupt | None = None
        try:
            if handle.begin():
                if not here:
                    self._begin(request)
                outcome = execute_step(request, self.stores, self.settings)
            else:
                outcome = self._record_withdrawn(request, handle)
        except BaseException as error:
            if here and isinstance(error, KeyboardInterrupt):
                interrupted = error
            outcome = self._record_lost(request, f"the step-runner failed: {error!r}", error)
        on_done(outcome)
        if interrupted is not None:
            # Ctrl-C while the step ran on the caller's thread belongs to the caller.
            raise interrupted

    def _run_isolated(self, request: StepRequest, handle: RunningAttempt, on_done: OnDone) -> None:
        # The wait for a free slot happens on this thread, not the scheduler's, so that the
        # scheduler keeps starting inline steps and handling failures meanwhile.
        with self.engine.isolated_slots:
            try:
                if not handle.begin():
                    outcome = self._record_withdrawn(request, handle)
                elif handle.cancelled:
                    outcome = self._collect(request, 0, cancelled=True)
                else:
                    self._begin(request)
                    outcome = self._spawn(request, handle)
            except BaseException as error:
                message = f"starting the step process failed: {error!r}"
                outcome = self._record_lost(request, message)
        on_done(outcome)

    def _spawn(self, request: StepRequest, handle: RunningAttempt) -> StepOutcome:
        payload = json.dumps(request_to_json(request)).encode()
        with tempfile.NamedTemporaryFile(prefix="kstep-request-", suffix=".json") as file:
            file.write(payload)
            file.flush()
            environment = {**os.environ, **self.settings.child_environment()}
            environment["PYTHONPATH"] = os.pathsep.join(
                p for p in [os.getcwd(), *sys.path, environment.get("PYTHONPATH", "")] if p
            )
            handle.process = subprocess.Popen(
                [sys.executable, "-m", "kstep.runner", "--request", file.name],
                env=environment,
            )
            if handle.cancelled:
                handle.process.terminate()
            code = handle.process.wait()
        return self._collect(request, code, handle.cancelled)

    def _collect(self, request: StepRequest, code: int, cancelled: bool) -> StepOutcome:
        record = self.stores.metadata.get_step_run(request.step_run_id)
        if record.status == "completed":
            return StepOutcome("completed", self.stores.metadata.outputs_of(record.id))
        if record.status in ("failed", "retrying"):
            return StepOutcome(record.status, error=rebuild_error(record))
        if cancelled:
            self.stores.metadata.update_step_run(
                record.id, status="cancelled", finished_at=utcnow(), error_message="cancelled"
            )
            return StepOutcome(
                "cancelled", error=ExecutionError(f"step {record.invocation_id!r} was cancelled")
            )
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return self._record_lost(
            request, f"the isolated step process {how} before recording a result"
        )

    def _record_withdrawn(self, request: StepRequest, handle: RunningAttempt) -> StepOutcome:
        message = (
            f"step {request.invocation_id!r} was not started because {handle.withdrawn_because}"
        )
        self._queued.write()
        self.stores.metadata.update_step_run(
            request.step_run_id,
            status="skipped",
            started_at=None,
            finished_at=utcnow(),
            error_message=message,
        )
        return StepOutcome("skipped", error=ExecutionError(message))

    def _record_lost(
        self, request: StepRequest, reason: str, error: BaseException | None = None
    ) -> StepOutcome:
        status = "failed" if request.final_attempt else "retrying"
        message = f"step {request.invocation_id!r}: {reason}"
        try:
            self._queued.write()
            self.stores.metadata.update_step_run(
                request.step_run_id,
                status=status,
                finished_at=utcnow(),
                error_type=type_path(type(error or ExecutionError())),
                error_message=message,
            )
        except Exception:
            # The outcome must still reach the run, or it would wait for this step forever;
            # a later engine start records the row as orphaned.
            logger.exception("Recording the loss of step run %s failed.", request.step_run_id)
        return StepOutcome(status, error=error or ExecutionError(message))


def rebuild_error(record: StepRunRecord) -> BaseException:
    """The exception a step failed with, recreated from its stored type and message."""
    from kstep.materializers._base import import_type

    message = record.error_message or ""
    type_name = record.error_type or ""
    try:
        error_type = import_type(type_name, "exception type")
        if isinstance(error_type, type) and issubclass(error_type, Exception):
            return error_type(message)
    except Exception:
        logger.debug("Exception type %r cannot be recreated here.", type_name)
    return StepFailed(
        f"step {record.invocation_id!r} failed with {type_name}: {message}",
        error_type=type_name,
        invocation_id=record.invocation_id,
    )
