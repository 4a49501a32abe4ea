"""Static pipelines on the test control plane: from Python and from `kubectl apply`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import Cluster, side_channel_counts

pytestmark = pytest.mark.cluster


def test_fan_out_fan_in_run_completes_with_inline_and_isolated_steps(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.fan, {"n": 3, "salt": "fan-out"})

    run = kstep_cluster.wait(name)

    assert run["status"]["phase"] == "completed", run["status"]
    phases = kstep_cluster.step_phases(name)
    assert len(phases) == 10 and set(phases.values()) == {"completed"}
    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert recorded.status == "completed"
    assert recorded.steps["total"].outputs["total"].load() == (1 + 4 + 9) + (1 + 8 + 27)
    assert recorded.steps["cube_3"].runtime == "isolated"
    assert "cubing 3" in recorded.steps["cube_3"].logs()
    condition = run["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Succeeded",
        "True",
        "Completed",
    )
    assert run["status"]["stepCounts"] == {"completed": 10}, json.dumps(run["status"])


def test_rerun_is_fully_cached_and_creates_no_job(kstep_cluster: Cluster) -> None:
    first = kstep_cluster.submit(steps.fan, {"n": 2, "salt": "rerun"})
    kstep_cluster.wait(first)
    jobs_before = len(kstep_cluster.jobs())

    second = kstep_cluster.submit(steps.fan, {"n": 2, "salt": "rerun"})
    run = kstep_cluster.wait(second)

    assert run["status"]["phase"] == "completed"
    assert set(kstep_cluster.step_phases(second).values()) == {"cached"}
    assert len(kstep_cluster.jobs()) == jobs_before
    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert recorded.steps["total"].outputs["total"].load() == (1 + 4) + (1 + 8)


def test_kubectl_apply_of_a_rendered_manifest_runs_to_completion(kstep_cluster: Cluster) -> None:
    manifest = kstep_cluster.render(steps.chain, {"length": 3, "salt": "apply"})

    applied = kstep_cluster.apply_yaml(manifest)
    run = kstep_cluster.wait(manifest["metadata"]["name"])

    assert applied.returncode == 0, applied.stderr
    assert run["status"]["phase"] == "completed", json.dumps(run["status"])
    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert recorded.steps["square_2"].outputs["output"].load() == 1


def test_failing_step_with_retries_shows_every_attempt(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.retried, {"fail_times": 2})

    run = kstep_cluster.wait(name)

    assert run["status"]["phase"] == "completed"
    step_run = kstep_cluster.step_runs(name)["flaky"]
    assert step_run["status"]["attempts"] == 3
    attempts = kstep_cluster.client().get_run(run["status"]["runId"]).steps["flaky"].attempts
    assert [a.status for a in attempts] == ["retrying", "retrying", "completed"]
    assert attempts[-1].outputs["output"].load() == 3


def test_failure_skips_dependants_and_lets_the_independent_branch_complete(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.branches, {"salt": "branches"})

    run = kstep_cluster.wait(name)

    phases = kstep_cluster.step_phases(name)
    assert run["status"]["phase"] == "failed"
    assert phases == {
        "broken": "failed",
        "square": "skipped",
        "seed": "completed",
        "square_2": "completed",
    }
    assert run["status"]["failedStep"] == "broken"
    assert "broken step got 1" in run["status"]["message"]
    assert kstep_cluster.step_runs(name)["broken"]["status"]["attempts"] == 2
    assert run["status"]["conditions"][0]["reason"] == "StepFailed"


def test_cancelling_a_run_stops_its_running_job(kstep_cluster: Cluster, side_channel: Path) -> None:
    name = kstep_cluster.submit(steps.sleepy, {"seconds": 60})
    _wait_for(
        lambda: kstep_cluster.step_phases(name).get("nap") == "running" and side_channel.exists(),
        "the nap step to start",
    )

    kstep_cluster.patch_run(name, {"spec": {"status": "Cancelled"}})
    run = kstep_cluster.wait(name, timeout=30)

    assert run["status"]["phase"] == "cancelled"
    assert kstep_cluster.step_phases(name) == {"nap": "cancelled", "square": "skipped"}
    _wait_for(lambda: not kstep_cluster.jobs(), "the nap Job to be deleted")
    counts = side_channel_counts(side_channel)
    assert counts.get((name, "nap", "end"), 0) == 0


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
