"""Fixtures of the operator tests: CRDs, stores, and the operator running as processes."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import BIN, HERE, ROOT, Cluster, OperatorProcesses, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def kstep_crds(control_plane: Any) -> None:
    """The project's CRDs, applied once and established."""
    kubectl = [str(BIN / "kubectl"), f"--kubeconfig={control_plane.admin_kubeconfig}"]
    subprocess.run([*kubectl, "apply", "-f", str(ROOT / "crds")], check=True, capture_output=True)
    subprocess.run(
        [
            *kubectl,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/pipelineruns.kstep.dev",
            "crd/stepruns.kstep.dev",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def store_env(postgres_url: str, s3: Any) -> dict[str, str]:
    """Store settings every component of a test shares: Postgres and a fresh S3 bucket."""
    return {
        "KSTEP_METADATA_URL": postgres_url,
        "KSTEP_ARTIFACT_ROOT": s3.uri("kstep"),
        "KSTEP_S3_ENDPOINT_URL": s3.endpoint_url,
        **{k: v for k, v in s3.env.items() if not k.startswith("AWS_ENDPOINT")},
    }


@pytest.fixture
def side_channel(tmp_path: Path) -> Path:
    return tmp_path / "side-channel.log"


@pytest.fixture
def kstep_cluster(
    control_plane: Any,
    kubelet_standin: Any,
    namespace: str,
    kstep_crds: None,
    store_env: dict[str, str],
    side_channel: Path,
    tmp_path: Path,
) -> Iterator[Cluster]:
    """The operator and its executor watching a fresh namespace, with the stores it needs."""
    from kubernetes import client

    api = control_plane.api_client("admin")
    core = client.CoreV1Api(api)
    code_env = {"PYTHONPATH": str(HERE), "KSTEP_TEST_SIDE_CHANNEL": str(side_channel)}
    secret_data = {**store_env, **code_env}
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "kstep-stores"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()},
        },
    )
    core.create_namespaced_service_account(
        namespace, {"metadata": {"name": "kstep-step"}, "automountServiceAccountToken": False}
    )
    _grant_orchestrator(api, namespace)

    workdir = tmp_path / "operator"
    workdir.mkdir()
    environment = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(workdir),
        "KUBECONFIG": str(control_plane.admin_kubeconfig),
        "KSTEP_HOME": str(workdir / "home"),
        "KSTEP_OPERATOR_NAMESPACES": f'["{namespace}"]',
        "KSTEP_OPERATOR_IMAGE": "kstep:test",
        "KSTEP_OPERATOR_LOST_JOB_GRACE_SECONDS": "2",
        "KSTEP_OPERATOR_SWEEP_SECONDS": "0.5",
        **store_env,
        **code_env,
    }
    processes = OperatorProcesses(
        environment=environment,
        workdir=workdir,
        socket_path=workdir / "executor.sock",
        metrics_port=free_port(),
    )
    environment["KSTEP_OPERATOR_EXECUTOR_SOCKET"] = str(processes.socket_path)
    environment["KSTEP_OPERATOR_METRICS_PORT"] = str(processes.metrics_port)
    processes.start_executor()
    processes.start_operator()

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={control_plane.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
        )

    try:
        yield Cluster(api, namespace, processes, store_env, kubectl, kubelet_standin)
    finally:
        processes.stop()


def _grant_orchestrator(api: Any, namespace: str) -> None:
    """The orchestrator's service account: read runs, manage StepRuns, in this namespace."""
    from kubernetes import client

    client.CoreV1Api(api).create_namespaced_service_account(
        namespace, {"metadata": {"name": "kstep-orchestrator"}}
    )
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "kstep-orchestrator"},
            "rules": [
                {
                    "apiGroups": ["kstep.dev"],
                    "resources": ["pipelineruns"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["kstep.dev"],
                    "resources": ["stepruns", "stepruns/status"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update"],
                },
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "kstep-orchestrator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "kstep-orchestrator",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "kstep-orchestrator", "namespace": namespace}
            ],
        },
    )
