"""`kstep-orchestrator`: runs a dynamic run's pipeline function in its orchestrator pod.

The operator starts it as a Job for a dynamic PipelineRun, with the run's name and namespace
in `KSTEP_RUN_NAME` and `KSTEP_RUN_NAMESPACE`, the store settings from the run's Secret, and a
service account that may read its PipelineRun and manage the run's StepRuns. It unpacks the
run's code, replays what earlier orchestrator pods of the run completed, runs the function,
records the run's outcome in the metadata store and exits: 0 when the run completed,
`ORCHESTRATOR_RUN_FAILED` when it failed, `ORCHESTRATOR_CANNOT_START` when the run's
entrypoint cannot be imported. Its own output is stored as the run's log.

With `KSTEP_ORCHESTRATOR_PROFILE_PATH` set, every thread of the run is profiled (cProfile)
and the merged statistics are written to that path (`{run}` in it becomes the run's name)
when the run ends; for finding where an orchestrator's time goes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the orchestrator process."""
    from kstep.cluster.specs import ORCHESTRATOR_CANNOT_START, ORCHESTRATOR_RUN_FAILED

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    name = os.environ.get("KSTEP_RUN_NAME")
    namespace = os.environ.get("KSTEP_RUN_NAMESPACE")
    if not name or not namespace:
        _terminate("KSTEP_RUN_NAME and KSTEP_RUN_NAMESPACE must name the PipelineRun to run")
        return ORCHESTRATOR_CANNOT_START
    try:
        setup = _set_up(name, namespace)
    except Exception as error:
        logger.exception("The run %s/%s cannot start.", namespace, name)
        _terminate(f"the run cannot start: {error}")
        return ORCHESTRATOR_CANNOT_START
    with _profiling(os.environ.get("KSTEP_ORCHESTRATOR_PROFILE_PATH"), name):
        return _orchestrate(*setup, failed_code=ORCHESTRATOR_RUN_FAILED)


@contextlib.contextmanager
def _profiling(path: str | None, run_name: str) -> Iterator[None]:
    """Profile this thread and every thread started meanwhile; write the merged statistics."""
    if not path:
        yield
        return
    import cProfile
    import pstats

    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()

    def first_event(*_: Any) -> None:
        # A profiler only sees the thread that enabled it: each new thread (the inline pool's,
        # the StepRun watch's) enables its own on its first event, which replaces this hook.
        profiler = cProfile.Profile()
        with lock:
            profilers.append(profiler)
        profiler.enable()

    main_profiler = cProfile.Profile()
    profilers.append(main_profiler)
    threading.setprofile(first_event)
    main_profiler.enable()
    try:
        yield
    finally:
        main_profiler.disable()
        threading.setprofile(None)
        try:
            with lock:
                statistics = pstats.Stats(*profilers)
            target = path.replace("{run}", run_name)
            statistics.dump_stats(target)
            logger.info("The orchestrator's profile is in %s.", target)
        except Exception:
            logger.exception("The orchestrator's profile could not be written.")


def _set_up(name: str, namespace: str) -> tuple[Any, ...]:
    from kubernetes import client

    from kstep._pipelines import Pipeline
    from kstep._settings import Settings
    from kstep.cluster._kube import connect
    from kstep.cluster.specs import GROUP, VERSION, CodeSpec
    from kstep.engine import LocalEngine
    from kstep.runner._references import import_reference

    api_client, _ = connect()
    api = client.CustomObjectsApi(api_client)
    run_object: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, "pipelineruns", name
    )
    spec = run_object["spec"]
    settings = Settings()
    engine = LocalEngine(settings)

    code = CodeSpec.model_validate(spec.get("code") or {})
    if code.archive:
        from kstep.cluster.code import unpack_code

        directory = unpack_code(code, engine.stores.artifacts, os.path.join(settings.home, "code"))
        sys.path.insert(0, directory)
    pipeline = import_reference(spec["entrypoint"])
    if not isinstance(pipeline, Pipeline) or not pipeline.dynamic:
        raise TypeError(f"{spec['entrypoint']!r} is {pipeline!r}, not a dynamic @pipeline")
    return api, run_object, engine, pipeline


def _orchestrate(
    api: Any, run_object: dict[str, Any], engine: Any, pipeline: Any, *, failed_code: int
) -> int:
    from kstep._errors import RunFailed
    from kstep.cluster import names
    from kstep.cluster._launcher import ClusterLauncher, StepRunTracker
    from kstep.engine._dynamic import run_dynamic
    from kstep.engine._replay import ReplayIndex
    from kstep.runner import RunInfo
    from kstep.runner._logs import capture

    metadata = engine.stores.metadata
    run_id = names.run_id(run_object["metadata"]["uid"])
    record = metadata.get_run(run_id)
    logs_uri = engine.stores.artifacts.log_uri(run_id, "orchestrator")
    metadata.update_run(
        run_id,
        status="running",
        logs_uri=logs_uri,
        owner={**(record.owner or {}), "pod": os.environ.get("KSTEP_POD_NAME")},
    )
    step_runs = metadata.step_runs_of(run_id)
    _fail_lost_attempts(metadata, step_runs)
    replay = ReplayIndex(step_runs)
    tracker = StepRunTracker(
        api, run_object["metadata"]["namespace"], run_object["metadata"]["name"]
    )
    tracker.start()
    info = RunInfo(record.id, record.name, pipeline.name)
    launcher = ClusterLauncher(
        engine, info, pipeline, replay, run_object=run_object, tracker=tracker
    )

    writer = engine.stores.artifacts.open_log(logs_uri)
    try:
        with capture(writer, echo=True):
            try:
                run = run_dynamic(
                    engine,
                    pipeline,
                    dict(run_object["spec"].get("parameters") or {}),
                    record,
                    replay,
                    launcher,
                )
            finally:
                # Every StepRun shows its final status before the Job ends the run.
                launcher.close()
        _terminate(json.dumps({"status": str(run.status), "runId": run_id}))
        return 0
    except RunFailed as failure:
        _terminate(json.dumps({"status": "failed", "runId": run_id, "message": str(failure)}))
        return failed_code
    finally:
        writer.close()
        tracker.stop()


def _fail_lost_attempts(metadata: Any, step_runs: list[Any]) -> None:
    """Fail the inline attempts an earlier orchestrator pod of this run left unfinished.

    A run has one orchestrator pod at a time and its inline steps run on that pod's threads,
    so an inline attempt still pending or running when a pod starts died with the pod before
    it; the replay runs it again as the next attempt.
    """
    from kstep.stores.metadata import utcnow

    for row in step_runs:
        if row.runtime == "inline" and row.status in ("pending", "running"):
            metadata.update_step_run(
                row.id,
                status="failed",
                finished_at=utcnow(),
                error_message="the orchestrator running it stopped; the step runs again",
            )


def _terminate(message: str) -> None:
    path = os.environ.get("KSTEP_TERMINATION_MESSAGE_PATH")
    print(message, file=sys.stderr)
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(message[:4096])
    except OSError:
        logger.warning("The termination message cannot be written to %s.", path)


if __name__ == "__main__":
    sys.exit(main())
