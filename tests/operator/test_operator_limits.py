"""Limits: a run's parallelism and the operator's global limit bound the steps running at
once; `timeoutSeconds` stops a run, `ttlSecondsAfterFinished` deletes it."""

from __future__ import annotations

import datetime
from typing import Any

import operator_steps as steps
import pytest
from kubernetes.client.exceptions import ApiException
from operator_harness import Cluster, side_channel_counts, wait_for

pytestmark = pytest.mark.cluster


def _most_at_once(step_runs: list[dict[str, Any]]) -> int:
    """The most StepRuns that were running at one moment (from their start and end times)."""

    def moment(value: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))

    changes = sorted(
        change
        for s in step_runs
        if s["status"].get("startTime")
        for change in (
            (moment(s["status"]["startTime"]), 1),
            (moment(s["status"]["completionTime"]), -1),
        )
    )
    running = most = 0
    for _, change in changes:
        running += change
        most = max(most, running)
    return most


@pytest.mark.parametrize("operator_settings", [{"KSTEP_OPERATOR_MAX_ACTIVE_STEPS": "2"}])
def test_steps_running_at_once_stay_within_the_run_parallelism_and_the_global_limit(
    kstep_cluster: Cluster,
) -> None:
    # Three runs of four independent steps each: together they would run 12 at once.
    names = [
        kstep_cluster.submit(steps.fan, {"n": 2, "salt": f"limits-{i}"}, parallelism=p)
        for i, p in enumerate((1, 4, 4))
    ]

    runs = [kstep_cluster.wait(name, timeout=120) for name in names]

    assert [r["status"]["phase"] for r in runs] == ["completed"] * 3
    step_runs = {name: list(kstep_cluster.step_runs(name).values()) for name in names}
    assert _most_at_once(step_runs[names[0]]) == 1
    assert _most_at_once([s for found in step_runs.values() for s in found]) <= 2


def test_run_timeout_fails_the_run_with_reason_timeout_and_stops_its_jobs(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.sleepy, {"seconds": 60}, timeout_seconds=4)
    wait_for(lambda: kstep_cluster.jobs(name), "the nap's Job to be created")

    run = kstep_cluster.wait(name, timeout=60)

    assert run["status"]["phase"] == "failed"
    condition = run["status"]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "Timeout"), condition
    assert run["status"]["message"] == "the run exceeded its timeout"
    assert kstep_cluster.step_phases(name) == {"nap": "cancelled", "square": "skipped"}
    nap = kstep_cluster.step_runs(name)["nap"]["status"]
    assert nap["message"] == "the run exceeded its timeout"
    wait_for(lambda: not kstep_cluster.jobs(name), "the nap's Job to be deleted")
    wait_for(lambda: not kstep_cluster.pods(name), "the nap's pod to be deleted")
    assert side_channel_counts(kstep_cluster.side_channel).get((name, "nap", "end"), 0) == 0
    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert recorded.status == "failed"
    assert recorded.steps["nap"].status == "cancelled"


def test_finished_run_is_deleted_with_its_step_runs_and_jobs_after_its_ttl(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.fan, {"n": 1, "salt": "ttl"}, ttl_seconds_after_finished=2)
    kept = kstep_cluster.submit(steps.chain, {"length": 2, "salt": "no-ttl"})
    run = kstep_cluster.wait(name)
    assert run["status"]["phase"] == "completed"
    assert kstep_cluster.jobs(name) and kstep_cluster.step_runs(name)

    def run_is_gone() -> bool:
        try:
            kstep_cluster.run(name)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(run_is_gone, "the run to be deleted", timeout=30)
    # The garbage collector deletes what the run owned, and what that owned.
    wait_for(lambda: not kstep_cluster.step_runs(name), "its StepRuns to be deleted")
    wait_for(lambda: not kstep_cluster.jobs(name), "its Jobs to be deleted")
    wait_for(lambda: not kstep_cluster.pods(name), "its pods to be deleted")
    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert recorded.status == "completed"
    assert kstep_cluster.run(kept)["status"]["phase"] == "completed"
    assert len(kstep_cluster.step_runs(kept)) == 2
