"""The StepRun statuses a dynamic run's orchestrator writes for its inline steps.

The orchestrator's launcher runs here on the local engine against stand-ins for the API
server that record every write, in order, hold writes back, or reject StepRuns.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kstep import Pipeline, pipeline, step
from kstep._errors import RunFailed
from kstep._settings import Settings
from kstep.cluster import names
from kstep.cluster._launcher import ClusterLauncher, StepRunTracker
from kstep.engine import LocalEngine
from kstep.engine._dynamic import run_dynamic
from kstep.engine._replay import ReplayIndex
from kstep.runner import RunInfo


@step
def quick(x: int) -> int:
    return x + 1


@pipeline(dynamic=True, enable_cache=False)
def three_quick_steps() -> None:
    quick(quick(quick(1)))


def launch(
    api: Any,
    engine: LocalEngine,
    name: str,
    pipeline: Pipeline = three_quick_steps,
    *,
    record: Any = None,
    replay: ReplayIndex | None = None,
    **options: Any,
) -> tuple[Any, ClusterLauncher]:
    """A run record of `pipeline` (a new one unless given) and the launcher its orchestrator
    would use."""
    if record is None:
        record = engine.start_run(pipeline, {}, mode="dynamic")
    run_object = {
        "apiVersion": "kstep.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"pipelineName": pipeline.name},
    }
    launcher = ClusterLauncher(
        engine,
        RunInfo(record.id, record.name, pipeline.name),
        pipeline,
        replay,
        run_object=run_object,
        tracker=StepRunTracker(api, "default", name),
        **options,
    )
    return record, launcher


class RecordingApi:
    """Creates StepRuns and records status writes; with `hold_running`, a running status is
    held back until the attempt's outcome was sent (or for half a second), as a slow API
    server might do."""

    def __init__(self, hold_running: bool = True) -> None:
        self.hold_running = hold_running
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._outcome_sent: dict[str, threading.Event] = {}
        self._version = 0

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        created = copy.deepcopy(body)
        name = created["metadata"]["name"]
        with self._lock:
            created["metadata"]["uid"] = f"uid-{name}"
            created["metadata"]["resourceVersion"] = self._next_version()
            self.objects[name] = created
            self._outcome_sent[name] = threading.Event()
        return copy.deepcopy(created)

    def patch_namespaced_custom_object_status(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        patch: dict[str, Any],
    ) -> dict[str, Any]:
        phase = patch["status"].get("phase")
        if phase == "running" and self.hold_running:
            self._outcome_sent[name].wait(timeout=0.5)
        else:
            self._outcome_sent[name].set()
        with self._lock:
            self.writes.append((name, phase))
            current = self.objects[name]
            current["status"] = {**(current.get("status") or {}), **patch["status"]}
            current["metadata"]["resourceVersion"] = self._next_version()
            return copy.deepcopy(current)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)


def test_an_inline_steps_running_status_never_lands_after_its_outcome(tmp_path: Path) -> None:
    api = RecordingApi()
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    try:
        record, launcher = launch(api, engine, "three")
        run_dynamic(engine, three_quick_steps, {}, record, None, launcher)
        launcher.close()
    finally:
        engine.close()

    assert {body["status"]["phase"] for body in api.objects.values()} == {"completed"}
    assert len(api.objects) == 3
    for name in api.objects:
        phases = [phase for written, phase in api.writes if written == name]
        assert phases in (["running", "completed"], ["completed"]), (name, phases)


def test_a_quick_inline_steps_running_status_is_never_written(tmp_path: Path) -> None:
    # Each step ends long before its running status is due: its StepRun gets its outcome
    # as its one status write.
    api = RecordingApi(hold_running=False)
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    try:
        record, launcher = launch(api, engine, "quick", running_status_hold=5.0)
        run_dynamic(engine, three_quick_steps, {}, record, None, launcher)
        launcher.close()
    finally:
        engine.close()

    assert len(api.objects) == 3
    assert sorted(api.writes) == sorted((name, "completed") for name in api.objects)


release_slow = threading.Event()


@step
def slow(x: int) -> int:
    release_slow.wait(timeout=30)
    return x * 2


@pipeline(dynamic=True, enable_cache=False)
def one_slow_step() -> None:
    slow(3)


def test_a_running_inline_step_shows_running_once_its_hold_is_over(tmp_path: Path) -> None:
    api = RecordingApi(hold_running=False)
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    release_slow.clear()
    try:
        record, launcher = launch(api, engine, "slow", one_slow_step, running_status_hold=0.05)
        pipeline_thread = threading.Thread(
            target=run_dynamic, args=(engine, one_slow_step, {}, record, None, launcher)
        )
        pipeline_thread.start()
        deadline = time.monotonic() + 30
        while not api.writes and time.monotonic() < deadline:
            time.sleep(0.01)
        running = copy.deepcopy(api.writes)
        release_slow.set()
        pipeline_thread.join(timeout=30)
        launcher.close()
    finally:
        release_slow.set()
        engine.close()

    (name,) = api.objects
    assert running == [(name, "running")]
    assert api.writes == [(name, "running"), (name, "completed")]
    assert api.objects[name]["status"]["outputs"]


class RejectingApi(RecordingApi):
    """Rejects every StepRun creation as an API server rejects an invalid object."""

    def __init__(self) -> None:
        super().__init__(hold_running=False)
        self.rejected = threading.Event()

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.rejected.set()
        error = ApiException(status=422, reason="Unprocessable Entity")
        error.body = '{"message": "spec.inputs: Invalid value: too many"}'
        raise error


rejecting_api = RejectingApi()


@pipeline(dynamic=True, enable_cache=False)
def two_calls_after_a_rejection() -> None:
    quick(1)
    # The first StepRun's creation has been refused by then: the next call reports it.
    rejecting_api.rejected.wait(timeout=30)
    time.sleep(0.1)
    quick(2)


def test_a_steprun_the_api_server_rejects_fails_the_next_call_naming_it(tmp_path: Path) -> None:
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    try:
        record, launcher = launch(rejecting_api, engine, "rejected", two_calls_after_a_rejection)
        with pytest.raises(RunFailed) as failure:
            run_dynamic(engine, two_calls_after_a_rejection, {}, record, None, launcher)
        launcher.close()
    finally:
        engine.close()

    message = str(failure.value)
    assert "creating StepRun default/rejected-quick" in message
    assert "spec.inputs: Invalid value: too many" in message
    assert rejecting_api.writes == []


class StalledApi(RecordingApi):
    """Holds every write, creations and statuses, until released."""

    def __init__(self) -> None:
        super().__init__(hold_running=False)
        self.released = threading.Event()

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.released.wait(timeout=60)
        return super().create_namespaced_custom_object(*args, **kwargs)

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.released.wait(timeout=60)
        return super().patch_namespaced_custom_object_status(*args, **kwargs)


def test_the_pipeline_goes_on_while_status_writes_wait_and_closing_writes_them_all(
    tmp_path: Path,
) -> None:
    api = StalledApi()
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    try:
        record, launcher = launch(api, engine, "stalled")
        finished = threading.Event()

        def run() -> None:
            run_dynamic(engine, three_quick_steps, {}, record, None, launcher)
            finished.set()

        pipeline_thread = threading.Thread(target=run)
        pipeline_thread.start()

        # All three steps run to the end although no StepRun could be written yet.
        assert finished.wait(timeout=30)
        assert api.objects == {}
        assert api.writes == []

        api.released.set()
        launcher.close()
        pipeline_thread.join()
    finally:
        api.released.set()
        engine.close()

    assert len(api.objects) == 3
    assert {body["status"]["phase"] for body in api.objects.values()} == {"completed"}
    assert all(phase == "completed" for _, phase in api.writes[-3:])


class SlowCreatingApi(RecordingApi):
    """Takes a while to create a StepRun, as a busy API server does."""

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        time.sleep(0.3)
        return super().create_namespaced_custom_object(*args, **kwargs)


# The API server of a second orchestrator pod, and whether the StepRun of the step below
# existed each time the step started.
second_pod_api = SlowCreatingApi(hold_running=False)
dies_once_step_run = names.step_run_name("relaunched", "dies_once")
steprun_existed: list[bool] = []


@step
def dies_once(x: int) -> int:
    steprun_existed.append(dies_once_step_run in second_pod_api.objects)
    if len(steprun_existed) == 1:
        raise RuntimeError("the orchestrator pod dies here")
    return x


@pipeline(dynamic=True, enable_cache=False)
def one_step_dying_once() -> None:
    dies_once(1)


def test_a_step_run_again_after_its_pod_died_has_its_steprun_before_it_starts(
    tmp_path: Path,
) -> None:
    # A pod that dies inside a step may die before its writer created the step's StepRun.
    # The next pod creates it before the step runs again: should that pod die too, the
    # StepRun is there for the operator to give the run's end.
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    steprun_existed.clear()
    try:
        record, first = launch(RecordingApi(), engine, "relaunched", one_step_dying_once)
        with pytest.raises(RunFailed):
            run_dynamic(engine, one_step_dying_once, {}, record, None, first)
        first.close()

        replay = ReplayIndex(engine.stores.metadata.step_runs_of(record.id))
        _, second = launch(
            second_pod_api, engine, "relaunched", one_step_dying_once, record=record, replay=replay
        )
        run_dynamic(engine, one_step_dying_once, {}, record, replay, second)
        second.close()
    finally:
        engine.close()

    assert steprun_existed == [False, True]
    body = second_pod_api.objects[dies_once_step_run]
    assert body["status"]["phase"] == "completed"
    assert body["status"]["attempts"] == 2
