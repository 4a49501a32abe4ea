"""Dynamic pipelines on the test control plane: the orchestrator pod and its StepRuns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import Cluster

pytestmark = pytest.mark.cluster


def test_dynamic_run_completes_with_inline_and_isolated_steps(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.dynamic_fan, {"n": 3, "salt": "dynamic-fan"})

    run = kstep_cluster.wait(name, timeout=120)

    assert run["status"]["phase"] == "completed", json.dumps(run["status"])
    phases = kstep_cluster.step_phases(name)
    assert set(phases) == {
        "seed",
        "map:square:0",
        "map:square:1",
        "map:square:2",
        "cube",
        "cube_2",
        "cube_3",
        "total",
        "total_2",
    }
    failures = {
        invocation: (step_run.get("status") or {}).get("message")
        for invocation, step_run in kstep_cluster.step_runs(name).items()
        if (step_run.get("status") or {}).get("phase") != "completed"
    }
    assert not failures
    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert recorded.steps["total"].outputs["total"].load() == 1 + 4 + 9
    assert recorded.steps["total_2"].outputs["total"].load() == 1 + 8 + 27
    assert recorded.steps["cube_2"].runtime == "isolated"
    assert recorded.steps["map:square:1"].runtime == "inline"
    assert recorded.mode == "dynamic"
    assert "seeding 3" in recorded.steps["seed"].logs()


def test_dynamic_run_takes_only_the_branch_its_function_chose(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.dynamic_branch, {"threshold": 2, "salt": "branch"})

    run = kstep_cluster.wait(name, timeout=120)

    assert run["status"]["phase"] == "completed", json.dumps(run["status"])
    assert kstep_cluster.step_phases(name) == {"seed": "completed", "cube": "completed"}


def test_dynamic_scenarios_give_the_same_results_and_lineage_as_locally(
    kstep_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kstep.engine import LocalEngine

    monkeypatch.setenv("KSTEP_HOME", str(tmp_path / "local"))
    LocalEngine.reset_default()
    try:
        local = steps.dynamic_scenarios(salt="parity-local")
    finally:
        LocalEngine.reset_default()
    name = kstep_cluster.submit(steps.dynamic_scenarios, {"salt": "parity-cluster"})

    run = kstep_cluster.wait(name, timeout=240)

    assert run["status"]["phase"] == "completed", json.dumps(run["status"])[-2000:]
    remote = kstep_cluster.client().get_run(run["status"]["runId"])
    assert _picture(remote) == _picture(local)
    assert set(kstep_cluster.step_phases(name)) == set(local.steps)
    assert remote.steps["cube"].runtime == "isolated"
    assert remote.steps["square_5"].runtime == "isolated"


def _picture(run: Any) -> dict[str, Any]:
    """Each invocation's status, output values, upstream steps and input lineage."""
    picture = {}
    for invocation_id, step_run in run.steps.items():
        inputs = {
            name: [v.producer.invocation_id for v in value]
            if isinstance(value, list)
            else value.producer.invocation_id
            for name, value in step_run.inputs.items()
        }
        picture[invocation_id] = (
            str(step_run.status),
            {name: version.load() for name, version in step_run.outputs.items()},
            sorted(step_run.upstream),
            inputs,
        )
    return picture


def test_deleting_an_isolated_steps_job_fails_the_step_and_the_run(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.dynamic_long_nap, {"salt": "job-deleted"})
    _wait_for(
        lambda: (
            kstep_cluster.step_phases(name).get("nap") == "running"
            and any(j.metadata.name.endswith("-1") for j in kstep_cluster.jobs())
        ),
        "the nap step's Job",
    )
    job = next(j for j in kstep_cluster.jobs() if j.metadata.name.endswith("-1"))

    kstep_cluster.batch.delete_namespaced_job(
        job.metadata.name, kstep_cluster.namespace, propagation_policy="Background"
    )
    run = kstep_cluster.wait(name, timeout=120)

    nap = kstep_cluster.step_runs(name)["nap"]["status"]
    assert (nap["phase"], nap["reason"]) == ("failed", "JobDeleted"), nap
    assert f"its Job {job.metadata.name!r} was deleted" in nap["message"]
    assert run["status"]["phase"] == "failed"
    assert "was deleted" in run["status"]["message"]


def test_deleting_the_orchestrator_job_fails_the_run_with_a_reason(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.dynamic_long_nap, {"salt": "orchestrator-deleted"})
    _wait_for(lambda: kstep_cluster.step_phases(name).get("nap") == "running", "the nap step")
    job_name = kstep_cluster.run(name)["status"]["orchestratorJob"]

    kstep_cluster.batch.delete_namespaced_job(
        job_name, kstep_cluster.namespace, propagation_policy="Background"
    )
    run = kstep_cluster.wait(name, timeout=60)

    assert run["status"]["phase"] == "failed"
    assert run["status"]["conditions"][0]["reason"] == "OrchestratorDeleted"
    assert kstep_cluster.step_phases(name)["nap"] == "cancelled"
    _wait_for(lambda: not kstep_cluster.jobs(), "the nap Job to be deleted")


def test_an_orchestrator_that_keeps_crashing_fails_the_run_after_its_restart_limit(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.dynamic_crashing, {"salt": "crashing"})

    run = kstep_cluster.wait(name, timeout=180)

    assert run["status"]["phase"] == "failed"
    assert run["status"]["conditions"][0]["reason"] == "OrchestratorFailed"
    assert "BackoffLimitExceeded" in run["status"]["message"]
    assert kstep_cluster.step_phases(name) == {"seed": "completed"}


def test_an_inline_step_its_orchestrator_died_in_ends_failed_with_the_run(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.dynamic_dying_in_a_step, {"salt": "dying"})

    run = kstep_cluster.wait(name, timeout=180)

    assert run["status"]["phase"] == "failed"
    step_runs = kstep_cluster.step_runs(name)
    assert {i: s["status"]["phase"] for i, s in step_runs.items()} == {
        "seed": "completed",
        "fatal": "failed",
    }
    assert step_runs["fatal"]["status"]["reason"] == "OrchestratorLost"
    assert step_runs["seed"]["status"]["outputs"]


def _wait_for(condition: Any, what: str, timeout: float = 90.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
