"""The local engine: runs pipelines in the calling process, with nothing to set up.

Inline steps run on a thread pool, isolated steps each in a subprocess through the same
step-runner entry point that Job pods use. Runs, artifacts and logs go to the stores the
settings name (by default SQLite and a directory under `~/.kstep`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from kstep._errors import ExecutionError, RunFailed, StepDefinitionError
from kstep._settings import Settings
from kstep.engine._attempts import AttemptLauncher
from kstep.engine._owner import current_owner, owner_is_alive
from kstep.engine._static import RunResult, StaticScheduler, describe_failure
from kstep.runner import RunInfo
from kstep.stores import Stores
from kstep.stores.metadata import RunRecord, StepRunRecord, utcnow
from kstep.stores.metadata.store import new_id

if TYPE_CHECKING:
    from kstep._compile import CompiledPipeline
    from kstep._pipelines import Pipeline
    from kstep.client import Run
    from kstep.engine._replay import ReplayIndex

logger = logging.getLogger(__name__)

# Seconds between looks at step runs that outlived their run's process, when resuming.
_SETTLE_INTERVAL = 0.2

_default: LocalEngine | None = None
_default_lock = threading.Lock()


def run_name(pipeline_name: str) -> str:
    """A unique, readable run name: `<pipeline>-<utc time>-<random>`, DNS-label friendly."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    base = pipeline_name.lower().replace("_", "-").replace(".", "-")
    return f"{base[:200]}-{stamp}-{secrets.token_hex(3)}"


