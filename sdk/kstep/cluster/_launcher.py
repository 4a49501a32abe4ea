"""Launching a dynamic run's invocations from its orchestrator pod, as StepRuns.

Every invocation gets a StepRun, so `kubectl get sr` shows every step of every run. Inline
invocations run on the orchestrator's threads through the step-runner, and the orchestrator
writes their StepRuns' status. Isolated ones are created for the operator, which runs them
as Jobs (with retries); their futures resolve when a watch sees them end.

After a restart the orchestrator replays the pipeline function: what completed is reused
from the metadata store (`ReplayIndex`), and a call whose StepRun already exists is
re-attached to it (an isolated one still running is waited for; an inline one whose
orchestrator died runs again as a new attempt).

The status of a StepRun the orchestrator owns is written by one writer thread, in order, so
that a step's outcome never waits for the API server: the next call of the pipeline function
starts at once. A status not yet written when the orchestrator dies is not lost work: the
replay finds the step completed in the metadata store and writes its StepRun's status then.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kstep._errors import ExecutionError
from kstep.cluster import names
from kstep.cluster._watching import Watch, WatchEvent
from kstep.cluster.objects import step_run_manifest, succeeded_condition
from kstep.cluster.specs import API_VERSION, GROUP, VERSION
from kstep.engine._attempts import (
    AttemptLauncher,
    CachedStepRun,
    OnDone,
    PreparedInvocation,
    RunningAttempt,
    rebuild_error,
)
from kstep.runner import StepOutcome
from kstep.runner._request import bindings_to_json
from kstep.stores.metadata import ArtifactVersionRecord, utcnow

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep._steps import Step
    from kstep.engine._local import LocalEngine
    from kstep.engine._replay import ReplayIndex
    from kstep.runner import RunInfo

logger = logging.getLogger(__name__)

ENDED = ("completed", "cached", "failed", "cancelled", "skipped")


class StepRunTracker:
    """The run's StepRuns as a watch sees them, and callbacks for when one ends."""

    def __init__(self, api: Any, namespace: str, run_name: str) -> None:
        self.api = api
        self.namespace = namespace
        self._events: queue.Queue[WatchEvent] = queue.Queue()
        self._watch = Watch(
            api,
            "stepruns",
            namespace,
            self._events,
            label_selector=f"{names.LABEL_RUN}={names.label_value(run_name)}",
        )
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="kstep-tracker", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        """Start watching; return once the first listing is in."""
        self._watch.start()
        self._thread.start()
        if not self.synced.wait(timeout):
            raise ExecutionError("the StepRuns of this run could not be listed in time")

    def stop(self) -> None:
        """Stop watching."""
        self._watch.stop()

    def get(self, name: str) -> dict[str, Any] | None:
        """The latest version seen of a StepRun."""
        with self._lock:
            return self._objects.get(name)

    def put(self, body: dict[str, Any]) -> None:
        """Record a version this process wrote (the watch may report it later)."""
        self._observe(body)

    def when_ended(self, name: str, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(step_run)` once the StepRun has ended (at once if it has)."""
        with self._lock:
            current = self._objects.get(name)
            if current is None or _phase(current) not in ENDED:
                self._waiters.setdefault(name, []).append(callback)
                return
        callback(current)

    def _dispatch(self) -> None:
        while True:
            event = self._events.get()
            if event.type == "synced":
                self.synced.set()
            elif event.type == "error":
                logger.warning("Watching StepRuns failed: %s", event.error)
            elif event.type != "DELETED":
                self._observe(event.object)

    def _observe(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        with self._lock:
            known = self._objects.get(name)
            if known is not None and _version(known) > _version(body):
                return
            self._objects[name] = body
            waiters = self._waiters.pop(name, []) if _phase(body) in ENDED else []
        for waiter in waiters:
            waiter(body)


class ClusterLauncher(AttemptLauncher):
    """Starts a dynamic run's invocations as StepRuns (see the module docstring)."""

    def __init__(
        self,
        engine: LocalEngine,
        run: RunInfo,
        pipeline: Pipeline,
        replay: ReplayIndex | None,
        *,
        run_object: dict[str, Any],
        tracker: StepRunTracker,
    ) -> None:
        super().__init__(engine, run, pipeline.enable_cache, replay)
        self.pipeline = pipeline
        self.run_object = run_object
        self.tracker = tracker
        self.namespace = run_object["metadata"]["namespace"]
        self._definitions: dict[int, dict[str, Any]] = {}
        self._ours: set[str] = set()
        self._statuses = _StatusWriter(tracker)

    def close(self) -> None:
        """Write every status still queued; call before the orchestrator exits."""
        self._statuses.close()

    # -------------------------------------------------------------- objects

    def _name(self, invocation_id: str) -> str:
        return names.step_run_name(self.run_object["metadata"]["name"], invocation_id)

    def _definition(self, step: Step[..., Any]) -> dict[str, Any]:
        from kstep.cluster.render import step_definition

        key = id(step)
        if key not in self._definitions:
            self._definitions[key] = step_definition(self.pipeline, step)
        return self._definitions[key]

    def _ensure_object(
        self,
        invocation_id: str,
        step: Step[..., Any],
        inputs: dict[str, Any],
        upstream: list[str],
        *,
        cache_key: str | None,
        executor: str,
        fingerprint: str | None,
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        name = self._name(invocation_id)
        existing = self.tracker.get(name)
        if existing is not None:
            return existing
        body = step_run_manifest(
            self.run_object,
            invocation_id,
            self._definition(step),
            inputs,
            upstream=upstream,
            cache_key=cache_key,
            executor=executor,
            input_fingerprint=fingerprint,
        )
        body = {"apiVersion": API_VERSION, "kind": "StepRun", **body}
        try:
            created = self.tracker.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "stepruns", body
            )
        except ApiException as error:
            if error.status != 409:
                raise
            created = self.tracker.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "stepruns", name
            )
        self._ours.add(name)
        self.tracker.put(created)
        return dict(created)

    def _object_for(self, prepared: PreparedInvocation, executor: str) -> dict[str, Any]:
        """The StepRun of a prepared invocation, created if this run has none yet."""
        return self._ensure_object(
            prepared.invocation_id,
            prepared.step,
            _inputs_json(prepared),
            prepared.upstream,
            cache_key=prepared.cache_key,
            executor=executor,
            fingerprint=prepared.input_fingerprint,
        )

    def _set_status(self, step_run: dict[str, Any], status: dict[str, Any]) -> None:
        self._statuses.put(step_run["metadata"]["name"], status)

    def _record_ended(
        self,
        prepared: PreparedInvocation,
        phase: str,
        outputs: dict[str, ArtifactVersionRecord],
        reason: str,
    ) -> None:
        step_run = self._object_for(prepared, "orchestrator")
        stamp = _now()
        self._set_status(
            step_run,
            {
                "phase": phase,
                "cached": phase == "cached",
                "attempts": 0 if phase == "cached" else max(prepared.attempts, 1),
                "stepRunId": prepared.step_run_ids[-1] if prepared.step_run_ids else None,
                "outputs": {name: record.id for name, record in outputs.items()},
                "startTime": (step_run.get("status") or {}).get("startTime") or stamp,
                "completionTime": stamp,
                "reason": reason,
            },
        )

    # -------------------------------------------------------------- reuse

    def try_cache(
        self, prepared: PreparedInvocation, pending: list[CachedStepRun] | None = None
    ) -> dict[str, ArtifactVersionRecord] | None:
        # The StepRun needs its row written now, so hits are never batched here.
        outputs = super().try_cache(prepared)
        if outputs is not None:
            self._record_ended(prepared, "cached", outputs, "CacheHit")
        return outputs

    def try_replay(self, prepared: PreparedInvocation) -> dict[str, ArtifactVersionRecord] | None:
        outputs = super().try_replay(prepared)
        if outputs is not None:
            existing = self.tracker.get(self._name(prepared.invocation_id))
            if existing is None or _phase(existing) not in ("completed", "cached"):
                self._record_ended(prepared, "completed", outputs, "Replayed")
        return outputs

    def record_skipped(
        self, invocation_id: str, step: Step[..., Any], upstream: list[str], reason: str
    ) -> str:
        step_run_id = super().record_skipped(invocation_id, step, upstream, reason)
        step_run = self._ensure_object(
            invocation_id,
            step,
            {},
            upstream,
            cache_key=None,
            executor="orchestrator",
            fingerprint=None,
        )
        if _phase(step_run) not in ENDED:
            stamp = _now()
            self._set_status(
                step_run,
                {
                    "phase": "skipped",
                    "reason": "Skipped",
                    "message": reason[:4096],
                    "stepRunId": step_run_id,
                    "completionTime": stamp,
                },
            )
        return step_run_id

    # -------------------------------------------------------------- attempts

    def start(
        self, prepared: PreparedInvocation, on_done: OnDone, *, here: bool = False
    ) -> RunningAttempt:
        name = self._name(prepared.invocation_id)
        existing = self.tracker.get(name)
        if existing is not None and name not in self._ours:
            attached = self._reattach(prepared, existing, on_done)
            if attached is not None:
                return attached
        if prepared.runtime == "isolated":
            return self._start_isolated(prepared, on_done)
        return self._start_inline(prepared, on_done)

    def _reattach(
        self, prepared: PreparedInvocation, existing: dict[str, Any], on_done: OnDone
    ) -> RunningAttempt | None:
        """Take up a StepRun a previous orchestrator created; None to run it here anew."""
        if (existing["spec"].get("inputFingerprint") or prepared.input_fingerprint) != (
            prepared.input_fingerprint
        ):
            on_done(
                StepOutcome(
                    "failed",
                    error=ExecutionError(
                        f"step {prepared.invocation_id!r} was called with other inputs than "
                        "before the orchestrator restarted; a dynamic pipeline must call its "
                        "steps the same way when it is replayed"
                    ),
                )
            )
            return RunningAttempt()
        self._ours.add(existing["metadata"]["name"])
        if existing["spec"].get("executor") == "operator":
            # Still running (or ended unseen) as the operator's: wait for it, never twice.
            self.tracker.when_ended(
                existing["metadata"]["name"], lambda body: on_done(self._outcome(body))
            )
            return RunningAttempt()
        if _phase(existing) in ("failed", "cancelled"):
            on_done(self._outcome(existing))
            return RunningAttempt()
        # An inline step of an orchestrator that is gone: its attempt is lost; run it here.
        status = existing.get("status") or {}
        lost = status.get("stepRunId")
        if lost:
            self.stores.metadata.update_step_run(
                lost,
                status="failed",
                finished_at=utcnow(),
                error_message="the orchestrator running it stopped; the step runs again",
            )
        prepared.attempt_base = max(prepared.attempt_base, int(status.get("attempts") or 0))
        return None

    def _start_isolated(self, prepared: PreparedInvocation, on_done: OnDone) -> RunningAttempt:
        step_run = self._object_for(prepared, "operator")
        prepared.attempts += 1
        self.tracker.when_ended(
            step_run["metadata"]["name"], lambda body: on_done(self._outcome(body))
        )
        return RunningAttempt()

    def _start_inline(self, prepared: PreparedInvocation, on_done: OnDone) -> RunningAttempt:
        step_run = self._object_for(prepared, "orchestrator")
        started = (step_run.get("status") or {}).get("startTime") or _now()

        def done(outcome: StepOutcome) -> None:
            self._record_inline(prepared, step_run, outcome, started)
            on_done(outcome)

        handle = super().start(prepared, done)
        # Queued after the attempt began (its step run id exists then); a quick step's
        # outcome may be queued first, and the writer then keeps the outcome.
        self._statuses.put(
            step_run["metadata"]["name"],
            {
                "phase": "running",
                "attempts": prepared.attempt_base + prepared.attempts,
                "stepRunId": prepared.step_run_ids[-1],
                "startTime": started,
                "retryAt": None,
            },
            unless_ended=True,
        )
        return handle

    def _record_inline(
        self,
        prepared: PreparedInvocation,
        step_run: dict[str, Any],
        outcome: StepOutcome,
        started: str,
    ) -> None:
        status: dict[str, Any] = {
            "attempts": prepared.attempt_base + prepared.attempts,
            "stepRunId": prepared.step_run_ids[-1],
            "startTime": started,
        }
        if outcome.status == "completed":
            status.update(
                phase="completed",
                reason="Completed",
                completionTime=_now(),
                outputs={n: r.id for n, r in outcome.outputs.items()},
            )
        elif outcome.status == "retrying":
            status.update(phase="retrying", reason="StepFailed", message=_message(outcome))
        else:
            status.update(
                phase=outcome.status,
                reason="StepFailed",
                completionTime=_now(),
                message=_message(outcome),
            )
        self._set_status(step_run, status)

    def _outcome(self, step_run: dict[str, Any]) -> StepOutcome:
        status = step_run.get("status") or {}
        phase = status.get("phase")
        if phase in ("completed", "cached"):
            versions = self.stores.metadata.versions_by_id((status.get("outputs") or {}).values())
            outputs = {name: versions[i] for name, i in (status.get("outputs") or {}).items()}
            return StepOutcome("completed", outputs)
        attempt_id = status.get("stepRunId")
        if attempt_id:
            try:
                return StepOutcome(
                    "failed", error=rebuild_error(self.stores.metadata.get_step_run(attempt_id))
                )
            except LookupError:
                pass
        message = status.get("message") or f"the step ended {phase}"
        return StepOutcome(
            "failed", error=ExecutionError(f"step {step_run['spec']['invocationId']!r}: {message}")
        )


class _StatusWriter:
    """Writes the status of the orchestrator's StepRuns on one thread, in order.

    Statuses queued for a StepRun whose earlier one is not sent yet are merged into it (a
    merge patch of both at once equals the two in turn), so a quick step costs one write,
    and an outcome is never overtaken by the running status of the same attempt.
    """

    def __init__(self, tracker: StepRunTracker) -> None:
        self._tracker = tracker
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._ended: set[str] = set()
        self._busy = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, name: str, status: dict[str, Any], *, unless_ended: bool = False) -> None:
        """Queue `status` for StepRun `name`.

        With `unless_ended`, the status is dropped if an ending status of the StepRun was
        queued or written by this writer already.
        """
        with self._changed:
            if unless_ended and name in self._ended:
                return
            if status.get("phase") in ENDED:
                self._ended.add(name)
            elif status.get("phase"):
                self._ended.discard(name)
            self._pending[name] = {**self._pending.get(name, {}), **status}
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_all, name="kstep-status-writer", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def close(self) -> None:
        """Wait until everything queued is written, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            while self._pending or self._busy:
                self._changed.wait()

    def _write_all(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                name, status = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._write(name, status)
            except Exception:
                # The step's work is recorded in the metadata store; a status lost here is
                # written again when a replay finds the StepRun behind its step run.
                logger.exception("Writing the status of StepRun %s failed.", name)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _write(self, name: str, status: dict[str, Any]) -> None:
        if "phase" in status:
            status["conditions"] = [succeeded_condition(status)]
        patched = self._tracker.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self._tracker.namespace, "stepruns", name, {"status": status}
        )
        self._tracker.put(patched)


def _inputs_json(prepared: PreparedInvocation) -> dict[str, Any]:
    return {name: _strip(value) for name, value in bindings_to_json(prepared.inputs).items()}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None or k == "param"}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def _message(outcome: StepOutcome) -> str:
    error = outcome.error
    return f"{type(error).__name__}: {error}"[:4096] if error is not None else "failed"


def _phase(step_run: dict[str, Any]) -> str | None:
    return (step_run.get("status") or {}).get("phase")


def _version(body: dict[str, Any]) -> int:
    try:
        return int(body["metadata"].get("resourceVersion", "0"))
    except ValueError:
        return 0


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
