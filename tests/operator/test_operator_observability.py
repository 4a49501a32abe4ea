"""What a user sees of runs besides their status: Events, metrics and step logs."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import Cluster, wait_for

pytestmark = pytest.mark.cluster


def _events(cluster: Cluster) -> list[dict[str, Any]]:
    """`kubectl get events`, as a user would list them."""
    listed = cluster.kubectl("get", "events", "-n", cluster.namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    # In the order they were posted: timestamps have whole seconds, and the test bed's
    # resource versions are etcd revisions, which grow with every write.
    items = json.loads(listed.stdout)["items"]
    return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))


def _reasons(events: list[dict[str, Any]], kind: str, name: str) -> list[str]:
    return [
        e["reason"]
        for e in events
        if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
    ]


def test_events_show_started_completed_and_failed_for_runs_and_steps(
    kstep_cluster: Cluster,
) -> None:
    failing = kstep_cluster.submit(steps.branches, {"salt": "events"})
    passing = kstep_cluster.submit(steps.chain, {"length": 2, "salt": "events"})
    kstep_cluster.wait(failing)
    kstep_cluster.wait(passing)
    names = {
        (run, i): s["metadata"]["name"]
        for run in (failing, passing)
        for i, s in kstep_cluster.step_runs(run).items()
    }

    def complete() -> list[dict[str, Any]] | None:
        # Events are posted after the status they describe.
        found = _events(kstep_cluster)
        return found if "Failed" in _reasons(found, "PipelineRun", failing) else None

    events = wait_for(complete, "the failed run's event", timeout=10)

    assert _reasons(events, "PipelineRun", passing) == ["Started", "Completed"]
    assert _reasons(events, "PipelineRun", failing) == ["Started", "Failed"]
    assert _reasons(events, "StepRun", names[(passing, "seed")]) == ["Started", "Completed"]
    assert _reasons(events, "StepRun", names[(failing, "broken")]) == [
        "Started",
        "AttemptFailed",
        "Retrying",
        "Failed",
    ]
    assert _reasons(events, "StepRun", names[(failing, "square")]) == ["Skipped"]
    by_reason = {
        e["reason"]: e
        for e in events
        if e["involvedObject"]["name"] in (failing, names[(failing, "broken")])
    }
    assert by_reason["Failed"]["type"] == "Warning"
    assert "broken step got 1" in by_reason["Failed"]["message"]
    assert by_reason["Started"]["source"]["component"] == "kstep-operator"


def test_metrics_count_runs_steps_cache_hits_and_transitions(kstep_cluster: Cluster) -> None:
    first = kstep_cluster.submit(steps.fan, {"n": 2, "salt": "metrics"})
    kstep_cluster.wait(first)
    second = kstep_cluster.submit(steps.fan, {"n": 2, "salt": "metrics"})
    kstep_cluster.wait(second)

    expected = {
        ("kstep_pipeline_runs_total", "completed"): 2,
        ("kstep_step_runs_total", "completed", "inline"): 5,
        ("kstep_step_runs_total", "completed", "isolated"): 2,
        ("kstep_step_runs_total", "cached", "inline"): 5,
        ("kstep_step_runs_total", "cached", "isolated"): 2,
        ("kstep_cache_hits_total",): 7,
        ("kstep_step_duration_seconds_count", "inline"): 5,
        ("kstep_step_duration_seconds_count", "isolated"): 2,
        # Each run has 5 steps with upstream steps: square and cube of each seed, and total.
        ("kstep_transition_latency_seconds_count",): 10,
        ("kstep_reconcile_errors_total", "run"): 0,
        ("kstep_reconcile_errors_total", "step"): 0,
    }
    label_names = {
        "kstep_pipeline_runs_total": ("outcome",),
        "kstep_step_runs_total": ("outcome", "runtime"),
        "kstep_step_duration_seconds_count": ("runtime",),
        "kstep_reconcile_errors_total": ("kind",),
    }
    found: dict[Any, float] = {}

    def sample(name: str, **labels: str) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    def actual() -> dict[tuple[str, ...], float]:
        found.clear()
        found.update(kstep_cluster.metrics())
        return {
            key: sample(key[0], **dict(zip(label_names.get(key[0], ()), key[1:], strict=True)))
            for key in expected
        }

    # A run's counter moves just after its status says it ended; the diff tells the rest.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: actual() == expected, "the counters to settle", timeout=10, interval=0.5)
    assert actual() == expected
    assert sample("kstep_reconcile_duration_seconds_count", kind="run") > 0
    assert sample("kstep_reconcile_duration_seconds_count", kind="step") > 0
    assert ("kstep_queue_depth", ()) in found
    metric = kstep_cluster.metric
    wait_for(
        lambda: metric("kstep_pipeline_runs_active") == 0 and metric("kstep_step_runs_active") == 0,
        "the gauges to show nothing running",
        timeout=10,
    )


def test_isolated_step_logs_are_readable_after_its_job_is_deleted(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.fan, {"n": 1, "salt": "logs"})
    run = kstep_cluster.wait(name)
    assert run["status"]["phase"] == "completed"

    for job in kstep_cluster.jobs(name):
        kstep_cluster.delete_job(job.metadata.name)
    wait_for(lambda: not kstep_cluster.jobs(name), "the Jobs to be deleted")
    wait_for(lambda: not kstep_cluster.pods(name), "the pods to be deleted")

    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    assert "cubing 1 in pid" in recorded.steps["cube"].logs()
    assert "seeding 1" in recorded.steps["seed"].logs()
    logs_uri = kstep_cluster.step_runs(name)["cube"]["status"]["logsUri"]
    assert logs_uri.endswith(f"/{recorded.steps['cube'].id}.log")


def test_isolated_step_logs_are_readable_while_it_runs_and_after_its_pod_is_killed(
    kstep_cluster: Cluster,
) -> None:
    name = kstep_cluster.submit(steps.nap_beside_a_branch, {"seconds": 60})
    run_id = wait_for(lambda: kstep_cluster.run(name).get("status", {}).get("runId"), "a run id")
    client = kstep_cluster.client()

    def napping() -> bool:
        nap = client.get_run(run_id).steps.get("nap")
        return nap is not None and nap.status == "running" and "napping 60" in nap.logs()

    wait_for(napping, "the nap's log to show while it runs", timeout=60, interval=0.5)
    kstep_cluster.delete_job(kstep_cluster.step_runs(name)["nap"]["status"]["jobName"])
    kstep_cluster.wait(name)
    wait_for(lambda: not kstep_cluster.pods(name), "the pods to be deleted")

    nap = client.get_run(run_id).steps["nap"]
    assert nap.status == "failed"
    assert "napping 60" in nap.logs()
    logs_uri = kstep_cluster.step_runs(name)["nap"]["status"]["logsUri"]
    assert logs_uri.endswith(f"/{nap.id}.log")
