"""Leader election between two operator processes on the test control plane.

Each operator runs with its own inline executor, as each replica of the chart's Deployment
does. The leader is killed with its executor (as when its pod dies) while an isolated step's
Job runs; the standby takes the Lease over, adopts the Job and finishes the run, and runs
submitted meanwhile. The side channel counts every step body's start: none runs twice.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import (
    BIN,
    Cluster,
    OperatorProcesses,
    free_port,
    python_path,
    side_channel_counts,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

LEASE = "kstep-operator"
DURATION, RENEW = 4.0, 1.0


@dataclass
class Replica:
    identity: str
    processes: OperatorProcesses

    def metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.processes.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def kill(self) -> None:
        """SIGKILL the operator and its executor, as when the pod dies."""
        self.processes.kill_operator()
        executor = self.processes.executor
        if executor is not None and executor.poll() is None:
            executor.kill()
            executor.wait()


@pytest.fixture
def replicas(
    control_plane: Any,
    kubelet_standin: Any,
    namespace: str,
    kstep_crds: None,
    store_env: dict[str, str],
    side_channel: Path,
    tmp_path: Path,
) -> Iterator[tuple[Cluster, list[Replica]]]:
    """Two operators with leader election on one Lease; the first started leads."""
    api = control_plane.api_client("admin")
    code_env = {"PYTHONPATH": python_path(), "KSTEP_TEST_SIDE_CHANNEL": str(side_channel)}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in {**store_env, **code_env}.items()}
    for manifest in (
        {"kind": "Secret", "metadata": {"name": "kstep-stores"}, "data": data},
        {
            "kind": "ServiceAccount",
            "metadata": {"name": "kstep-step"},
            "automountServiceAccountToken": False,
        },
    ):
        body = json.dumps({"apiVersion": "v1", **manifest})
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=body)

    started: list[Replica] = []
    for identity in ("replica-a", "replica-b"):
        workdir = tmp_path / identity
        workdir.mkdir()
        processes = OperatorProcesses(
            environment={},
            workdir=workdir,
            socket_path=workdir / "executor.sock",
            metrics_port=free_port(),
        )
        processes.environment.update(
            {
                "PATH": str(BIN),
                "HOME": str(workdir),
                "KUBECONFIG": str(control_plane.admin_kubeconfig),
                "KSTEP_HOME": str(workdir / "home"),
                "KSTEP_OPERATOR_NAMESPACES": json.dumps([namespace]),
                "KSTEP_OPERATOR_IMAGE": "kstep:test",
                "KSTEP_OPERATOR_SWEEP_SECONDS": "0.5",
                "KSTEP_OPERATOR_LOST_JOB_GRACE_SECONDS": "2",
                "KSTEP_OPERATOR_EXECUTOR_SOCKET": str(processes.socket_path),
                "KSTEP_OPERATOR_METRICS_PORT": str(processes.metrics_port),
                "KSTEP_OPERATOR_LEADER_ELECTION": "true",
                "KSTEP_OPERATOR_LEASE_NAME": LEASE,
                "KSTEP_OPERATOR_LEASE_NAMESPACE": namespace,
                "KSTEP_OPERATOR_LEASE_DURATION_SECONDS": str(DURATION),
                "KSTEP_OPERATOR_LEASE_RENEW_SECONDS": str(RENEW),
                "KSTEP_OPERATOR_IDENTITY": identity,
                **store_env,
                **code_env,
            }
        )
        processes.start_executor()
        processes.start_operator()
        started.append(Replica(identity, processes))
        if identity == "replica-a":
            wait_for(lambda: lease_holder(control_plane, namespace) == "replica-a", "a to lead")

    def kubectl(*args: str, input: str | None = None) -> Any:
        return control_plane.kubectl(*args, stdin=input, check=False)

    cluster = Cluster(api, namespace, started[0].processes, store_env, kubectl)
    try:
        yield cluster, started
    finally:
        for replica in started:
            replica.processes.stop()


def lease_holder(control_plane: Any, namespace: str) -> str | None:
    found = control_plane.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    holder: str | None = json.loads(found.stdout)["spec"].get("holderIdentity")
    return holder


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Wait until `condition` holds; return how long it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if condition():
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_standby_takes_over_a_killed_leader_and_no_step_runs_twice(
    replicas: tuple[Cluster, list[Replica]],
    control_plane: Any,
    side_channel: Path,
) -> None:
    cluster, (leader, standby) = replicas
    namespace = cluster.namespace

    # The standby serves metrics, says it does not lead, and reconciles nothing.
    wait_for(lambda: standby.metric("kstep_operator_leader") == 0.0, "the standby's metrics")
    assert leader.metric("kstep_operator_leader") == 1.0

    first = cluster.submit(steps.sleepy, {"seconds": 8.0})
    wait_for(
        lambda: cluster.step_phases(first).get("nap") == "running" and side_channel.exists(),
        "the isolated nap step to start",
    )
    leader.kill()
    killed_at = time.monotonic()
    second = cluster.submit(steps.fan, {"n": 2})

    wait_for(lambda: lease_holder(control_plane, namespace) == "replica-b", "b to lead", 30)
    takeover = time.monotonic() - killed_at
    runs = [cluster.wait(name, timeout=120) for name in (first, second)]

    assert [run["status"]["phase"] for run in runs] == ["completed", "completed"], [
        cluster.step_phases(name) for name in (first, second)
    ]
    assert takeover < DURATION + 3 * RENEW, f"the standby took over after {takeover:.1f} s"
    assert standby.metric("kstep_operator_leader") == 1.0
    counts = side_channel_counts(side_channel)
    starts = {key: count for key, count in counts.items() if key[2] == "start"}
    assert starts and all(count == 1 for count in starts.values()), starts
    assert {key[:2] for key in starts} == {key[:2] for key in counts if key[2] == "end"}
    nap_jobs = [j for j in cluster.jobs() if j.metadata.labels.get("kstep.dev/invocation") == "nap"]
    assert len(nap_jobs) == 1
    lease = json.loads(
        control_plane.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json").stdout
    )
    assert lease["spec"]["leaseTransitions"] == 1
    print(f"the standby took over {takeover:.1f} s after the leader was killed")


def test_leader_exits_non_zero_when_another_replica_takes_its_lease(
    replicas: tuple[Cluster, list[Replica]],
    control_plane: Any,
) -> None:
    cluster, (leader, _) = replicas
    operator = leader.processes.operator
    assert operator is not None

    # Someone else writes the Lease (as a replica that judged it expired would).
    patch = {"spec": {"holderIdentity": "intruder", "renewTime": None}}
    control_plane.kubectl(
        "patch", "lease", LEASE, "-n", cluster.namespace, "--type=merge", "-p", json.dumps(patch)
    )

    wait_for(lambda: operator.poll() is not None, "the leader to exit", timeout=DURATION * 3)
    assert operator.returncode == 1
    assert "lost the leader Lease (intruder holds the Lease now)" in leader.processes.log_text()
    # The standby, which still saw the Lease change, does not take it before it expires.
    assert lease_holder(control_plane, cluster.namespace) == "intruder"
    wait_for(
        lambda: lease_holder(control_plane, cluster.namespace) == "replica-b",
        "b to take the abandoned Lease over",
        timeout=DURATION * 4,
    )
