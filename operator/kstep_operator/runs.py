"""The PipelineRun controller: one reconcile turns a run's DAG into StepRuns.

Observe the run and its StepRuns (from the cache), compute what to start and skip
(`reconcile.dag`), act (create StepRuns, resolving inputs and checking the cache first, and
start their first attempt at once), record the run's status, counts and events.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError

from kstep._caching import InputToken, compute_cache_key
from kstep.cluster import names
from kstep.cluster.objects import step_run_manifest, succeeded_condition
from kstep.stores.metadata import RunRecord, StepRunRecord, utcnow
from kstep_operator import steps
from kstep_operator.context import RUN, Operator, describe
from kstep_operator.inline.client import CodeNotLoadable
from kstep_operator.kube import (
    JOBS,
    PIPELINE_RUNS,
    SERVICE_ACCOUNTS,
    STEP_RUNS,
    ApiError,
    now_iso,
    parse_time,
)
from kstep_operator.reconcile import dag
from kstep_operator.reconcile.manifests import job_outcome, orchestrator_job_manifest

logger = logging.getLogger(__name__)

RUN_TERMINAL = ("completed", "failed", "cancelled")


def reconcile_run(op: Operator, namespace: str, name: str) -> None:
    """Bring one PipelineRun a step closer to its end."""
    run = op.cache.run(namespace, name)
    if run is None or run["metadata"].get("deletionTimestamp"):
        return
    status = run.get("status") or {}
    if status.get("phase") in RUN_TERMINAL:
        _expire(op, run)
        return

    # A run seen for the first time: check it can run at all, then record its start.
    if not status.get("phase"):
        run = _start(op, run)
        if run is None:
            return
    if run["spec"].get("mode") == "dynamic":
        _reconcile_dynamic(op, run)
        return

    spec = run["spec"]
    step_runs = {sr["spec"]["invocationId"]: sr for sr in op.cache.steps_of(namespace, name)}
    # A StepRun without a phase was created but not started (the operator may have stopped
    # in between): the plan treats it as not created, and launching it adopts it.
    phases = {
        i: sr["status"]["phase"]
        for i, sr in step_runs.items()
        if (sr.get("status") or {}).get("phase")
    }
    active = sum(1 for p in phases.values() if p not in dag.TERMINAL)
    room_in_run = max(0, spec.get("parallelism", 32) - active)
    # The room under the global limit stays reserved until the new StepRuns are in the
    # cache, so that runs reconciled at the same time do not take the same room twice.
    with op.room_for_steps(namespace, name, room_in_run) as capacity:
        plan = dag.plan(
            spec,
            phases,
            capacity=capacity,
            cancelled=spec.get("status") == "Cancelled",
            timed_out=_timed_out(run),
        )

        if plan.cancel_active:
            reason = _stop_reason(run, plan)
            for step_run in step_runs.values():
                if (step_run.get("status") or {}).get("phase") not in dag.TERMINAL:
                    invocation_id = step_run["spec"]["invocationId"]
                    phases[invocation_id] = steps.cancel(op, step_run, reason)
        for invocation_id, why in plan.skip.items():
            _skip(op, run, invocation_id, why)
            phases[invocation_id] = "skipped"
        invocations = {i["id"]: i for i in spec.get("steps") or []}
        for invocation_id in plan.start:
            phases[invocation_id] = _launch(op, run, invocations[invocation_id], step_runs)

    _record(op, run, phases)
    # Steps that ended within this reconcile (served from the cache, skipped, cancelled) may
    # let others start or be skipped: plan again. Their StepRuns' watch events will not ask
    # for it, as echoes of this operator's own writes.
    ended_now = [i for i in [*plan.skip, *plan.start] if phases.get(i) in dag.TERMINAL]
    if ended_now or plan.cancel_active:
        op.enqueue_run(namespace, name)


def needs_attention(op: Operator, run: dict[str, Any]) -> bool:
    """Whether time alone changed something for this run (a timeout or a TTL ran out)."""
    status = run.get("status") or {}
    phase = status.get("phase")
    if phase in RUN_TERMINAL:
        ttl = run["spec"].get("ttlSecondsAfterFinished")
        finished = parse_time(status.get("completionTime"))
        return ttl is not None and finished is not None and _age(finished) >= ttl
    return phase == "running" and _timed_out(run)


# ------------------------------------------------------------------ starting


def _start(op: Operator, run: dict[str, Any]) -> dict[str, Any] | None:
    spec = run["spec"]
    metadata = run["metadata"]
    run_id = names.run_id(metadata["uid"])
    _ensure_run_row(op, run, run_id)
    problem = _check(op, run)
    if problem is not None:
        _fail(op, run, problem.reason, problem.message)
        return None
    now = now_iso()
    counts = dag.count_phases(spec.get("steps") or [], {})
    patched = op.kube.patch_status(
        PIPELINE_RUNS,
        metadata["namespace"],
        metadata["name"],
        {
            "phase": "running",
            "startTime": now,
            "runId": run_id,
            "observedGeneration": metadata.get("generation"),
            "stepCounts": counts,
            "conditions": [_condition("Unknown", "Running", "the run is running", run, now)],
        },
    )
    op.cache.put_run(patched)
    op.kube.post_event(run, "Started", f"run of pipeline {spec['pipelineName']!r} started")
    logger.info("PipelineRun %s started.", describe(run))
    return patched


def _ensure_run_row(op: Operator, run: dict[str, Any], run_id: str) -> None:
    spec = run["spec"]
    metadata = run["metadata"]
    now = utcnow()
    record = RunRecord(
        id=run_id,
        name=metadata["name"],
        pipeline_name=spec["pipelineName"],
        mode=spec.get("mode", "static"),
        status="running",
        execution_mode=spec.get("executionMode")
        or ("stop_on_failure" if spec.get("mode") == "dynamic" else "continue_on_failure"),
        parameters=spec.get("parameters") or {},
        entrypoint=spec.get("entrypoint"),
        owner={
            "kind": "PipelineRun",
            "namespace": metadata["namespace"],
            "name": metadata["name"],
            "uid": metadata["uid"],
        },
        created_at=now,
        started_at=now,
        updated_at=now,
    )
    metadata_store = op.stores.metadata
    try:
        metadata_store.get_run(run_id)
        return
    except LookupError:
        pass
    try:
        metadata_store.create_run(record)
        return
    except Exception as error:
        if not isinstance(getattr(error, "__cause__", None), IntegrityError) and not isinstance(
            error, IntegrityError
        ):
            raise
        # Only a run of the same name in another namespace (or an earlier one) justifies
        # another name; any other conflict is an error, not a reason to rename this run.
        try:
            holder = metadata_store.get_run(record.name)
        except LookupError:
            raise error from None
    if holder.id == run_id:
        return
    record.name = f"{metadata['name']}-{metadata['uid'][:8]}"
    metadata_store.create_run(record)


def _check(op: Operator, run: dict[str, Any]) -> dag.Problem | None:
    spec = run["spec"]
    namespace = run["metadata"]["namespace"]
    if spec.get("mode", "static") == "static":
        problem = dag.validate(spec)
        if problem is not None:
            return problem
    secret = spec.get("storeSecret")
    needs_default = any(
        d.get("runtime") == "isolated" for d in (spec.get("definitions") or {}).values()
    )
    secret_problem = None
    if secret:
        secret_problem = _secret_problem(
            op,
            namespace,
            secret,
            f"spec.storeSecret names the Secret {secret!r}, which does not exist in namespace "
            f"{namespace!r}",
        )
    elif needs_default:
        secret_problem = _secret_problem(
            op,
            namespace,
            op.defaults.store_secret,
            f"isolated steps need the store Secret {op.defaults.store_secret!r} in namespace "
            f"{namespace!r} (or a spec.storeSecret that exists)",
        )
    if secret_problem is not None:
        return secret_problem
    accounts = set()
    if spec.get("mode") == "dynamic":
        accounts.add(spec.get("serviceAccountName") or op.defaults.orchestrator_service_account)
    if needs_default:
        accounts.add(spec.get("serviceAccountName") or op.defaults.service_account)
    for account in sorted(accounts):
        if op.kube.get(SERVICE_ACCOUNTS, namespace, account) is None:
            return dag.Problem(
                "ServiceAccountNotFound",
                f"the run's pods need the service account {account!r}, which does not exist "
                f"in namespace {namespace!r}",
            )
    return _check_functions(op, run)


def _secret_problem(op: Operator, namespace: str, name: str, missing: str) -> dag.Problem | None:
    """Why a run's pods cannot use the store Secret `name`, or None when they can."""
    try:
        if op.secret_exists(namespace, name):
            return None
    except ApiError as error:
        # RBAC lets the operator read store Secrets by name only: retrying cannot help.
        if error.status != 403:
            raise
        return dag.Problem(
            "SecretForbidden",
            f"the operator may not read the store Secret {name!r} in namespace {namespace!r}; "
            "its RBAC names the Secrets it may read (stores.extraSecretNames in the Helm chart)",
        )
    return dag.Problem("SecretNotFound", missing)


