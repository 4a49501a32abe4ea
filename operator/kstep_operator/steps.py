"""The StepRun controller: attempts of one invocation, as Jobs or inline steps.

An attempt's outcome is what the step-runner recorded in the metadata store; Jobs and the
inline executor only execute. So every decision here can be taken again after a crash:
an attempt's row and Job have deterministic ids and names, an attempt already recorded as
ended is never started again, and one the executor still runs is left alone.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from kstep.cluster import names
from kstep.cluster.objects import succeeded_condition
from kstep.materializers import materializer_version, resolve_materializer
from kstep.stores.metadata import StepRunRecord, utcnow
from kstep_operator.context import Operator, describe
from kstep_operator.inline.client import ExecutorUnavailable
from kstep_operator.kube import JOBS, STEP_RUNS, ApiError, now_iso, parse_time
from kstep_operator.reconcile import dag
from kstep_operator.reconcile.manifests import job_manifest, job_outcome, runner_request

logger = logging.getLogger(__name__)

ACTIVE = ("pending", "running", "retrying")
_ENDED_ROWS = ("completed", "failed", "retrying", "cancelled")


def reconcile_step(op: Operator, namespace: str, name: str) -> None:
    """Move one StepRun along: start an attempt, notice its end, retry or finish."""
    with op.step_locks.hold((namespace, name)):
        _reconcile_step(op, namespace, name)


def _reconcile_step(op: Operator, namespace: str, name: str) -> None:
    step_run = op.cache.step(namespace, name)
    if step_run is None or step_run["metadata"].get("deletionTimestamp"):
        return
    status = step_run.get("status") or {}
    phase = status.get("phase") or "pending"
    if phase in dag.TERMINAL or not operator_runs(step_run):
        return
    run = op.cache.run(namespace, step_run["spec"]["pipelineRun"])
    if run is None:
        return
    run_phase = (run.get("status") or {}).get("phase")
    if run_phase in ("completed", "failed", "cancelled"):
        cancel(op, step_run, f"the run ended {run_phase}")
        return

    if phase == "pending":
        # The run controller starts first attempts, right after creating the StepRun.
        op.enqueue_run(namespace, step_run["spec"]["pipelineRun"])
    elif phase == "retrying":
        due = parse_time(status.get("retryAt"))
        wait = 0.0 if due is None else (due - _now()).total_seconds()
        if wait > 0:
            op.enqueue_step(namespace, name, after=wait)
            return
        start_attempt(op, step_run, int(status.get("attempts", 1)) + 1, run=run)
    else:
        _check_attempt(op, step_run, run)


def operator_runs(step_run: dict[str, Any]) -> bool:
    """Whether the operator runs this StepRun's attempts (not a dynamic run's orchestrator)."""
    return bool(step_run["spec"].get("executor", "operator") == "operator")


def needs_attention(op: Operator, step_run: dict[str, Any]) -> bool:
    """Whether a running StepRun should be looked at by the periodic sweep."""
    if not operator_runs(step_run):
        return False
    status = step_run.get("status") or {}
    phase = status.get("phase")
    if phase == "retrying":
        due = parse_time(status.get("retryAt"))
        return due is None or due <= _now()
    if phase != "running":
        return False
    attempt_id = status.get("stepRunId") or ""
    if step_run["spec"]["definition"].get("runtime") == "isolated":
        job = op.cache.job(step_run["metadata"]["namespace"], status.get("jobName") or "")
        return job is None or job_outcome(job) is not None
    return not op.executor.knows(attempt_id)


# ------------------------------------------------------------------ attempts


def start_attempt(
    op: Operator,
    step_run: dict[str, Any],
    attempt: int,
    *,
    run: dict[str, Any],
    new: bool = False,
) -> None:
    """Start (or find already started) attempt `attempt` of a StepRun.

    `new` says the StepRun was created just now: no attempt of it can be recorded yet.
    """
    metadata = step_run["metadata"]
    with op.step_locks.hold((metadata["namespace"], metadata["name"])):
        _start_attempt(op, step_run, attempt, run, new)


def _start_attempt(
    op: Operator, step_run: dict[str, Any], attempt: int, run: dict[str, Any], new: bool
) -> None:
    metadata = step_run["metadata"]
    spec = step_run["spec"]
    definition = spec["definition"]
    isolated = definition.get("runtime") == "isolated"
    attempt_id = names.attempt_id(metadata["uid"], attempt)

    # An attempt recorded as ended already (the operator died before noticing): settle it.
    row = None if new else _row(op, attempt_id)
    if row is not None and row.status in _ENDED_ROWS:
        _settle(op, step_run, attempt, row)
        return
    if row is None:
        _insert_row(op, step_run, run, attempt, attempt_id, isolated)

    request = runner_request(
        step_run,
        run_name=_run_name(op, run),
        pipeline_name=run["spec"]["pipelineName"],
        attempt=attempt,
        step_run_id=attempt_id,
    )
    job_name = None
    if isolated:
        job = op.kube.create_or_get(
            JOBS, metadata["namespace"], job_manifest(step_run, attempt, request, op.defaults)
        )
        op.cache.put_job(job)
        job_name = job["metadata"]["name"]
    else:
        env = op.store_environment(metadata["namespace"], spec.get("storeSecret"))
        op.track_inline(attempt_id, metadata["namespace"], metadata["name"])
        # Only once the executor listed what it runs can "unknown" mean "not started".
        if not op.executor.ready.wait(timeout=30):
            raise ExecutorUnavailable("the inline executor is unreachable")
        if not op.executor.knows(attempt_id):
            op.executor.submit(request, env or {}, spec.get("code") or {})

    now = now_iso()
    status: dict[str, Any] = {
        "phase": "running",
        "attempts": attempt,
        "stepRunId": attempt_id,
        "jobName": job_name,
        "reason": None,
        "message": None,
        "retryAt": None,
        "observedGeneration": metadata.get("generation"),
    }
    first = not (step_run.get("status") or {}).get("startTime")
    if first:
        status["startTime"] = now
    _patch(op, step_run, status)
    if attempt > 1:
        op.kube.post_event(step_run, "Retrying", f"attempt {attempt} started")
    elif first:
        where = f"in Job {job_name}" if job_name else "on the inline executor"
        op.kube.post_event(step_run, "Started", f"attempt 1 started {where}")


def _insert_row(
    op: Operator,
    step_run: dict[str, Any],
    run: dict[str, Any],
    attempt: int,
    attempt_id: str,
    isolated: bool,
) -> None:
    spec = step_run["spec"]
    now = utcnow()
    record = StepRunRecord(
        id=attempt_id,
        run_id=spec["runId"],
        invocation_id=spec["invocationId"],
        step_name=spec["definition"]["step"],
        attempt=attempt,
        status="running",
        runtime="isolated" if isolated else "inline",
        parameters={k: v["param"] for k, v in (spec.get("inputs") or {}).items() if "param" in v},
        upstream=list(spec.get("upstream") or []),
        cache_key=spec.get("cacheKey"),
        owner={
            "kind": "StepRun",
            "namespace": step_run["metadata"]["namespace"],
            "name": step_run["metadata"]["name"],
        },
        created_at=now,
        started_at=now,
        updated_at=now,
    )
    edges = _input_edges(spec.get("inputs") or {})
    try:
        op.stores.metadata.start_step_run(record, edges)
    except Exception as error:
        if _row(op, attempt_id) is None:
            raise
        logger.debug("Attempt %s was already recorded (%s).", attempt_id, error)


def _input_edges(inputs: dict[str, Any]) -> list[Any]:
    from kstep.stores.metadata import InputEdge

    edges = []
    for name, value in inputs.items():
        if "artifact" in value:
            edges.append(InputEdge(name, value["artifact"], -1, value.get("item")))
        for position, item in enumerate(value.get("list") or []):
            if "artifact" in item:
                edges.append(InputEdge(name, item["artifact"], position, item.get("item")))
    return edges


def _check_attempt(op: Operator, step_run: dict[str, Any], run: dict[str, Any]) -> None:
    status = step_run.get("status") or {}
    attempt = int(status.get("attempts") or 1)
    attempt_id = status.get("stepRunId") or names.attempt_id(step_run["metadata"]["uid"], attempt)
    row = _row(op, attempt_id)
    if row is not None and row.status in _ENDED_ROWS:
        _settle(op, step_run, attempt, row)
        return

    if step_run["spec"]["definition"].get("runtime") == "isolated":
        _check_job(op, step_run, attempt, attempt_id)
        return
    if op.executor.knows(attempt_id) or not op.executor.ready.is_set():
        return
    # The executor forgets a step once it is done, and the step records its outcome before
    # that: read the row again, for the step may have ended since the first read.
    row = _row(op, attempt_id)
    if row is not None and row.status in _ENDED_ROWS:
        _settle(op, step_run, attempt, row)
        return
    _lose(
        op,
        step_run,
        attempt,
        attempt_id,
        "InlineWorkerLost",
        "the inline worker running it stopped before recording a result",
    )


def _check_job(op: Operator, step_run: dict[str, Any], attempt: int, attempt_id: str) -> None:
    metadata = step_run["metadata"]
    job_name = (step_run.get("status") or {}).get("jobName") or names.job_name(
        metadata["name"], attempt
    )
    job = op.cache.job(metadata["namespace"], job_name)
    if job is None:
        started = parse_time((step_run.get("status") or {}).get("startTime"))
        if started is not None and (_now() - started).total_seconds() < (
            op.settings.lost_job_grace_seconds
        ):
            op.enqueue_step(
                metadata["namespace"], metadata["name"], after=op.settings.lost_job_grace_seconds
            )
            return
        job = op.kube.get(JOBS, metadata["namespace"], job_name)
        row = _row(op, attempt_id) if job is None else None
        if row is not None and row.status in _ENDED_ROWS:
            # Deleted after its step recorded an outcome: the outcome stands.
            _settle(op, step_run, attempt, row)
            return
        if job is None:
            _lose(
                op,
                step_run,
                attempt,
                attempt_id,
                "JobDeleted",
                f"its Job {job_name!r} was deleted before the step finished",
            )
            return
        op.cache.put_job(job)
    outcome = job_outcome(job)
    if outcome is None:
        return
    # The Job ended; the runner records the outcome before it exits, so read it again.
    row = _row(op, attempt_id)
    if row is not None and row.status in _ENDED_ROWS:
        _settle(op, step_run, attempt, row)
        return
    _, why = outcome
    reason = "Timeout" if "DeadlineExceeded" in why else "JobFailed"
    _lose(
        op,
        step_run,
        attempt,
        attempt_id,
        reason,
        f"its Job {job_name!r} ended ({why}) without the step recording a result",
    )


def _lose(
    op: Operator,
    step_run: dict[str, Any],
    attempt: int,
    attempt_id: str,
    reason: str,
    message: str,
) -> None:
    """Record an attempt that ended without the runner recording it, then settle it."""
    final = attempt > _max_retries(step_run)
    logger.warning(
        "Attempt %d of StepRun %s is lost (%s): %s; %s.",
        attempt,
        describe(step_run),
        reason,
        message,
        "the step fails" if final else "it is retried",
    )
    op.stores.metadata.update_step_run(
        attempt_id,
        status="failed" if final else "retrying",
        finished_at=utcnow(),
        error_type="kstep_operator." + reason,
        error_message=message,
    )
    row = _row(op, attempt_id)
    assert row is not None
    _settle(op, step_run, attempt, row, reason=reason)


def _settle(
    op: Operator, step_run: dict[str, Any], attempt: int, row: Any, reason: str | None = None
) -> None:
    """Turn an ended attempt's row into the StepRun's status (done, retry, or failed)."""
    metadata = step_run["metadata"]
    current = op.cache.step(metadata["namespace"], metadata["name"])
    if current is not None and (current.get("status") or {}).get("phase") in dag.TERMINAL:
        # Cancelled (or settled) meanwhile by another reconcile: that outcome stands.
        return
    runtime = step_run["spec"]["definition"].get("runtime", "inline")
    started = parse_time((step_run.get("status") or {}).get("startTime"))
    now = now_iso()
    if row.status == "completed":
        outputs = op.stores.metadata.outputs_of(row.id)
        # Downstream steps' cache keys need these versions next.
        op.remember_versions(outputs.values())
        _patch(
            op,
            step_run,
            {
                "phase": "completed",
                "attempts": attempt,
                "stepRunId": row.id,
                "outputs": {name: record.id for name, record in outputs.items()},
                "completionTime": now,
                "logsUri": row.logs_uri,
                "reason": "Completed",
                "message": None,
                "retryAt": None,
            },
        )
        _ended(op, step_run, "completed", runtime, started)
        return

    message = f"{row.error_type or 'error'}: {row.error_message or ''}".strip()
    if row.status == "retrying" and attempt <= _max_retries(step_run):
        retry = step_run["spec"]["definition"].get("retry") or {}
        delay = float(retry.get("delaySeconds", 0)) * float(retry.get("backoff", 1)) ** (
            attempt - 1
        )
        due = _now() + datetime.timedelta(seconds=delay)
        _patch(
            op,
            step_run,
            {
                "phase": "retrying",
                "attempts": attempt,
                "stepRunId": row.id,
                "retryAt": due.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "reason": reason or "StepFailed",
                "message": message[:4096],
                "errorType": row.error_type,
            },
        )
        op.kube.post_event(
            step_run, "AttemptFailed", f"attempt {attempt} failed: {message[:200]}", "Warning"
        )
        metadata = step_run["metadata"]
        op.enqueue_step(metadata["namespace"], metadata["name"], after=delay)
        return

    phase = "cancelled" if row.status == "cancelled" else "failed"
    if row.status == "retrying":
        op.stores.metadata.update_step_run(row.id, status="failed")
    _patch(
        op,
        step_run,
        {
            "phase": phase,
            "attempts": attempt,
            "stepRunId": row.id,
            "completionTime": now,
            "logsUri": row.logs_uri,
            "reason": reason or ("Cancelled" if phase == "cancelled" else "StepFailed"),
            "message": message[:4096],
            "errorType": row.error_type,
            "retryAt": None,
        },
    )
    _ended(op, step_run, phase, runtime, started)


def _ended(
    op: Operator,
    step_run: dict[str, Any],
    phase: str,
    runtime: str,
    started: datetime.datetime | None,
) -> None:
    op.metrics.steps.labels(phase, runtime).inc()
    if started is not None:
        op.metrics.step_duration.labels(runtime).observe((_now() - started).total_seconds())
    reason = {"completed": "Completed", "failed": "Failed", "cancelled": "Cancelled"}[phase]
    event_type = "Normal" if phase == "completed" else "Warning"
    message = (step_run.get("status") or {}).get("message") or f"the step {phase}"
    op.kube.post_event(step_run, reason, message, event_type)
    metadata = step_run["metadata"]
    op.enqueue_run(metadata["namespace"], step_run["spec"]["pipelineRun"])
    op.capacity_freed()


# ------------------------------------------------------------------ cache and cancel


def serve_from_cache(
    op: Operator,
    step_run: dict[str, Any],
    run: dict[str, Any],
    cache_key: str,
    definition: dict[str, Any],
) -> bool:
    """Record a cache hit for a new StepRun, if a valid one exists; no pod, no thread."""
    expires = definition.get("cacheExpiresAfterSeconds")
    not_before = utcnow() - datetime.timedelta(seconds=expires) if expires else None
    hit = op.stores.metadata.find_cache_hit(cache_key, not_before)
    if hit is None:
        return False
    original, outputs = hit
    declared = set((definition.get("outputs") or {}).keys())
    if declared and set(outputs) != declared:
        return False
    if not all(_still_valid(op, record) for record in outputs.values()):
        return False

    spec = step_run["spec"]
    now = utcnow()
    attempt_id = names.attempt_id(step_run["metadata"]["uid"], 1)
    record = StepRunRecord(
        id=attempt_id,
        run_id=spec["runId"],
        invocation_id=spec["invocationId"],
        step_name=definition["step"],
        attempt=1,
        status="cached",
        runtime=definition.get("runtime", "inline"),
        parameters={k: v["param"] for k, v in (spec.get("inputs") or {}).items() if "param" in v},
        upstream=list(spec.get("upstream") or []),
        cache_key=cache_key,
        original_step_run_id=original.original_step_run_id or original.id,
        logs_uri=original.logs_uri,
        created_at=now,
        started_at=now,
        finished_at=now,
        updated_at=now,
    )
    try:
        op.stores.metadata.record_step_run(
            record,
            _input_edges(spec.get("inputs") or {}),
            {name: r.id for name, r in outputs.items()},
        )
    except Exception:
        if _row(op, attempt_id) is None:
            raise
    stamp = now_iso()
    _patch(
        op,
        step_run,
        {
            "phase": "cached",
            "cached": True,
            "attempts": 0,
            "stepRunId": attempt_id,
            "outputs": {name: r.id for name, r in outputs.items()},
            "startTime": stamp,
            "completionTime": stamp,
            "logsUri": original.logs_uri,
            "reason": "CacheHit",
            "message": f"outputs of step run {original.id} reused",
        },
    )
    op.metrics.cache_hits.inc()
    op.metrics.steps.labels("cached", definition.get("runtime", "inline")).inc()
    op.capacity_freed()
    op.kube.post_event(step_run, "CacheHit", f"outputs of step run {original.id} reused")
    return True


def _still_valid(op: Operator, record: Any) -> bool:
    try:
        current = materializer_version(resolve_materializer(record.materializer))
        if current != record.materializer_version:
            return False
    except Exception:
        # A user materializer the operator cannot import: its version is in the cache key.
        logger.debug("Materializer %s is not importable here.", record.materializer)
    return bool(op.stores.artifacts.exists(record.uri))


def cancel(op: Operator, step_run: dict[str, Any], why: str) -> str:
    """Stop a StepRun: delete its Job (killing the pod); mark it and its attempt cancelled.

    Returns the StepRun's phase: `cancelled`, or how it ended before it could be cancelled.

    An inline step cannot be interrupted inside its thread; it is marked cancelled at once
    and whatever it records later is ignored.
    """
    metadata = step_run["metadata"]
    with op.step_locks.hold((metadata["namespace"], metadata["name"])):
        # The step's own reconcile may have ended it meanwhile: its outcome stands.
        step_run = op.cache.step(metadata["namespace"], metadata["name"]) or step_run
        phase = (step_run.get("status") or {}).get("phase")
        if phase in dag.TERMINAL:
            return str(phase)
        _cancel(op, step_run, why)
        return "cancelled"


def _cancel(op: Operator, step_run: dict[str, Any], why: str) -> None:
    metadata = step_run["metadata"]
    status = step_run.get("status") or {}
    # The attempt is marked cancelled before its Job goes, so that whoever notices the Job
    # missing finds the attempt already ended rather than lost; the StepRun is marked last,
    # so that an operator that dies before finds it still to cancel after its restart.
    if status.get("stepRunId"):
        row = _row(op, status["stepRunId"])
        if row is not None and row.status == "running":
            op.stores.metadata.update_step_run(
                row.id, status="cancelled", finished_at=utcnow(), error_message=why
            )
    if status.get("jobName"):
        op.kube.delete(JOBS, metadata["namespace"], status["jobName"])
    _patch(
        op,
        step_run,
        {
            "phase": "cancelled",
            "reason": "Cancelled",
            "message": why,
            "completionTime": now_iso(),
            "retryAt": None,
        },
    )
    op.metrics.steps.labels(
        "cancelled", step_run["spec"]["definition"].get("runtime", "inline")
    ).inc()
    op.capacity_freed()
    op.kube.post_event(step_run, "Cancelled", why, "Warning")


# ------------------------------------------------------------------ helpers


def settle_orchestrator_step(
    op: Operator, step_run: dict[str, Any], run_phase: str, row: StepRunRecord | None
) -> None:
    """Give a dynamic run's inline StepRun its final status once the orchestrator is gone.

    The orchestrator writes these statuses itself, after the fact; one that died (or was
    deleted) may have left a step's status unwritten. `row`, the step's latest attempt in
    the metadata store, says how it ended; a step with no ended row stopped with its
    orchestrator.
    """
    now = now_iso()
    if row is not None and row.status in ("completed", "cached"):
        outputs = op.stores.metadata.outputs_of(row.id)
        _patch(
            op,
            step_run,
            {
                "phase": row.status,
                "cached": row.status == "cached",
                "outputs": {name: record.id for name, record in outputs.items()},
                "completionTime": now,
                "reason": "Completed" if row.status == "completed" else "CacheHit",
                "retryAt": None,
            },
        )
    elif row is not None and row.status in ("failed", "skipped", "cancelled"):
        message = f"{row.error_type or 'error'}: {row.error_message or ''}".strip()
        _patch(
            op,
            step_run,
            {
                "phase": row.status,
                "completionTime": now,
                "reason": "StepFailed" if row.status == "failed" else row.status.capitalize(),
                "message": message[:4096],
                "retryAt": None,
            },
        )
    else:
        _patch(
            op,
            step_run,
            {
                "phase": "failed",
                "completionTime": now,
                "reason": "OrchestratorLost",
                "message": f"the run ended {run_phase} while the step ran in its orchestrator",
                "retryAt": None,
            },
        )


def _patch(op: Operator, step_run: dict[str, Any], status: dict[str, Any]) -> None:
    metadata = step_run["metadata"]
    if "phase" in status:
        status["conditions"] = [succeeded_condition(status, metadata.get("generation"))]
    try:
        patched = op.kube.patch_status(STEP_RUNS, metadata["namespace"], metadata["name"], status)
    except ApiError as error:
        if error.status == 404:
            logger.debug("StepRun %s is gone.", describe(step_run))
            return
        raise
    op.cache.put_step(patched)
    step_run["status"] = patched.get("status")


def _row(op: Operator, attempt_id: str) -> Any:
    try:
        return op.stores.metadata.get_step_run(attempt_id)
    except LookupError:
        return None


def _max_retries(step_run: dict[str, Any]) -> int:
    return int((step_run["spec"]["definition"].get("retry") or {}).get("maxRetries", 0))


def _run_name(op: Operator, run: dict[str, Any]) -> str:
    uid = run["metadata"]["uid"]
    known = op.run_name(uid)
    if known is not None:
        return known
    try:
        name = op.stores.metadata.get_run(names.run_id(uid)).name
    except LookupError:
        return str(run["metadata"]["name"])
    op.remember_run_name(uid, name)
    return name


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
