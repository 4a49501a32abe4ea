"""The operator is idempotent: reconciling twice, or again after a crash, repeats nothing.

Every object it creates has a deterministic name and is adopted when it exists; every
attempt's outcome lives in the metadata store. So a reconcile that runs twice on the same
observations, or an operator killed at any moment and restarted, creates no second StepRun
or Job and runs no step body twice (counted in the steps' side channel).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import GROUP, VERSION, Cluster, environment, side_channel_counts, wait_for

from kstep.cluster import names

pytestmark = pytest.mark.cluster

_TERMINAL = ("completed", "failed", "cancelled")


def _assert_ran_exactly_once(
    cluster: Cluster, run_names: list[str], invocations: dict[str, str]
) -> None:
    """Each run completed, with one StepRun per invocation, one Job per isolated one, one
    attempt each, and each step body started and ended once."""
    counts = side_channel_counts(cluster.side_channel)
    client = cluster.client()
    for name in run_names:
        run = cluster.run(name)
        assert run["status"]["phase"] == "completed", (name, run["status"])
        step_runs = cluster.step_runs(name)
        assert sorted(step_runs) == sorted(invocations)
        for invocation_id, step_run in step_runs.items():
            assert step_run["metadata"]["name"] == names.step_run_name(name, invocation_id)
            assert step_run["status"]["attempts"] == 1, step_run["status"]
        isolated = sorted(i for i, runtime in invocations.items() if runtime == "isolated")
        jobs = sorted(job.metadata.labels["kstep.dev/invocation"] for job in cluster.jobs(name))
        assert jobs == isolated, name
        recorded = client.get_run(run["status"]["runId"])
        assert recorded.status == "completed"
        for invocation_id in invocations:
            attempts = recorded.steps[invocation_id].attempts
            assert [a.status for a in attempts] == ["completed"], (name, invocation_id)
            for event in ("start", "end"):
                assert counts.get((name, invocation_id, event)) == 1, (name, invocation_id, event)


# ------------------------------------------------------------------ reconciling twice


class _InProcessOperator:
    """The operator's controllers in this process, fed with observations we choose."""

    def __init__(self, cluster: Cluster) -> None:
        from kstep._settings import Settings
        from kstep.stores import Stores
        from kstep_operator.context import Operator
        from kstep_operator.kube import Kube
        from kstep_operator.settings import OperatorSettings

        self.cluster = cluster
        env = cluster.store_env
        store_settings = Settings(
            home=str(cluster.processes.workdir / "in-process-home"),
            metadata_url=env["KSTEP_METADATA_URL"],
            artifact_root=env["KSTEP_ARTIFACT_ROOT"],
            s3_endpoint_url=env["KSTEP_S3_ENDPOINT_URL"],
        )
        settings = OperatorSettings(
            namespaces=[cluster.namespace], image="kstep:test", metrics_port=0
        )
        self.op = Operator(
            settings,
            store_settings,
            Kube(cluster.api_client),
            Stores.open(store_settings),
            str(cluster.processes.socket_path),
        )
        self.op.executor.start()
        assert self.op.executor.ready.wait(30), "the inline executor did not answer"

    def observe(self) -> list[tuple[str, dict[str, Any]]]:
        """What the watches list: every run, StepRun and step Job of the namespace now."""
        namespace = self.cluster.namespace
        custom = self.cluster.custom
        seen: list[tuple[str, dict[str, Any]]] = []
        for plural, kind in (("pipelineruns", "run"), ("stepruns", "step")):
            listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            seen.extend((kind, item) for item in listed["items"])
        for job in self.cluster.api_client.sanitize_for_serialization(self.cluster.jobs()):
            seen.append(("job", {"apiVersion": "batch/v1", "kind": "Job", **job}))
        return seen

    def use(self, seen: list[tuple[str, dict[str, Any]]]) -> None:
        """Give the operator a fresh cache holding (copies of) these observations."""
        from kstep_operator.cache import ObjectCache

        cache = ObjectCache()
        put = {"run": cache.put_run, "step": cache.put_step, "job": cache.put_job}
        for kind, body in copy.deepcopy(seen):
            put[kind](body)
        cache.synced.set()
        self.op.cache = cache

    def reconcile_twice(self, name: str) -> None:
        """Reconcile the run and each of its StepRuns twice on the same observations."""
        from kstep_operator import runs
        from kstep_operator import steps as step_controller

        namespace = self.cluster.namespace
        seen = self.observe()
        for _ in range(2):
            self.use(seen)
            runs.reconcile_run(self.op, namespace, name)
        step_runs = [body for kind, body in seen if kind == "step"]
        for step_run in step_runs:
            for _ in range(2):
                self.use(seen)
                step_controller.reconcile_step(self.op, namespace, step_run["metadata"]["name"])

    def close(self) -> None:
        self.op.executor.stop()
        self.op.stores.metadata.close()


