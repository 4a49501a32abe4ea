"""Dynamic pipelines on the test control plane: the orchestrator pod and its StepRuns."""

from __future__ import annotations

import json

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
