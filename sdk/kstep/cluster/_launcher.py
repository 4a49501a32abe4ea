"""Launching a dynamic run's invocations from its orchestrator pod, as StepRuns.

Every invocation gets a StepRun, so `kubectl get sr` shows every step of every run. Inline
invocations run on the orchestrator's threads through the step-runner, and the orchestrator
writes their StepRuns' status. Isolated ones are created for the operator, which runs them
as Jobs (with retries); their futures resolve when a watch sees them end.

After a restart the orchestrator replays the pipeline function: what completed is reused
from the metadata store (`ReplayIndex`), and a call whose StepRun already exists is
re-attached to it (an isolated one still running is waited for; an inline one whose
orchestrator died runs again as a new attempt).

A StepRun the orchestrator owns is created, and its status written, by one writer thread, in
order, so that a step never waits for the API server: an inline call starts as soon as its row
is recorded, and the next call of the pipeline function starts as soon as its outcome is. A
StepRun or status not yet written when the orchestrator dies is not lost work: the replay finds
the step in the metadata store and writes its StepRun then.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kstep._errors import ClusterError, ExecutionError
from kstep.cluster import names
from kstep.cluster._kube import api_error
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
from kstep.stores.metadata import ArtifactVersionRecord

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep._steps import Step
    from kstep.engine._local import LocalEngine
    from kstep.engine._replay import ReplayIndex
    from kstep.runner import RunInfo

logger = logging.getLogger(__name__)

ENDED = ("completed", "cached", "failed", "cancelled", "skipped")

# How long a StepRun's running status waits before it is written: an inline step that ends
# sooner shows its outcome straight away, for one status write instead of two.
RUNNING_STATUS_HOLD_SECONDS = 0.2


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

    def create(self, name: str, manifest: dict[str, Any]) -> None:
        """Create StepRun `name` from `manifest`, or take the one that exists, and record it.

        Raises:
            ClusterError: the API server refused it, with the server's message.
        """
        from kubernetes.client.exceptions import ApiException

        try:
            created = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "stepruns", manifest
            )
        except ApiException as error:
            if error.status != 409:
                raise api_error(error, f"creating StepRun {self.namespace}/{name}") from None
            created = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "stepruns", name
            )
        self.put(created)

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
        running_status_hold: float = RUNNING_STATUS_HOLD_SECONDS,
    ) -> None:
        super().__init__(engine, run, pipeline.enable_cache, replay)
        self.pipeline = pipeline
        self.run_object = run_object
        self.tracker = tracker
        self.namespace = run_object["metadata"]["namespace"]
        self._definitions: dict[int, dict[str, Any]] = {}
        self._ours: set[str] = set()
        self._started: dict[str, str] = {}
        self._statuses = _StatusWriter(tracker, running_status_hold)

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

    def _manifest(
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
        return {"apiVersion": API_VERSION, "kind": "StepRun", **body}

    def _prepared_manifest(self, prepared: PreparedInvocation, executor: str) -> dict[str, Any]:
        return self._manifest(
            prepared.invocation_id,
            prepared.step,
            _inputs_json(prepared),
            prepared.upstream,
            cache_key=prepared.cache_key,
            executor=executor,
            fingerprint=prepared.input_fingerprint,
        )

    def _own(
        self, name: str, manifest: Callable[[], dict[str, Any]], *, at_once: bool = False
    ) -> None:
        """Have StepRun `name` created for this orchestrator, unless it exists.

        The writer creates it, or with `at_once` it is created before this returns (raising
        `ClusterError` if the API server refuses it).
        """
        if name in self._ours or self.tracker.get(name) is not None:
            return
        self._ours.add(name)
        if at_once:
            self.tracker.create(name, manifest())
        else:
            self._statuses.create(name, manifest())

    def _start_time(self, name: str) -> str:
        """When the StepRun's first attempt started (now, for a first attempt)."""
        if name not in self._started:
            known = self.tracker.get(name)
            self._started[name] = ((known or {}).get("status") or {}).get("startTime") or _now()
        return self._started[name]

    def _record_ended(
        self,
        prepared: PreparedInvocation,
        phase: str,
        outputs: dict[str, ArtifactVersionRecord],
        reason: str,
    ) -> None:
        name = self._name(prepared.invocation_id)
        self._own(name, lambda: self._prepared_manifest(prepared, "orchestrator"))
        started = self._start_time(name)
        self._statuses.put(
            name,
            {
                "phase": phase,
                "cached": phase == "cached",
                "attempts": 0 if phase == "cached" else max(prepared.attempts, 1),
                "stepRunId": prepared.step_run_ids[-1] if prepared.step_run_ids else None,
                "outputs": {name: record.id for name, record in outputs.items()},
                "startTime": started,
                "completionTime": _now(),
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
        name = self._name(invocation_id)
        existing = self.tracker.get(name)
        if existing is not None and _phase(existing) in ENDED:
            return step_run_id
        self._own(
            name,
            lambda: self._manifest(
                invocation_id,
                step,
                {},
                upstream,
                cache_key=None,
                executor="orchestrator",
                fingerprint=None,
            ),
        )
        self._statuses.put(
            name,
            {
                "phase": "skipped",
                "reason": "Skipped",
                "message": reason[:4096],
                "stepRunId": step_run_id,
                "completionTime": _now(),
            },
        )
        return step_run_id

    # -------------------------------------------------------------- attempts

    def start(
        self, prepared: PreparedInvocation, on_done: OnDone, *, here: bool = False
    ) -> RunningAttempt:
        self._statuses.raise_failure()
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
        # An inline step of an orchestrator that is gone: its attempt is lost (its row was
        # marked failed when this orchestrator started); it runs here as the next attempt.
        status = existing.get("status") or {}
        prepared.attempt_base = max(prepared.attempt_base, int(status.get("attempts") or 0))
        return None

    def _start_isolated(self, prepared: PreparedInvocation, on_done: OnDone) -> RunningAttempt:
        # Created at once: the operator runs the step from its StepRun.
        name = self._name(prepared.invocation_id)
        if self.tracker.get(name) is None:
            self.tracker.create(name, self._prepared_manifest(prepared, "operator"))
        self._ours.add(name)
        prepared.attempts += 1
        self.tracker.when_ended(name, lambda body: on_done(self._outcome(body)))
        return RunningAttempt()

    def _start_inline(self, prepared: PreparedInvocation, on_done: OnDone) -> RunningAttempt:
        name = self._name(prepared.invocation_id)
        # A step an earlier orchestrator pod ran may have died with it before its writer
        # created the StepRun, perhaps killed by the step itself: then the StepRun is created
        # before the step runs again, so that it shows how the run ended should it die again.
        self._own(
            name,
            lambda: self._prepared_manifest(prepared, "orchestrator"),
            at_once=prepared.attempt_base > 0,
        )
        started = self._start_time(name)

        def done(outcome: StepOutcome) -> None:
            self._record_inline(prepared, name, outcome, started)
            on_done(outcome)

        handle = super().start(prepared, done)
        # Queued after the attempt began (its step run id exists then); a quick step's
        # outcome may be queued first, and the writer then keeps the outcome.
        self._statuses.put(
            name,
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
        name: str,
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
        self._statuses.put(name, status)

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
    """Creates the orchestrator's StepRuns and writes their status, on one thread, in order.

    Statuses queued for a StepRun whose earlier one is not sent yet are merged into it (a
    merge patch of both at once equals the two in turn), so an outcome is never overtaken by
    the running status of the same attempt. A status that does not end its StepRun waits
    `hold` seconds before it is sent, so a step that ends sooner costs a create and one status
    write instead of two: most inline steps end within milliseconds.
    """

    def __init__(self, tracker: StepRunTracker, hold: float) -> None:
        self._tracker = tracker
        self._hold = hold
        # Per StepRun: its manifest while not created yet, the status to write, when it is due.
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._ended: set[str] = set()
        self._failure: ExecutionError | None = None
        self._uncreated: set[str] = set()
        self._busy = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def create(self, name: str, manifest: dict[str, Any]) -> None:
        """Queue the creation of StepRun `name` (before any status queued for it)."""
        with self._changed:
            entry = self._pending.setdefault(name, _Pending())
            entry.manifest = manifest
            self._wake()

    def put(self, name: str, status: dict[str, Any], *, unless_ended: bool = False) -> None:
        """Queue `status` for StepRun `name`.

        With `unless_ended`, the status is dropped if an ending status of the StepRun was
        queued or written by this writer already.
        """
        with self._changed:
            if (unless_ended and name in self._ended) or name in self._uncreated:
                return
            ends = status.get("phase") in ENDED
            if ends:
                self._ended.add(name)
            elif status.get("phase"):
                self._ended.discard(name)
            entry = self._pending.setdefault(name, _Pending())
            entry.status.update(status)
            due = time.monotonic() + (0.0 if ends else self._hold)
            entry.due = due if entry.due is None else min(entry.due, due)
            self._wake()

    def raise_failure(self) -> None:
        """Raise why a StepRun could not be created, if one could not."""
        with self._changed:
            if self._failure is not None:
                raise self._failure

    def close(self) -> None:
        """Wait until everything queued is written, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            while self._pending or self._busy:
                self._changed.wait()

    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_all, name="kstep-status-writer", daemon=True
            )
            self._thread.start()
        self._changed.notify_all()

    def _next(self) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None] | None:
        """The first StepRun with something due: (name, manifest, status); None to stop.

        Waits while nothing is due. A StepRun's status leaves with its creation only if due.
        """
        while True:
            now = time.monotonic()
            soonest: float | None = None
            for name, entry in self._pending.items():
                status_due = entry.due is not None and (self._closed or entry.due <= now)
                if entry.manifest is None and not status_due:
                    soonest = entry.due if soonest is None else min(soonest, entry.due or now)
                    continue
                manifest, entry.manifest = entry.manifest, None
                if entry.due is None or status_due:
                    del self._pending[name]
                return name, manifest, entry.status if status_due else None
            if not self._pending and self._closed:
                return None
            self._changed.wait(None if soonest is None else max(soonest - now, 0.001))

    def _write_all(self) -> None:
        while True:
            with self._changed:
                work = self._next()
                if work is None:
                    return
                self._busy = True
            name, manifest, status = work
            try:
                if manifest is not None:
                    self._create(name, manifest)
                if status is not None:
                    self._write(name, status)
            except Exception:
                # The step's work is recorded in the metadata store; a status lost here is
                # written again when a replay finds the StepRun behind its step run.
                logger.exception("Writing StepRun %s failed.", name)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _create(self, name: str, manifest: dict[str, Any]) -> None:
        try:
            self._tracker.create(name, manifest)
        except ClusterError as failure:
            with self._changed:
                # Its statuses cannot be written; the pipeline's next call fails with this.
                self._pending.pop(name, None)
                self._uncreated.add(name)
                self._failure = self._failure or ExecutionError(str(failure))
            raise

    def _write(self, name: str, status: dict[str, Any]) -> None:
        if "phase" in status:
            status["conditions"] = [succeeded_condition(status)]
        patched = self._tracker.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self._tracker.namespace, "stepruns", name, {"status": status}
        )
        self._tracker.put(patched)


@dataclasses.dataclass
class _Pending:
    """What the status writer still has to do for one StepRun."""

    manifest: dict[str, Any] | None = None
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    due: float | None = None


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
