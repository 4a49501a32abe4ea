"""A step's Job or pod that vanishes mid-run ends its attempt with a reason, never a hang.

The run then goes on as its execution mode says: a retry if the step has one left, else the
step fails, its dependants are skipped and independent branches complete (or, failing fast,
the other running steps are cancelled).
"""

from __future__ import annotations

from typing import Any

import operator_steps as steps
import pytest
from operator_harness import Cluster, side_channel_counts, wait_for

pytestmark = pytest.mark.cluster


def _started(cluster: Cluster, name: str, invocation_id: str) -> dict[str, Any]:
    """The StepRun of an isolated step once its body runs in its pod."""

    def body_runs() -> dict[str, Any] | None:
        step_run = cluster.step_runs(name).get(invocation_id)
        if step_run is None or (step_run.get("status") or {}).get("phase") != "running":
            return None
        started = side_channel_counts(cluster.side_channel).get((name, invocation_id, "start"))
        return step_run if started else None

    found: dict[str, Any] = wait_for(body_runs, f"step {invocation_id} of {name} to run")
    return found


def _attempt_rows(cluster: Cluster, run: dict[str, Any], invocation_id: str) -> list[Any]:
    recorded = cluster.client().get_run(run["status"]["runId"])
    return list(recorded.steps[invocation_id].attempts)


def test_deleted_job_fails_its_step_with_reason_job_deleted(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.nap_beside_a_branch, {"seconds": 60})
    job_name = _started(kstep_cluster, name, "nap")["status"]["jobName"]

    kstep_cluster.delete_job(job_name)
    run = kstep_cluster.wait(name, timeout=60)

    nap = kstep_cluster.step_runs(name)["nap"]["status"]
    assert (nap["phase"], nap["reason"]) == ("failed", "JobDeleted"), nap
    assert f"its Job {job_name!r} was deleted before the step finished" in nap["message"]
    assert kstep_cluster.step_phases(name) == {
        "nap": "failed",
        "square": "skipped",
        "seed": "completed",
        "square_2": "completed",
    }
    assert (run["status"]["phase"], run["status"]["failedStep"]) == ("failed", "nap")
    assert run["status"]["conditions"][0]["reason"] == "StepFailed"
    assert "was deleted before the step finished" in run["status"]["message"]
    (attempt,) = _attempt_rows(kstep_cluster, run, "nap")
    assert attempt.status == "failed"
    assert side_channel_counts(kstep_cluster.side_channel).get((name, "nap", "end"), 0) == 0


def test_deleted_job_starts_a_retry_when_its_step_has_retries(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.nap_retried, {"seconds": 60})
    first_job = _started(kstep_cluster, name, "nap_once")["status"]["jobName"]

    kstep_cluster.delete_job(first_job)
    run = kstep_cluster.wait(name, timeout=60)

    assert run["status"]["phase"] == "completed", run["status"]
    step_run = kstep_cluster.step_runs(name)["nap_once"]["status"]
    assert step_run["attempts"] == 2
    assert step_run["jobName"] != first_job
    attempts = _attempt_rows(kstep_cluster, run, "nap_once")
    assert [a.status for a in attempts] == ["retrying", "completed"]
    assert "was deleted before the step finished" in (attempts[0].error_message or "")
    counts = side_channel_counts(kstep_cluster.side_channel)
    assert (counts[(name, "nap_once", "start")], counts[(name, "nap_once", "end")]) == (2, 1)


def test_deleted_pod_ends_its_attempt_and_fails_its_step(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.nap_beside_a_branch, {"seconds": 60})
    job_name = _started(kstep_cluster, name, "nap")["status"]["jobName"]
    (pod,) = [p for p in kstep_cluster.pods(name) if p.metadata.labels["job-name"] == job_name]

    kstep_cluster.delete_pod(pod.metadata.name)
    run = kstep_cluster.wait(name, timeout=60)

    nap = kstep_cluster.step_runs(name)["nap"]["status"]
    # With no retries left in the Job (kstep retries with new Jobs), the Job controller
    # fails the Job once its pod is gone.
    assert (nap["phase"], nap["reason"]) == ("failed", "JobFailed"), nap
    assert f"its Job {job_name!r} ended" in nap["message"], nap
    assert "without the step recording a result" in nap["message"], nap
    assert kstep_cluster.step_phases(name)["square_2"] == "completed"
    assert (run["status"]["phase"], run["status"]["failedStep"]) == ("failed", "nap")
    (attempt,) = _attempt_rows(kstep_cluster, run, "nap")
    assert attempt.status == "failed"


def test_deleted_job_cancels_the_other_running_steps_when_the_run_fails_fast(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.two_naps, {"seconds": 60})
    job_name = _started(kstep_cluster, name, "nap")["status"]["jobName"]
    other_job = _started(kstep_cluster, name, "nap_2")["status"]["jobName"]

    kstep_cluster.delete_job(job_name)
    run = kstep_cluster.wait(name, timeout=60)

    assert kstep_cluster.step_phases(name) == {
        "nap": "failed",
        "nap_2": "cancelled",
        "square": "skipped",
        "square_2": "skipped",
    }
    assert kstep_cluster.step_runs(name)["nap"]["status"]["reason"] == "JobDeleted"
    assert (run["status"]["phase"], run["status"]["failedStep"]) == ("failed", "nap")
    wait_for(
        lambda: other_job not in {j.metadata.name for j in kstep_cluster.jobs(name)},
        "the other nap's Job to be deleted",
    )
    counts = side_channel_counts(kstep_cluster.side_channel)
    assert counts.get((name, "nap_2", "end"), 0) == 0
