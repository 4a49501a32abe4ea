"""Fixtures of the operator tests: CRDs, stores, and the operator running as processes."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import BIN, HERE, ROOT, Cluster, OperatorProcesses, free_port

from testbed.processes import wait_until

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


def _store_env(postgres_url: str, s3: Any) -> dict[str, str]:
    return {
        "KSTEP_METADATA_URL": postgres_url,
        "KSTEP_ARTIFACT_ROOT": s3.uri("kstep"),
        "KSTEP_S3_ENDPOINT_URL": s3.endpoint_url,
        **{k: v for k, v in s3.env.items() if not k.startswith("AWS_ENDPOINT")},
    }


@pytest.fixture
def store_env(postgres_url: str, s3: Any) -> dict[str, str]:
    """Store settings every component of a test shares: Postgres and a fresh S3 bucket."""
    return _store_env(postgres_url, s3)


@pytest.fixture
def side_channel(tmp_path: Path) -> Path:
    return tmp_path / "side-channel.log"


@contextlib.contextmanager
def operator_cluster(
    control_plane: Any,
    namespace: str,
    store_env: dict[str, str],
    side_channel: Path,
    workdir: Path,
) -> Iterator[Cluster]:
    """Start the operator and its executor watching `namespace`, with the stores it needs."""
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

    workdir.mkdir()
    # The operator's own credentials, where a user's inline code must not find them: a
    # kubeconfig in its environment and in its home directory, and the variables every
    # container of a pod gets.
    (workdir / ".kube").mkdir()
    shutil.copy(control_plane.admin_kubeconfig, workdir / ".kube" / "config")
    environment = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(workdir),
        "KUBECONFIG": str(control_plane.admin_kubeconfig),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
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
        yield Cluster(api, namespace, processes, store_env, kubectl, side_channel)
    finally:
        processes.stop()
        api.close()


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
    with operator_cluster(
        control_plane, namespace, store_env, side_channel, tmp_path / "operator"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_cluster(
    control_plane: Any,
    kubelet_standin: Any,
    kstep_crds: None,
    postgres_url: str,
    _testbed_s3_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """One operator for a whole module, in its own namespace and bucket.

    For tests whose runs cannot disturb each other (each names its own runs): starting an
    operator takes seconds on a busy machine.
    """
    from kubernetes import client

    workdir = tmp_path_factory.mktemp("shared")
    module = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    namespace = f"{module[:40]}-{secrets.token_hex(3)}"
    bucket = _testbed_s3_server.create_bucket()
    with control_plane.api_client("admin") as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        # Pods are admitted once the namespace's default ServiceAccount exists.
        wait_until(
            lambda: core.read_namespaced_service_account("default", namespace) is not None,
            timeout=30,
            what=f"namespace {namespace} getting its default ServiceAccount",
        )
        try:
            with operator_cluster(
                control_plane,
                namespace,
                _store_env(postgres_url, bucket),
                workdir / "side-channel.log",
                workdir / "operator",
            ) as cluster:
                yield cluster
        finally:
            core.delete_namespace(namespace, propagation_policy="Background")
            _testbed_s3_server.delete_bucket(bucket)
