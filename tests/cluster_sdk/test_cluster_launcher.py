"""The StepRun statuses a dynamic run's orchestrator writes for its inline steps.

The orchestrator's launcher runs here on the local engine against stand-ins for the API
server that record every status write, in order, or hold status writes back.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from kstep import pipeline, step
from kstep._settings import Settings
from kstep.cluster._launcher import ClusterLauncher, StepRunTracker
from kstep.engine import LocalEngine
from kstep.engine._dynamic import run_dynamic
from kstep.runner import RunInfo


@step
def quick(x: int) -> int:
    return x + 1


@pipeline(dynamic=True, enable_cache=False)
def three_quick_steps() -> None:
    quick(quick(quick(1)))


def launch(api: Any, engine: LocalEngine, name: str) -> tuple[Any, ClusterLauncher]:
    """A run record of `three_quick_steps` and the launcher its orchestrator would use."""
    record = engine.start_run(three_quick_steps, {}, mode="dynamic")
    run_object = {
        "apiVersion": "kstep.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"pipelineName": three_quick_steps.name},
    }
    launcher = ClusterLauncher(
        engine,
        RunInfo(record.id, record.name, three_quick_steps.name),
        three_quick_steps,
        None,
        run_object=run_object,
        tracker=StepRunTracker(api, "default", name),
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


class StalledStatusApi(RecordingApi):
    """Takes StepRun creations at once but holds every status write until released."""

    def __init__(self) -> None:
        super().__init__(hold_running=False)
        self.released = threading.Event()

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.released.wait(timeout=60)
        return super().patch_namespaced_custom_object_status(*args, **kwargs)


def test_the_pipeline_goes_on_while_status_writes_wait_and_closing_writes_them_all(
    tmp_path: Path,
) -> None:
    api = StalledStatusApi()
    engine = LocalEngine(Settings(home=str(tmp_path / "home")))
    try:
        record, launcher = launch(api, engine, "stalled")
        finished = threading.Event()

        def run() -> None:
            run_dynamic(engine, three_quick_steps, {}, record, None, launcher)
            finished.set()

        pipeline_thread = threading.Thread(target=run)
        pipeline_thread.start()

        # All three steps run to the end although no status could be written yet.
        assert finished.wait(timeout=30)
        assert len(api.objects) == 3
        assert api.writes == []

        api.released.set()
        launcher.close()
        pipeline_thread.join()
    finally:
        api.released.set()
        engine.close()

    assert {body["status"]["phase"] for body in api.objects.values()} == {"completed"}
    assert all(phase == "completed" for _, phase in api.writes[-3:])
