"""Dynamic pipelines on the local engine: the pipeline function runs now, in this process.

Each step call inside it becomes an invocation that starts as soon as the futures it consumes
are done: synchronously (`my_step(...)` waits and returns `OutputArtifact`s) or concurrently
(`my_step.submit(...)` returns a `StepFuture` at once), inline on the engine's threads or
isolated in a subprocess. Failure rules:

- a failed call raises the step's own exception where it is awaited; a failure the function
  catches does not fail the run;
- an exception escaping the function fails the run: with the default `stop_on_failure`
  nothing new starts and running steps finish (`fail_fast` also terminates isolated ones,
  `continue_on_failure` lets every submitted invocation run);
- a failed invocation nobody awaited fails the run too;
- an interrupt (KeyboardInterrupt) cancels the run as `fail_fast` would stop it, and reaches
  the caller.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kstep._compile import (
    ArtifactRef,
    Binding,
    InputList,
    Param,
    StepOutput,
    bind_arguments,
    check_invocation_id,
)
from kstep._context import pipeline_scope
from kstep._errors import (
    ExecutionError,
    KstepError,
    MaterializerError,
    RunFailed,
    StepCallError,
    UpstreamFailed,
    describe,
)
from kstep._futures import (
    ArtifactChunk,
    InvocationState,
    MapResultsFuture,
    OutputArtifact,
    OutputFuture,
    StepFuture,
    unmapped,
)
from kstep._params import check_json_value
from kstep.engine._attempts import AttemptLauncher, PreparedInvocation, RunningAttempt
from kstep.engine._replay import ReplayIndex
from kstep.engine._static import RunResult
from kstep.materializers import resolve_materializer
from kstep.runner import RunInfo, StepOutcome, load_artifact
from kstep.stores.metadata import ArtifactVersionRecord, RunRecord

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep._steps import Step
    from kstep.client import Run
    from kstep.engine._local import LocalEngine

logger = logging.getLogger(__name__)

_STOPPING = "the run is stopping after an unhandled failure"


@dataclass(frozen=True)
class _FromState:
    """An input that is output `index` (item `item`) of an invocation not finished yet."""

    state: InvocationState
    index: int
    item: int | None = None


@dataclass
class _Known:
    """Artifact versions an invocation's inputs name, and the invocations behind its inputs.

    `producers` holds the invocations of artifacts and futures alike, in input order.
    """

    versions: dict[str, ArtifactVersionRecord]
    producers: dict[str, None]


@dataclass
class _Pending:
    """An invocation waiting for the invocations it consumes."""

    invocation_id: str
    step: Step[..., Any]
    inputs: dict[str, Any]
    known: dict[str, ArtifactVersionRecord]
    dependencies: list[InvocationState]
    upstream: list[str]
    state: InvocationState


def run_dynamic(
    engine: LocalEngine,
    pipeline: Pipeline,
    parameters: dict[str, Any],
    record: RunRecord | None = None,
    replay: ReplayIndex | None = None,
    launcher: AttemptLauncher | None = None,
) -> Run:
    """Run a dynamic pipeline's function with a `DynamicScope` and record the run's end.

    `launcher` starts the invocations; by default the local engine's (a dynamic run's
    orchestrator on a cluster passes one that also records StepRuns).
    """
    if record is None:
        record = engine.start_run(pipeline, parameters, mode="dynamic")
    info = RunInfo(record.id, record.name, pipeline.name)
    if launcher is None:
        launcher = AttemptLauncher(engine, info, pipeline.enable_cache, replay)
    scope = DynamicScope(launcher, pipeline)
    token = pipeline_scope.set(scope)
    function_error: BaseException | None = None
    try:
        pipeline.fn(**parameters)
    except BaseException as error:  # an unhandled failure ends the run
        function_error = error
    finally:
        pipeline_scope.reset(token)
    result = scope.finish(function_error)
    if isinstance(function_error, KeyboardInterrupt):
        # The run is recorded as cancelled, but the caller gets the interrupt, not RunFailed.
        with contextlib.suppress(RunFailed):
            engine.finish_run(record.id, result, pipeline)
        raise function_error
    return engine.finish_run(record.id, result, pipeline)


class DynamicScope:
    """The pipeline scope of a dynamic pipeline's function while it runs."""

    dynamic = True

    def __init__(self, launcher: AttemptLauncher, pipeline: Pipeline) -> None:
        self.launcher = launcher
        self.pipeline = pipeline
        self.run = launcher.run
        self.stores = launcher.stores
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._states: dict[str, InvocationState] = {}
        self._counts: dict[str, int] = {}
        self._map_counts: dict[str, int] = {}
        self._unfinished = 0
        self._running: dict[str, RunningAttempt] = {}
        self._stopping = False
        self._ready: collections.deque[_Pending] = collections.deque()
        self._draining = threading.local()

    # -------------------------------------------------------------- calls

    def call_step(
        self,
        step: Step[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        invocation_id: str | None,
        after: Any,
        concurrent: bool,
        internal_id: bool = False,
    ) -> Any:
        arguments = bind_arguments(step, args, kwargs)
        known = _Known({}, {})
        inputs = {
            name: self._pending_binding(step, name, value, known)
            for name, value in arguments.items()
        }
        dependencies, upstream = self._dependencies(step, inputs, after, known)
        with self._lock:
            if internal_id:
                assert invocation_id is not None
                new_id_ = invocation_id
            else:
                new_id_ = self._new_id(step, invocation_id)
            state = InvocationState(self.run.id, new_id_, step.output_names)
            self._states[new_id_] = state
            self._unfinished += 1
        pending = _Pending(new_id_, step, inputs, known.versions, dependencies, upstream, state)
        self._when_ready(pending)
        if concurrent:
            return StepFuture(state)
        state.wait()
        state.raise_if_failed()
        if not state.outputs:
            return None
        return state.outputs[0] if len(state.outputs) == 1 else state.outputs

    def _new_id(self, step: Step[..., Any], requested: str | None) -> str:
        if requested is not None:
            return check_invocation_id(requested, step, self._states, self.pipeline.name)
        count = self._counts.get(step.name, 0)
        while True:
            count += 1
            candidate = step.name if count == 1 else f"{step.name}_{count}"
            if candidate not in self._states:
                self._counts[step.name] = count
                return candidate

    def _pending_binding(self, step: Step[..., Any], name: str, value: Any, known: _Known) -> Any:
        what = f"input {name!r} of step {step.name!r}"
        if isinstance(value, OutputArtifact):
            self._check_same_run(value.run_id, what)
            known.versions[value.record.id] = value.record
            known.producers[value.invocation_id] = None
            return ArtifactRef(value.record.id)
        if isinstance(value, ArtifactChunk):
            return self._chunk_binding(value, what, known)
        if isinstance(value, StepFuture):
            self._check_same_run(value._state.run_id, what)
            index = self._single_output(value, what)
            known.producers[value.invocation_id] = None
            return _FromState(value._state, index)
        if isinstance(value, MapResultsFuture):
            return InputList(
                tuple(self._pending_binding(step, name, item, known) for item in value)
            )
        if isinstance(value, list | tuple) and any(_is_reference(item) for item in value):
            return InputList(
                tuple(self._pending_binding(step, name, item, known) for item in value)
            )
        if isinstance(value, unmapped):
            raise StepCallError(
                f"{what} is {value!r}; unmapped() only applies to .map() and .product()"
            )
        if isinstance(value, StepOutput):
            raise StepCallError(f"{what} is {value!r}, a placeholder of a static pipeline")
        check_json_value(value, what)
        return Param(value)

    def _chunk_binding(self, chunk: ArtifactChunk, what: str, known: _Known) -> Any:
        source = chunk.artifact
        if isinstance(source, OutputArtifact):
            self._check_same_run(source.run_id, what)
            known.versions[source.record.id] = source.record
            known.producers[source.invocation_id] = None
            return ArtifactRef(source.record.id, chunk.index)
        self._check_same_run(source._state.run_id, what)
        index = self._single_output(source, what)
        known.producers[source.invocation_id] = None
        return _FromState(source._state, index, chunk.index)

    def _single_output(self, future: StepFuture, what: str) -> int:
        if isinstance(future, OutputFuture):
            return future.index
        count = len(future._state.output_names)
        if count == 1:
            return 0
        if count == 0:
            raise StepCallError(
                f"{what} is {future!r}, whose step has no outputs; use after= to wait for it"
            )
        raise StepCallError(
            f"{what} is {future!r}, whose step has {count} outputs "
            f"{list(future._state.output_names)}; pass one of them, e.g. future[0] or "
            f"future[{future._state.output_names[0]!r}]"
        )

    def _check_same_run(self, run_id: str, what: str) -> None:
        if run_id != self.run.id:
            raise StepCallError(
                f"{what} comes from another pipeline run ({run_id}); step outputs and futures "
                "can only be passed on within the run that produced them"
            )

    def _dependencies(
        self, step: Step[..., Any], inputs: dict[str, Any], after: Any, known: _Known
    ) -> tuple[list[InvocationState], list[str]]:
        # Data edges in input order (the producers of artifacts and futures alike), then
        # after= edges, as for static runs.
        states: dict[int, InvocationState] = {}
        upstream: dict[str, None] = dict(known.producers)

        def visit(binding: Any) -> None:
            if isinstance(binding, _FromState):
                states[id(binding.state)] = binding.state
            elif isinstance(binding, InputList):
                for item in binding.items:
                    visit(item)

        for binding in inputs.values():
            visit(binding)
        for item in _as_list(after):
            for state in self._after_states(step, item):
                states[id(state)] = state
                upstream[state.invocation_id] = None
        return list(states.values()), list(upstream)

    def _after_states(self, step: Step[..., Any], item: Any) -> list[InvocationState]:
        what = f"after= of step {step.name!r}"
        if isinstance(item, StepFuture):
            self._check_same_run(item._state.run_id, what)
            return [item._state]
        if isinstance(item, MapResultsFuture):
            for future in item:
                self._check_same_run(future._state.run_id, what)
            return [future._state for future in item]
        if isinstance(item, OutputArtifact):
            # Checked first: another run's invocation id may name one of this run's too.
            self._check_same_run(item.run_id, what)
            state = self._states.get(item.invocation_id)
            return [] if state is None else [state]
        if isinstance(item, str):
            with self._lock:
                state = self._states.get(item)
                known = ", ".join(repr(k) for k in self._states) or "none yet"
            if state is None:
                raise StepCallError(
                    f"step {step.name!r} has after={item!r}, which names no earlier "
                    f"invocation of run {self.run.name!r}; known invocations: {known}"
                )
            return [state]
        raise StepCallError(
            f"step {step.name!r} has after={describe(item)}; accepted: invocation ids, "
            "futures, output artifacts, map results, or a list of these"
        )

    # -------------------------------------------------------------- map and product

    def map_step(
        self, step: Step[..., Any], kwargs: dict[str, Any], *, product: bool, after: Any
    ) -> MapResultsFuture:
        verb = "product" if product else "map"
        fixed = {k: v.value for k, v in kwargs.items() if isinstance(v, unmapped)}
        mapped = {
            name: self._split(step, name, value, verb)
            for name, value in kwargs.items()
            if not isinstance(value, unmapped)
        }
        if not mapped:
            raise StepCallError(
                f"{step.name}.{verb}() got no input to map over; pass at least one sequence "
                "(wrap inputs that every invocation shares in unmapped(...))"
            )
        if product:
            combinations = list(itertools.product(*mapped.values()))
        else:
            lengths = {name: len(items) for name, items in mapped.items()}
            if len(set(lengths.values())) > 1:
                listed = ", ".join(f"{name!r} has {length}" for name, length in lengths.items())
                raise StepCallError(
                    f"{step.name}.map() zips its inputs, which need equal lengths: {listed} "
                    "items; use .product() for every combination, or unmapped(...) for inputs "
                    "shared by every invocation"
                )
            combinations = list(zip(*mapped.values(), strict=True))
        with self._lock:
            maps = self._map_counts.get(step.name, 0) + 1
            self._map_counts[step.name] = maps
            prefix = f"map:{step.name}" if maps == 1 else f"map:{step.name}_{maps}"
        futures = [
            self.call_step(
                step,
                (),
                {**fixed, **dict(zip(mapped, combination, strict=True))},
                invocation_id=f"{prefix}:{index}",
                after=after,
                concurrent=True,
                internal_id=True,
            )
            for index, combination in enumerate(combinations)
        ]
        return MapResultsFuture(futures, step.output_names)

    def _split(self, step: Step[..., Any], name: str, value: Any, verb: str) -> list[Any]:
        what = f"input {name!r} of {step.name}.{verb}()"
        if isinstance(value, list | tuple):
            return list(value)
        if isinstance(value, MapResultsFuture):
            return list(value)
        if isinstance(value, StepFuture):
            self._check_same_run(value._state.run_id, what)
            index = self._single_output(value, what)
            value.wait()
            value._state.raise_if_failed()
            value = value._state.outputs[index]
        if isinstance(value, OutputArtifact):
            self._check_same_run(value.run_id, what)
            return [value.chunk(i) for i in range(self._item_count(value.record, what))]
        raise StepCallError(
            f"{what} is {describe(value)}, which cannot be split into items; accepted: a list "
            "or tuple, a step output (or a future of one) whose materializer can split it, or "
            "the results of another map"
        )

    def _item_count(self, record: ArtifactVersionRecord, what: str) -> int:
        materializer_class = resolve_materializer(record.materializer)
        if not materializer_class.splittable():
            raise MaterializerError(
                f"{what} is artifact {record.name!r} version {record.version}, stored by "
                f"{record.materializer}, which cannot split it into items; map over a list, "
                "tuple, numpy array or data frame, or give the materializer item_count() and "
                "load_item()"
            )
        materializer = materializer_class(self.stores.artifacts.location(record.uri))
        try:
            return materializer.item_count()
        except KstepError as error:
            raise MaterializerError(f"{what} cannot be split: {error}") from None

    # -------------------------------------------------------------- starting invocations

    def _when_ready(self, pending: _Pending) -> None:
        remaining = [len(pending.dependencies)]
        if not remaining[0]:
            self._enqueue(pending)
            return
        counter_lock = threading.Lock()

        def one_done(_: InvocationState) -> None:
            with counter_lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._enqueue(pending)

        for dependency in pending.dependencies:
            dependency.on_done(one_done)

    def _enqueue(self, pending: _Pending) -> None:
        # A queue drained in a loop, not recursion: a long chain of cache hits would
        # otherwise finish inside ever deeper callbacks.
        with self._lock:
            self._ready.append(pending)
        if getattr(self._draining, "active", False):
            return
        self._draining.active = True
        try:
            while True:
                with self._lock:
                    if not self._ready:
                        break
                    item = self._ready.popleft()
                self._start(item)
        finally:
            self._draining.active = False

    def _start(self, pending: _Pending) -> None:
        try:
            self._start_or_skip(pending)
        except BaseException as error:  # reported through the invocation
            logger.debug("Invocation %r could not start: %r", pending.invocation_id, error)
            self._finish(pending.state, "failed", error=error)

    def _start_or_skip(self, pending: _Pending) -> None:
        if self._stopping:
            self._skip(
                pending,
                ExecutionError(
                    f"step {pending.invocation_id!r} was not started because {_STOPPING}"
                ),
            )
            return
        for dependency in pending.dependencies:
            if dependency.status not in ("completed", "cached"):
                error = UpstreamFailed(pending.invocation_id, dependency.invocation_id)
                error.__cause__ = dependency.error
                self._skip(pending, error, root=dependency.root)
                return

        versions = dict(pending.known)
        inputs = {name: self._resolve(b, versions) for name, b in pending.inputs.items()}
        prepared = self.launcher.prepare(
            pending.invocation_id, pending.step, inputs, versions, pending.upstream
        )
        reused = self.launcher.try_replay(prepared)
        if reused is not None:
            self._complete(pending, "completed", reused)
            return
        cached = self.launcher.try_cache(prepared)
        if cached is not None:
            self._complete(pending, "cached", cached)
            return
        self._attempt(pending, prepared)

    def _resolve(self, binding: Any, versions: dict[str, ArtifactVersionRecord]) -> Binding:
        if isinstance(binding, _FromState):
            record = binding.state.outputs[binding.index].record
            versions[record.id] = record
            return ArtifactRef(record.id, binding.item)
        if isinstance(binding, InputList):
            return InputList(tuple(self._resolve(item, versions) for item in binding.items))
        return binding  # type: ignore[no-any-return]

    def _attempt(self, pending: _Pending, prepared: PreparedInvocation) -> None:
        def done(outcome: StepOutcome) -> None:
            self._attempt_done(pending, prepared, outcome)

        handle = self.launcher.start(prepared, done)
        with self._lock:
            if not pending.state.done():
                self._running[pending.invocation_id] = handle
            stopping = self._stopping
        # The run may have begun stopping while this attempt was being started.
        if stopping:
            handle.withdraw(_STOPPING)

    def _attempt_done(
        self, pending: _Pending, prepared: PreparedInvocation, outcome: StepOutcome
    ) -> None:
        with self._lock:
            self._running.pop(pending.invocation_id, None)
            stopping = self._stopping
        if outcome.status == "completed":
            self._complete(pending, "completed", outcome.outputs)
            return
        if outcome.status == "retrying" and not stopping:
            wait = prepared.step.config.retry.wait_before(prepared.attempts + 1)
            timer = threading.Timer(wait, self._retry, (pending, prepared))
            timer.daemon = True
            timer.start()
            return
        if outcome.status == "retrying":
            self.stores.metadata.update_step_run(prepared.step_run_ids[-1], status="failed")
        status = outcome.status if outcome.status in ("cancelled", "skipped") else "failed"
        self._finish(pending.state, status, error=outcome.error)

    def _retry(self, pending: _Pending, prepared: PreparedInvocation) -> None:
        try:
            if self._stopping:
                self.stores.metadata.update_step_run(prepared.step_run_ids[-1], status="failed")
                error = ExecutionError(
                    f"step {pending.invocation_id!r} was not retried: the run is stopping"
                )
                self._finish(pending.state, "failed", error=error)
                return
            self._attempt(pending, prepared)
        except BaseException as error:  # reported through the invocation
            self._finish(pending.state, "failed", error=error)

    def _complete(
        self, pending: _Pending, status: str, outputs: dict[str, ArtifactVersionRecord]
    ) -> None:
        artifacts = tuple(
            OutputArtifact(outputs[name], pending.invocation_id, name, self.run.id, self._load)
            for name in pending.step.output_names
        )
        self._finish(pending.state, status, artifacts)

    def _load(self, record: ArtifactVersionRecord, item: int | None) -> Any:
        return load_artifact(record, self.stores, item)

    def _skip(
        self, pending: _Pending, error: BaseException, root: InvocationState | None = None
    ) -> None:
        self.launcher.record_skipped(
            pending.invocation_id, pending.step, pending.upstream, str(error)
        )
        self._finish(pending.state, "skipped", error=error, root=root)

    def _finish(
        self,
        state: InvocationState,
        status: str,
        outputs: tuple[OutputArtifact, ...] = (),
        error: BaseException | None = None,
        root: InvocationState | None = None,
    ) -> None:
        state.finish(status, outputs, error, root)
        with self._lock:
            self._unfinished -= 1
            self._idle.notify_all()

    # -------------------------------------------------------------- the run's end

    def finish(self, function_error: BaseException | None) -> RunResult:
        """Wait for every invocation to end and decide the run's outcome."""
        interrupted = isinstance(function_error, KeyboardInterrupt)
        # An interrupt (Ctrl-C) asks to stop everything, whatever the execution mode.
        mode = "fail_fast" if interrupted else self.pipeline.execution_mode
        if function_error is not None and mode != "continue_on_failure":
            with self._lock:
                self._stopping = True
                running = list(self._running.values())
            # Attempts still waiting for a worker or an isolated slot never start.
            for attempt in running:
                attempt.withdraw(_STOPPING)
            if mode == "fail_fast":
                for attempt in running:
                    attempt.cancel()
        with self._lock:
            while self._unfinished:
                self._idle.wait()
            states = dict(self._states)

        if interrupted:
            return RunResult("cancelled", None, function_error)
        if function_error is not None:
            raised = next((s for s in states.values() if s.error is function_error), None)
            if raised is None:
                return RunResult("failed", None, function_error)
            # A step skipped for its upstream's failure is not the failing step: its root is.
            return RunResult("failed", raised.root.invocation_id, raised.root.error)
        for invocation_id, state in states.items():
            if state.status == "failed" and state.root is state and not state.observed:
                return RunResult("failed", invocation_id, state.error)
        if any(state.status == "cancelled" for state in states.values()):
            return RunResult("cancelled")
        return RunResult("completed")


def _is_reference(value: Any) -> bool:
    return isinstance(value, OutputArtifact | ArtifactChunk | StepFuture | MapResultsFuture)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]