class LocalEngine:
    """Runs pipelines in this process and records them in the stores."""

    def __init__(self, settings: Settings, stores: Stores | None = None) -> None:
        self.settings = settings
        self.stores = stores or Stores.open(settings)
        self.inline_pool = ThreadPoolExecutor(
            max_workers=settings.inline_workers, thread_name_prefix="kstep-inline"
        )
        self.isolated_slots = threading.BoundedSemaphore(settings.isolated_workers)
        self.recover_orphans()

    @classmethod
    def default(cls) -> LocalEngine:
        """The process's engine, built from the environment's settings on first use."""
        global _default
        with _default_lock:
            if _default is None:
                _default = cls(Settings())
            return _default

    @classmethod
    def reset_default(cls) -> None:
        """Forget the process's engine (settings are read again on next use)."""
        global _default
        with _default_lock:
            if _default is not None:
                _default.close()
            _default = None

    def close(self) -> None:
        """Stop the thread pool and release the stores."""
        self.inline_pool.shutdown(wait=True)
        self.stores.metadata.close()

    # -------------------------------------------------------------- runs

    def run(self, pipeline: Pipeline, parameters: dict[str, Any]) -> Run:
        """Run a pipeline to its end; raise `RunFailed` if it ends failed or cancelled."""
        if pipeline.dynamic:
            from kstep.engine._dynamic import run_dynamic

            return run_dynamic(self, pipeline, parameters)
        compiled = pipeline.compile(parameters)
        record = self.start_run(pipeline, parameters, mode="static")
        return self._run_static(pipeline, compiled, record, None)

    def resume(self, id_or_name: str) -> Run:
        """Run an unfinished or failed run's pipeline again, reusing what it completed.

        Every invocation that already completed (matched by invocation id and inputs) is
        reused instead of executed again; the rest run as new attempts of the same run.
        Step processes that outlived the run's own process (isolated steps) are waited for
        first, so that what they complete is reused too.
        """
        from kstep._pipelines import Pipeline
        from kstep.engine._dynamic import run_dynamic
        from kstep.engine._replay import ReplayIndex
        from kstep.runner._references import import_reference

        metadata = self.stores.metadata
        record = metadata.get_run(id_or_name)
        if record.status == "completed":
            raise ExecutionError(
                f"run {record.name!r} already completed; there is nothing to resume"
            )
        if record.status in ("running", "pending") and owner_is_alive(record.owner) is not False:
            raise ExecutionError(
                f"run {record.name!r} is still running (owner {record.owner}); resume it once it "
                "has ended"
            )
        if not record.entrypoint:
            raise ExecutionError(
                f"run {record.name!r} has no importable pipeline (it was defined interactively); "
                "only pipelines defined in a module or script file can be resumed"
            )
        pipeline = import_reference(record.entrypoint)
        if not isinstance(pipeline, Pipeline):
            raise ExecutionError(f"{record.entrypoint!r} is {pipeline!r}, not a @pipeline")
        replay = ReplayIndex(self._settle_step_runs(record))
        now = utcnow()
        metadata.update_run(
            record.id,
            status="running",
            owner=current_owner(),
            started_at=record.started_at or now,
            finished_at=None,
            message=None,
            failed_step=None,
        )
        logger.debug("Run %s is resumed with %s.", record.name, record.entrypoint)
        if pipeline.dynamic:
            return run_dynamic(self, pipeline, record.parameters, record, replay)
        compiled = pipeline.compile(record.parameters)
        return self._run_static(pipeline, compiled, record, replay)

    def _settle_step_runs(self, run: RunRecord) -> list[StepRunRecord]:
        """Wait for the run's step runs still alive elsewhere; fail those whose process died.

        Returns the run's step runs once none is left running.
        """
        metadata = self.stores.metadata
        while True:
            step_runs = metadata.step_runs_of(run.id)
            waiting = False
            for step_run in step_runs:
                if step_run.status not in ("running", "pending"):
                    continue
                # An owner of unknown liveness (another host) is neither waited for nor failed.
                alive = owner_is_alive(step_run.owner)
                if alive is False:
                    pid = (step_run.owner or {}).get("pid")
                    reason = f"the process that ran it (pid {pid}) exited before the run finished"
                    metadata.update_step_run(
                        step_run.id, status="failed", finished_at=utcnow(), error_message=reason
                    )
                elif alive:
                    waiting = True
            if not waiting:
                return metadata.step_runs_of(run.id)
            logger.debug("Run %s waits for step runs still running elsewhere.", run.name)
            time.sleep(_SETTLE_INTERVAL)

    def _run_static(
        self,
        pipeline: Pipeline,
        compiled: CompiledPipeline,
        record: RunRecord,
        replay: ReplayIndex | None,
    ) -> Run:
        info = RunInfo(record.id, record.name, pipeline.name)
        launcher = AttemptLauncher(self, info, pipeline.enable_cache, replay)
        try:
            result = StaticScheduler(launcher, compiled, info).execute()
        except BaseException as error:
            # Interrupted (Ctrl-C) or broken: record how the run ended, then let the original
            # exception through rather than the RunFailed that recording it raises.
            status = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
            with contextlib.suppress(RunFailed):
                self.finish_run(record.id, RunResult(status, error=error), pipeline)
            raise
        return self.finish_run(record.id, result, pipeline)

    def start_run(self, pipeline: Pipeline, parameters: dict[str, Any], mode: str) -> RunRecord:
        """Record a new run of `pipeline` as running, owned by this process."""
        now = utcnow()
        record = RunRecord(
            id=new_id(),
            name=run_name(pipeline.name),
            pipeline_name=pipeline.name,
            mode=mode,
            status="running",
            execution_mode=pipeline.execution_mode,
            parameters=parameters,
            entrypoint=_reference_or_none(pipeline),
            owner=current_owner(),
            created_at=now,
            started_at=now,
            updated_at=now,
        )
        self.stores.metadata.create_run(record)
        logger.debug("Run %s of pipeline %r started.", record.name, pipeline.name)
        return record

    def finish_run(self, run_id: str, result: RunResult, pipeline: Pipeline) -> Run:
        """Record a run's end, call the pipeline's hooks and return the run (or raise)."""
        from kstep.client import Client

        message = describe_failure(result)
        if message is None and result.error is not None:
            error = result.error
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.stores.metadata.update_run(
            run_id,
            status=result.status,
            finished_at=utcnow(),
            message=message,
            failed_step=result.failed_step,
        )
        if result.status == "completed":
            _call_hook(pipeline.on_success, ())
        elif result.status == "failed":
            _call_hook(pipeline.on_failure, (result.error,))
        run = Client(stores=self.stores).get_run(run_id)
        if result.status != "completed":
            raise RunFailed(run, f"pipeline run {run.name!r} ended {result.status}: {message}")
        return run

    # -------------------------------------------------------------- orphans

    def recover_orphans(self) -> list[str]:
        """Fail runs left `running` by a process of this host that no longer exists."""
        failed: list[str] = []
        metadata = self.stores.metadata
        for run in metadata.list_runs(status=["running", "pending"]):
            if owner_is_alive(run.owner) is not False:
                continue
            now = utcnow()
            pid = (run.owner or {}).get("pid")
            reason = f"the process that ran it (pid {pid}) exited before the run finished"
            latest: dict[str, StepRunRecord] = {}
            for step_run in metadata.step_runs_of(run.id):
                latest[step_run.invocation_id] = step_run
                if step_run.status in ("running", "pending") and not owner_is_alive(step_run.owner):
                    metadata.update_step_run(
                        step_run.id, status="failed", finished_at=now, error_message=reason
                    )
            for step_run in latest.values():
                if step_run.status == "retrying":
                    # The process that would have started its next attempt is gone.
                    metadata.update_step_run(step_run.id, status="failed")
            metadata.update_run(run.id, status="failed", finished_at=now, message=reason)
            logger.warning("Run %s was orphaned: %s; it is marked failed.", run.name, reason)
            failed.append(run.id)
        return failed


def _reference_or_none(pipeline: Pipeline) -> str | None:
    try:
        return pipeline.reference
    except StepDefinitionError:
        return None


def _call_hook(hook: Any, arguments: tuple[Any, ...]) -> None:
    if hook is None:
        return
    import inspect

    try:
        accepted = len(inspect.signature(hook).parameters)
        hook(*arguments[:accepted])
    except Exception:
        logger.exception("A pipeline hook failed; the run's outcome stands.")
