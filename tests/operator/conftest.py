"""Fixtures of the operator tests: CRDs, stores, and the operator running as processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Cluster, apply_crds, operator_cluster, store_settings

from testbed.processes import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def kstep_crds(control_plane: Any) -> None:
    """The project's CRDs, applied once and established."""
    apply_crds(control_plane.admin_kubeconfig)


@pytest.fixture
def store_env(fresh_postgres_url: str, s3: Any) -> dict[str, str]:
    """Store settings every component of a test shares: a fresh database and S3 bucket."""
    return store_settings(fresh_postgres_url, s3)


@pytest.fixture
def side_channel(tmp_path: Path) -> Path:
    return tmp_path / "side-channel.log"


@pytest.fixture
def operator_settings() -> dict[str, str]:
    """More KSTEP_OPERATOR_* settings of the operator; a test parametrizes it to change them."""
    return {}


@pytest.fixture
def kstep_cluster(
    control_plane: Any,
    kubelet_standin: Any,
    namespace: str,
    kstep_crds: None,
    store_env: dict[str, str],
    side_channel: Path,
    tmp_path: Path,
    operator_settings: dict[str, str],
) -> Iterator[Cluster]:
    """The operator and its executor watching a fresh namespace, with the stores it needs."""
    with operator_cluster(
        control_plane,
        namespace,
        store_env,
        side_channel,
        tmp_path / "operator",
        standin=kubelet_standin,
        settings=operator_settings,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_cluster(
    control_plane: Any,
    kubelet_standin: Any,
    kstep_crds: None,
    postgres: Any,
    _testbed_s3_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """One operator for a whole module, in its own namespace, database and bucket.

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
                store_settings(postgres.create_database(), bucket),
                workdir / "side-channel.log",
                workdir / "operator",
                standin=kubelet_standin,
            ) as cluster:
                yield cluster
        finally:
            core.delete_namespace(namespace, propagation_policy="Background")
            _testbed_s3_server.delete_bucket(bucket)