def _check_functions(op: Operator, run: dict[str, Any]) -> dag.Problem | None:
    spec = run["spec"]
    code = spec.get("code") or {}
    if code.get("image") and code.get("image") != op.settings.image and not code.get("archive"):
        # The code lives in another image only: its Jobs will find out.
        return None
    references = sorted(
        {d["function"] for d in (spec.get("definitions") or {}).values()}
        | ({spec["entrypoint"]} if spec.get("entrypoint") else set())
    )
    if not references:
        return None
    env = op.store_environment(run["metadata"]["namespace"], spec.get("storeSecret")) or {}
    try:
        problems = op.executor.validate(references, env, code, timeout=120)
    except CodeNotLoadable as error:
        return dag.Problem(
            "InvalidCodeArchive",
            f"the run's code archive {code.get('archive')!r} cannot be loaded: {error}",
        )
    if not problems:
        return None
    reference, why = sorted(problems.items())[0]
    users = [k for k, d in (spec.get("definitions") or {}).items() if d["function"] == reference]
    culprit = f"step definition {users[0]!r}" if users else "the entrypoint"
    return dag.Problem(
        "UnknownFunction",
        f"{culprit} refers to {reference!r}, which cannot be imported from the run's code: {why}",
    )


# ------------------------------------------------------------------ dynamic runs


