"""The local scheduler of a static pipeline's DAG.

It runs in the calling thread: it starts every invocation whose upstream invocations
completed (or came from the cache), waits for attempts to report back on a queue, retries
failed attempts after their delay, and applies the execution mode when a step fails for good:

- `continue_on_failure`: skip what depends on the failure, run every other branch;
- `stop_on_failure`: start nothing new, let running steps finish, skip the rest;
- `fail_fast`: as `stop_on_failure`, and also terminate running isolated steps.
"""

from __future__ import annotations

import heapq
import logging
import queue
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kstep._compile import ArtifactRef, Binding, CompiledPipeline, InputList, OutputRef, Param
from kstep._errors import ExecutionError
from kstep.engine._attempts import AttemptLauncher, PreparedInvocation, RunningAttempt
from kstep.runner import StepOutcome
from kstep.stores.metadata import ArtifactVersionRecord, StepRunRecord, utcnow
from kstep.stores.metadata.store import new_id

if TYPE_CHECKING:
    from kstep.runner import RunInfo

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """How a run's steps ended, for the engine to record."""

    status: str
    failed_step: str | None = None
    error: BaseException | None = None


class StaticScheduler:
    """Runs one compiled pipeline's invocations on the local engine."""

    def __init__(self, launcher: AttemptLauncher, compiled: CompiledPipeline, run: RunInfo) -> None:
        self.launcher = launcher
        self.compiled = compiled
        self.run = run
        self.mode = compiled.pipeline.execution_mode
        self.invocations = compiled.invocations
        self.waiting: dict[str, set[str]] = {}
        self.dependents: dict[str, list[str]] = {i: [] for i in self.invocations}
        for invocation in self.invocations.values():
            upstream = invocation.upstream()
            self.waiting[invocation.id] = set(upstream)
            for upstream_id in upstream:
                self.dependents[upstream_id].append(invocation.id)
        self.outputs: dict[str, dict[str, ArtifactVersionRecord]] = {}
        self.status: dict[str, str] = {}
        self.prepared: dict[str, PreparedInvocation] = {}
        self.running: dict[str, RunningAttempt] = {}
        self.events: queue.SimpleQueue[tuple[str, StepOutcome]] = queue.SimpleQueue()
        self.retries: list[tuple[float, str]] = []
        self.stopping = False
        self.first_failure: tuple[str, BaseException | None] | None = None

    def execute(self) -> RunResult:
        """Run every invocation to an end and return the run's outcome."""
        ready = [i for i, upstream in self.waiting.items() if not upstream]
        while True:
            while ready:
                ready.extend(self._launch(ready.pop(0)))
            if len(self.status) == len(self.invocations) and not self.running:
                break
            ready = self._wait_and_handle()
        return self._result()

    # -------------------------------------------------------------- launching

    def _launch(self, invocation_id: str) -> list[str]:
        """Start an invocation; return invocations a cache hit made ready at once."""
        if self.stopping:
            self._skip(invocation_id)
            return []
        invocation = self.invocations[invocation_id]
        prepared = self.prepared.get(invocation_id)
        if prepared is None:
            versions: dict[str, ArtifactVersionRecord] = {}
            inputs = {
                name: self._resolve(binding, versions)
                for name, binding in invocation.inputs.items()
            }
            prepared = self.launcher.prepare(
                invocation_id, invocation.step, inputs, versions, invocation.upstream()
            )
            self.prepared[invocation_id] = prepared
            reused = self.launcher.try_replay(prepared)
            if reused is not None:
                return self._complete(invocation_id, "completed", reused)
            cached = self.launcher.try_cache(prepared)
            if cached is not None:
                return self._complete(invocation_id, "cached", cached)
        self.running[invocation_id] = self.launcher.start(
            prepared, lambda outcome: self.events.put((invocation_id, outcome))
        )
        return []

    def _resolve(self, binding: Binding, versions: dict[str, ArtifactVersionRecord]) -> Binding:
        if isinstance(binding, OutputRef):
            record = self.outputs[binding.invocation_id][binding.output]
            versions[record.id] = record
            return ArtifactRef(record.id, binding.item)
        if isinstance(binding, InputList):
            return InputList(tuple(self._resolve(item, versions) for item in binding.items))
        if isinstance(binding, Param | ArtifactRef):
            return binding
        raise ExecutionError(f"input binding {binding!r} cannot be resolved")

    # -------------------------------------------------------------- events

    def _wait_and_handle(self) -> list[str]:
        timeout = None
        if self.retries:
            timeout = max(0.0, self.retries[0][0] - time.monotonic())
        try:
            invocation_id, outcome = self.events.get(timeout=timeout)
        except queue.Empty:
            return self._due_retries()
        ready = self._handle(invocation_id, outcome)
        return ready + self._due_retries()

    def _due_retries(self) -> list[str]:
        due: list[str] = []
        now = time.monotonic()
        while self.retries and self.retries[0][0] <= now:
            due.append(heapq.heappop(self.retries)[1])
        return due

    def _handle(self, invocation_id: str, outcome: StepOutcome) -> list[str]:
        self.running.pop(invocation_id, None)
        if outcome.status == "completed":
            return self._complete(invocation_id, "completed", outcome.outputs)
        if outcome.status == "retrying" and not self.stopping:
            prepared = self.prepared[invocation_id]
            wait = prepared.step.config.retry.wait_before(prepared.attempts + 1)
            logger.debug("Step %r failed; retrying in %.3f s.", invocation_id, wait)
            heapq.heappush(self.retries, (time.monotonic() + wait, invocation_id))
            return []
        if outcome.status == "retrying":
            # The run is stopping, so the retry this attempt expected never comes.
            step_run_id = self.prepared[invocation_id].step_run_ids[-1]
            self.launcher.stores.metadata.update_step_run(step_run_id, status="failed")
        self.status[invocation_id] = "cancelled" if outcome.status == "cancelled" else "failed"
        if self.first_failure is None and outcome.status != "cancelled":
            self.first_failure = (invocation_id, outcome.error)
        self._apply_failure(invocation_id)
        return []

    def _complete(
        self, invocation_id: str, status: str, outputs: dict[str, ArtifactVersionRecord]
    ) -> list[str]:
        self.status[invocation_id] = status
        self.outputs[invocation_id] = outputs
        ready: list[str] = []
        for dependent in self.dependents[invocation_id]:
            waiting = self.waiting[dependent]
            waiting.discard(invocation_id)
            if not waiting and dependent not in self.status:
                ready.append(dependent)
        if self.stopping:
            for dependent in ready:
                self._skip(dependent)
            return []
        return ready

    def _apply_failure(self, failed_id: str) -> None:
        if self.mode == "continue_on_failure":
            self._skip_dependents(failed_id)
            return
        self.stopping = True
        if self.mode == "fail_fast":
            for attempt in self.running.values():
                attempt.cancel()
        for invocation_id in self.invocations:
            if invocation_id not in self.status and invocation_id not in self.running:
                self._skip(invocation_id)
        # Retries waiting for their delay will never start now.
        self.retries.clear()

    def _skip_dependents(self, failed_id: str) -> None:
        pending = list(self.dependents[failed_id])
        while pending:
            invocation_id = pending.pop()
            if invocation_id in self.status:
                continue
            self._skip(invocation_id)
            pending.extend(self.dependents[invocation_id])

    def _skip(self, invocation_id: str) -> None:
        if invocation_id in self.status:
            return
        prepared = self.prepared.get(invocation_id)
        if prepared is not None and prepared.step_run_ids:
            # An attempt already failed and its retry was waiting for its delay: the retry
            # never comes, so that attempt is the last one and the step failed.
            self.status[invocation_id] = "failed"
            self.launcher.stores.metadata.update_step_run(
                prepared.step_run_ids[-1], status="failed"
            )
            return
        self.status[invocation_id] = "skipped"
        invocation = self.invocations[invocation_id]
        now = utcnow()
        self.launcher.stores.metadata.record_step_run(
            StepRunRecord(
                id=new_id(),
                run_id=self.run.id,
                invocation_id=invocation_id,
                step_name=invocation.step.name,
                attempt=1,
                status="skipped",
                runtime=invocation.step.config.runtime or "inline",
                upstream=invocation.upstream(),
                created_at=now,
                finished_at=now,
                updated_at=now,
            )
        )

    def _result(self) -> RunResult:
        if self.first_failure is not None:
            failed_id, error = self.first_failure
            return RunResult("failed", failed_id, error)
        if any(status == "cancelled" for status in self.status.values()):
            return RunResult("cancelled")
        return RunResult("completed")


def describe_failure(result: RunResult) -> str | None:
    """A one-line message for a failed run."""
    if result.failed_step is None:
        return None
    error: Any = result.error
    detail = f"{type(error).__name__}: {error}" if error is not None else "failed"
    return f"step {result.failed_step!r} failed: {detail}"