def test_reconciling_twice_on_the_same_observations_creates_and_runs_nothing_twice(
    kstep_cluster: Cluster,
) -> None:
    # This test is the operator: the process the fixture started must not compete.
    kstep_cluster.processes.kill_operator()
    # With the store Secret named, inline steps get its side channel too.
    name = kstep_cluster.submit(steps.fan, {"n": 2, "salt": "twice"}, store_secret="kstep-stores")
    with environment(kstep_cluster.store_env):
        operator = _InProcessOperator(kstep_cluster)
        try:
            deadline = time.monotonic() + 120
            while kstep_cluster.run(name).get("status", {}).get("phase") not in _TERMINAL:
                assert time.monotonic() < deadline, kstep_cluster.step_phases(name)
                operator.reconcile_twice(name)
                time.sleep(0.2)
        finally:
            operator.close()

    invocations = {
        "seed": "inline",
        "seed_2": "inline",
        "square": "inline",
        "square_2": "inline",
        "cube": "isolated",
        "cube_2": "isolated",
        "total": "inline",
    }
    _assert_ran_exactly_once(kstep_cluster, [name], invocations)


# ------------------------------------------------------------------ crashing


@pytest.fixture
def kills() -> Iterator[random.Random]:
    """Random moments to kill the operator at, reproducible from the seed printed."""
    seed = random.randrange(2**32)
    print(f"kill moments seeded with {seed}")
    yield random.Random(seed)


@pytest.mark.slow
def test_operator_killed_at_random_moments_completes_every_run_running_each_step_once(
    kstep_cluster: Cluster, kills: random.Random
) -> None:
    processes = kstep_cluster.processes
    run_names = [
        kstep_cluster.submit(steps.mixed, {"n": n}, store_secret="kstep-stores")
        for n in range(1, 21)
    ]

    def all_finished() -> bool:
        listed = kstep_cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, kstep_cluster.namespace, "pipelineruns"
        )["items"]
        phases = [(r.get("status") or {}).get("phase") for r in listed]
        return len(phases) == len(run_names) and all(p in _TERMINAL for p in phases)

    def serving() -> bool:
        try:
            return kstep_cluster.metric("kstep_operator_leader") == 1
        except OSError:
            return False

    # Kill the operator (SIGKILL) at random moments of its work while the runs go on, and
    # restart it at once; the executor keeps running, as its own container would.
    killed = 0
    started = time.monotonic()
    while killed < 10 and time.monotonic() - started < 100:
        wait_for(serving, "the operator to serve", timeout=60)
        time.sleep(kills.uniform(0.2, 3.0))
        if all_finished():
            break
        processes.kill_operator()
        processes.start_operator()
        killed += 1
    wait_for(all_finished, "every run to finish", timeout=150, interval=0.5)

    assert killed >= 3, "the runs finished before the operator could be killed often"
    invocations = {"seed": "inline", "cube": "isolated", "square": "inline", "total": "inline"}
    _assert_ran_exactly_once(kstep_cluster, run_names, invocations)
