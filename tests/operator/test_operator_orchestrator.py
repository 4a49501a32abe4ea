"""A dynamic run's orchestrator pod dies at random moments: the runs still complete, once."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import operator_steps as steps
import pytest
from operator_harness import Cluster, side_channel_counts

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_orchestrator_pods_deleted_at_random_never_repeat_completed_steps(
    kstep_cluster: Cluster, side_channel: Path
) -> None:
    names = [
        kstep_cluster.submit(steps.dynamic_restartable, {"n": 4, "salt": f"restart-{i}"})
        for i in range(10)
    ]
    chooser = random.Random(7)
    deleted = 0
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        time.sleep(chooser.uniform(0.3, 1.5))
        pods = [
            pod
            for pod in kstep_cluster.core.list_namespaced_pod(
                kstep_cluster.namespace, label_selector="kstep.dev/role=orchestrator"
            ).items
            if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp
        ]
        if not pods:
            continue
        victim = chooser.choice(pods)
        kstep_cluster.core.delete_namespaced_pod(
            victim.metadata.name, kstep_cluster.namespace, grace_period_seconds=0
        )
        deleted += 1

    runs = {name: kstep_cluster.wait(name, timeout=300) for name in names}

    assert deleted >= 5
    for name, run in runs.items():
        assert run["status"]["phase"] == "completed", (name, json.dumps(run["status"])[-1500:])
        recorded = kstep_cluster.client().get_run(run["status"]["runId"])
        assert recorded.steps["square"].outputs["output"].load() == (4 + 4) ** 2
    # A body that reached its end in a pod killed before the step's outcome was recorded did
    # not complete: that attempt is recorded as failed and the step runs again. What must
    # never happen is a second recorded completion, or a body ending more often than one
    # completion plus the attempts that never recorded theirs allow. (A `cached` row reuses
    # another execution's outputs: nothing ran.)
    ends = {
        key: count for key, count in side_channel_counts(side_channel).items() if key[2] == "end"
    }
    metadata = kstep_cluster.client().stores.metadata
    repeated: dict[tuple[str, str], str] = {}
    unfinished: list[tuple[str, str, str]] = []
    for name, run in runs.items():
        statuses: dict[str, list[str]] = {}
        for row in metadata.step_runs_of(run["status"]["runId"]):
            statuses.setdefault(row.invocation_id, []).append(row.status)
            if row.runtime == "inline" and row.status in ("pending", "running"):
                unfinished.append((name, row.invocation_id, row.status))
        for invocation, found in statuses.items():
            completions = found.count("completed")
            unrecorded = sum(1 for status in found if status in ("failed", "running"))
            executed = ends.get((name, invocation, "end"), 0)
            if completions > 1 or executed > completions + unrecorded:
                repeated[(name, invocation)] = f"{executed} ends; attempts {found}"
    assert not repeated, f"completed steps executed again: {repeated}"
    # Each inline attempt a deleted pod was running is recorded as failed by the next pod.
    assert not unfinished, f"inline attempts left unfinished in completed runs: {unfinished}"