def _reconcile_dynamic(op: Operator, run: dict[str, Any]) -> None:
    """A dynamic run: its orchestrator Job runs the function; the operator runs its Jobs.

    The orchestrator creates a StepRun per invocation and runs the inline ones itself; the
    isolated ones it leaves to the operator, like any StepRun. The run ends with its
    orchestrator: the metadata store has the outcome the function reached.
    """
    metadata = run["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    spec = run["spec"]
    step_runs = op.cache.steps_of(namespace, name)
    job_name = (run.get("status") or {}).get("orchestratorJob")

    cancelled = spec.get("status") == "Cancelled"
    if cancelled or _timed_out(run):
        _stop_dynamic(op, run, step_runs, job_name, cancelled)
        return

    if job_name is None:
        created = op.kube.create_or_get(
            JOBS, namespace, orchestrator_job_manifest(run, op.defaults)
        )
        op.cache.put_job(created)
        job_name = created["metadata"]["name"]
        patched = op.kube.patch_status(
            PIPELINE_RUNS, namespace, name, {"orchestratorJob": job_name}
        )
        op.cache.put_run(patched)
        run = patched
        op.kube.post_event(run, "OrchestratorStarted", f"orchestrator Job {job_name} created")

    for step_run in step_runs:
        status = step_run.get("status") or {}
        if step_run["spec"].get("executor") == "operator" and not status.get("phase"):
            steps.start_attempt(op, step_run, 1, run=run)

    job = op.cache.job(namespace, job_name) or op.kube.get(JOBS, namespace, job_name)
    if job is None:
        _cancel_active(op, step_runs, "the run's orchestrator is gone")
        _finish(
            op,
            run,
            "failed",
            "OrchestratorDeleted",
            f"the orchestrator Job {job_name!r} was deleted before the run ended",
            _dynamic_counts(op, namespace, name),
            None,
        )
        return
    counts = _dynamic_counts(op, namespace, name)
    outcome = job_outcome(job)
    if outcome is None:
        _write_counts(op, run, counts)
        return
    _end_dynamic(op, run, outcome, counts, step_runs)


def _write_counts(op: Operator, run: dict[str, Any], counts: dict[str, int]) -> None:
    """Write a running run's step counts, at most once per interval.

    Counts change with every step: pacing keeps a run's many transitions (thousands in a
    dynamic run with inline steps) from each costing a write of the run. A change held back
    requeues the run for when the interval is over, so the last counts are always written.
    """
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    written = (run.get("status") or {}).get("stepCounts")
    if counts == written:
        return
    wait = op.counts_wait(namespace, name)
    if wait > 0:
        op.queue.add_after((RUN, namespace, name), wait)
        return
    patched = op.kube.patch_status(
        PIPELINE_RUNS, namespace, name, {"stepCounts": counts_patch(written, counts)}
    )
    op.cache.put_run(patched)
    op.counts_were_written(namespace, name)


def _end_dynamic(
    op: Operator,
    run: dict[str, Any],
    outcome: tuple[str, str],
    counts: dict[str, int],
    step_runs: list[dict[str, Any]],
) -> None:
    run_id = names.run_id(run["metadata"]["uid"])
    try:
        record = op.stores.metadata.get_run(run_id)
    except LookupError:
        record = None
    result, why = outcome
    if record is not None and record.status in ("completed", "failed", "cancelled"):
        phase = record.status
        message = record.message or ""
        reason = {"completed": "Completed", "failed": "StepFailed", "cancelled": "Cancelled"}[phase]
        failed_step = record.failed_step
    elif result == "succeeded":
        phase, reason, message, failed_step = "completed", "Completed", "", None
    else:
        phase, reason, failed_step = "failed", "OrchestratorFailed", None
        message = f"the orchestrator failed: {why}"
    if phase == "failed" and not message:
        message = "the pipeline function failed"
    # Steps the orchestrator ran ended with it: their rows say how, should a status be
    # missing. Only the operator's own steps can still run.
    metadata = run["metadata"]
    current = op.cache.steps_of(metadata["namespace"], metadata["name"])
    unsettled = [
        sr
        for sr in current
        if not steps.operator_runs(sr) and (sr.get("status") or {}).get("phase") not in dag.TERMINAL
    ]
    if unsettled:
        # In creation order, so the last row of an invocation is its latest attempt.
        latest = {row.invocation_id: row for row in op.stores.metadata.step_runs_of(run_id)}
        for step_run in unsettled:
            row = latest.get(step_run["spec"]["invocationId"])
            steps.settle_orchestrator_step(op, step_run, phase, row)
    _cancel_active(op, [sr for sr in current if steps.operator_runs(sr)], f"the run ended {phase}")
    counts = _dynamic_counts(op, metadata["namespace"], metadata["name"])

    _finish(op, run, phase, reason, message, counts, failed_step)


def _stop_dynamic(
    op: Operator,
    run: dict[str, Any],
    step_runs: list[dict[str, Any]],
    job_name: str | None,
    cancelled: bool,
) -> None:
    metadata = run["metadata"]
    if job_name:
        op.kube.delete(JOBS, metadata["namespace"], job_name)
    reason = "the run was cancelled" if cancelled else "the run exceeded its timeout"
    _cancel_active(op, step_runs, reason)
    counts = _dynamic_counts(op, metadata["namespace"], metadata["name"])
    if cancelled:
        _finish(op, run, "cancelled", "Cancelled", reason, counts, None)
    else:
        _finish(op, run, "failed", "Timeout", reason, counts, None)


def _dynamic_counts(op: Operator, namespace: str, name: str) -> dict[str, int]:
    """Step counts by phase of a dynamic run: its StepRuns are all the steps it has."""
    counts: dict[str, int] = {}
    for step_run in op.cache.steps_of(namespace, name):
        phase = (step_run.get("status") or {}).get("phase") or "pending"
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def _cancel_active(op: Operator, step_runs: list[dict[str, Any]], why: str) -> None:
    for step_run in step_runs:
        if (step_run.get("status") or {}).get("phase") not in dag.TERMINAL:
            steps.cancel(op, step_run, why)


# ------------------------------------------------------------------ launching


def _launch(
    op: Operator,
    run: dict[str, Any],
    invocation: dict[str, Any],
    step_runs: dict[str, dict[str, Any]],
) -> str:
    """Create an invocation's StepRun and start it (or serve it from the cache)."""
    spec = run["spec"]
    definition = spec["definitions"][invocation["definition"]]
    outputs = {i: (sr.get("status") or {}).get("outputs") or {} for i, sr in step_runs.items()}
    inputs = {
        name: _resolve(value, outputs) for name, value in (invocation.get("inputs") or {}).items()
    }
    cache_key = _cache_key(op, definition, inputs)
    upstream = dag.upstream_of(invocation)
    _observe_transition(op, upstream, step_runs)

    body = step_run_manifest(
        run, invocation["id"], definition, inputs, upstream=upstream, cache_key=cache_key
    )
    try:
        created, new = op.kube.create_or_adopt(STEP_RUNS, run["metadata"]["namespace"], body)
    except ApiError as error:
        logger.warning("Creating the StepRun of %r failed: %s", invocation["id"], error)
        raise
    op.cache.put_step(created)
    if (created.get("status") or {}).get("phase"):
        return str(created["status"]["phase"])

    enabled = definition.get("enableCache")
    if enabled is None:
        enabled = spec.get("enableCache", True)
    if enabled and cache_key:
        hit = steps.serve_from_cache(op, created, run, cache_key, definition)
        if hit:
            return "cached"
    steps.start_attempt(op, created, 1, run=run, new=new)
    return "running"


def _resolve(value: dict[str, Any], outputs: dict[str, dict[str, str]]) -> dict[str, Any]:
    if value.get("output"):
        reference = value["output"]
        resolved: dict[str, Any] = {"artifact": outputs[reference["step"]][reference["output"]]}
        if value.get("item") is not None:
            resolved["item"] = value["item"]
        return resolved
    if value.get("list") is not None:
        return {"list": [_resolve(item, outputs) for item in value["list"]]}
    if "artifact" in value:
        return dict(value)
    return {"param": value.get("param")}


def _cache_key(op: Operator, definition: dict[str, Any], inputs: dict[str, Any]) -> str:
    ids = [i for value in inputs.values() for i in _artifact_ids(value)]
    versions = op.artifact_versions(ids)
    parameters = {k: v["param"] for k, v in inputs.items() if "param" in v}
    tokens: dict[str, Any] = {}
    for name, value in inputs.items():
        if "artifact" in value:
            tokens[name] = InputToken.of(versions[value["artifact"]], value.get("item"))
        elif "list" in value:
            tokens[name] = [
                InputToken.of(versions[item["artifact"]], item.get("item"))
                if "artifact" in item
                else item.get("param")
                for item in value["list"]
            ]
    fingerprint = {"source": definition["sourceHash"], "outputs": definition.get("outputs") or {}}
    return compute_cache_key(fingerprint, parameters, tokens)


def _artifact_ids(value: dict[str, Any]) -> list[str]:
    if "artifact" in value:
        return [value["artifact"]]
    return [i for item in value.get("list") or [] for i in _artifact_ids(item)]


def _observe_transition(
    op: Operator, upstream: list[str], step_runs: dict[str, dict[str, Any]]
) -> None:
    ends = [
        parse_time((step_runs[u].get("status") or {}).get("completionTime"))
        for u in upstream
        if u in step_runs
    ]
    finished = [end for end in ends if end is not None]
    if finished:
        op.metrics.transition_latency.observe(max(0.0, _age(max(finished))))


def _skip(op: Operator, run: dict[str, Any], invocation_id: str, why: str) -> None:
    spec = run["spec"]
    invocation = next(i for i in spec["steps"] if i["id"] == invocation_id)
    definition = spec["definitions"][invocation["definition"]]
    body = step_run_manifest(
        run, invocation_id, definition, {}, upstream=dag.upstream_of(invocation), cache_key=None
    )
    created = op.kube.create_or_get(STEP_RUNS, run["metadata"]["namespace"], body)
    if (created.get("status") or {}).get("phase"):
        op.cache.put_step(created)
        return
    now = utcnow()
    try:
        op.stores.metadata.record_step_run(
            StepRunRecord(
                id=names.attempt_id(created["metadata"]["uid"], 1),
                run_id=names.run_id(run["metadata"]["uid"]),
                invocation_id=invocation_id,
                step_name=definition["step"],
                attempt=1,
                status="skipped",
                runtime=definition.get("runtime", "inline"),
                upstream=dag.upstream_of(invocation),
                error_message=why,
                created_at=now,
                finished_at=now,
                updated_at=now,
            )
        )
    except Exception as error:
        if "UNIQUE" not in str(error).upper() and "duplicate" not in str(error).lower():
            raise
    status: dict[str, Any] = {
        "phase": "skipped",
        "reason": "Skipped",
        "message": why,
        "completionTime": now_iso(),
    }
    status["conditions"] = [succeeded_condition(status, created["metadata"].get("generation"))]
    patched = op.kube.patch_status(
        STEP_RUNS, created["metadata"]["namespace"], created["metadata"]["name"], status
    )
    op.cache.put_step(patched)
    op.kube.post_event(patched, "Skipped", why)


# ------------------------------------------------------------------ status


def _record(op: Operator, run: dict[str, Any], phases: dict[str, str]) -> None:
    spec = run["spec"]
    status = run.get("status") or {}
    counts = dag.count_phases(spec.get("steps") or [], phases)
    plan = dag.plan(
        spec,
        phases,
        capacity=0,
        cancelled=spec.get("status") == "Cancelled",
        timed_out=_timed_out(run),
    )
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    if not plan.finished:
        _write_counts(op, run, counts)
        timeout = spec.get("timeoutSeconds")
        started = parse_time(status.get("startTime"))
        if timeout and started is not None:
            remaining = timeout - _age(started)
            op.queue.add_after((RUN, namespace, name), max(remaining, 0.05))
        return
    message = plan.message
    if plan.phase == "failed" and plan.failed_step and not message:
        failed = _step_message(op, run, plan.failed_step)
        message = f"step {plan.failed_step!r} failed: {failed}"
    reason = {
        "completed": "Completed",
        "cancelled": "Cancelled",
        "failed": "Timeout" if _timed_out(run) else "StepFailed",
    }[plan.phase]
    _finish(op, run, plan.phase, reason, message or "", counts, plan.failed_step)


def _step_message(op: Operator, run: dict[str, Any], invocation_id: str) -> str:
    for step_run in op.cache.steps_of(run["metadata"]["namespace"], run["metadata"]["name"]):
        if step_run["spec"]["invocationId"] == invocation_id:
            return str((step_run.get("status") or {}).get("message") or "failed")
    return "failed"


def _fail(op: Operator, run: dict[str, Any], reason: str, message: str) -> None:
    counts = dag.count_phases(run["spec"].get("steps") or [], {})
    _finish(op, run, "failed", reason, message, counts, None)


def _finish(
    op: Operator,
    run: dict[str, Any],
    phase: str,
    reason: str,
    message: str,
    counts: dict[str, int],
    failed_step: str | None,
) -> None:
    metadata = run["metadata"]
    now = now_iso()
    succeeded = "True" if phase == "completed" else "False"
    status: dict[str, Any] = {
        "phase": phase,
        "completionTime": now,
        "stepCounts": counts_patch((run.get("status") or {}).get("stepCounts"), counts),
        "observedGeneration": metadata.get("generation"),
        "conditions": [_condition(succeeded, reason, message or f"the run {phase}", run, now)],
        "message": message[:4096] or None,
        "failedStep": failed_step,
        "runId": names.run_id(metadata["uid"]),
    }
    if not (run.get("status") or {}).get("startTime"):
        status["startTime"] = now
    # The metadata store first: once the status says the run ended, no reconcile comes back
    # to it, so an operator that dies in between must leave the store's record to redo.
    op.stores.metadata.update_run(
        names.run_id(metadata["uid"]),
        status=phase,
        finished_at=utcnow(),
        message=message or None,
        failed_step=failed_step,
    )
    patched = op.kube.patch_status(PIPELINE_RUNS, metadata["namespace"], metadata["name"], status)
    op.cache.put_run(patched)
    op.run_ended(metadata["namespace"], metadata["name"], metadata["uid"])
    _expire(op, patched)
    op.metrics.runs.labels(phase).inc()
    # The event's reason is the new phase, as for steps; the condition's reason says why.
    event_type = "Normal" if phase == "completed" else "Warning"
    event_reason = {"completed": "Completed", "failed": "Failed", "cancelled": "Cancelled"}[phase]
    event_message = message or f"the run {phase}"
    if reason != event_reason:
        event_message = f"{reason}: {event_message}"
    op.kube.post_event(run, event_reason, event_message, event_type)
    logger.info("PipelineRun %s ended %s: %s", describe(run), phase, message or reason)


def counts_patch(old: dict[str, int] | None, new: dict[str, int]) -> dict[str, int | None]:
    """A merge patch that turns the counts `old` into `new` (dropping phases now at 0)."""
    patch: dict[str, int | None] = {phase: None for phase in old or {} if phase not in new}
    patch.update(new)
    return patch


def _condition(
    status: str, reason: str, message: str, run: dict[str, Any], now: str
) -> dict[str, Any]:
    return {
        "type": "Succeeded",
        "status": status,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": now[:19] + "Z",
        "observedGeneration": run["metadata"].get("generation"),
    }


def _stop_reason(run: dict[str, Any], plan: dag.Plan) -> str:
    if run["spec"].get("status") == "Cancelled":
        return "the run was cancelled"
    if _timed_out(run):
        return "the run exceeded its timeout"
    return f"the run stops after step {plan.failed_step!r} failed"


def _timed_out(run: dict[str, Any]) -> bool:
    timeout = run["spec"].get("timeoutSeconds")
    started = parse_time((run.get("status") or {}).get("startTime"))
    return bool(timeout) and started is not None and _age(started) >= timeout


def _age(moment: datetime.datetime) -> float:
    return (datetime.datetime.now(datetime.UTC) - moment).total_seconds()


def _expire(op: Operator, run: dict[str, Any]) -> None:
    ttl = run["spec"].get("ttlSecondsAfterFinished")
    finished = parse_time((run.get("status") or {}).get("completionTime"))
    if ttl is None or finished is None:
        return
    remaining = ttl - _age(finished)
    metadata = run["metadata"]
    if remaining > 0:
        op.queue.add_after((RUN, metadata["namespace"], metadata["name"]), remaining)
        return
    if op.kube.delete(PIPELINE_RUNS, metadata["namespace"], metadata["name"]):
        logger.info("PipelineRun %s is deleted: its TTL after finishing ran out.", describe(run))
