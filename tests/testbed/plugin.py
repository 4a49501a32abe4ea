"""pytest fixtures of the test bed, registered from ``tests/conftest.py``.

Fixtures:

- ``control_plane`` (session): a ``ClusterAccess`` for the test control plane (started on first
  use, with the kubelet stand-in), or for the cluster of ``KSTEP_TEST_KUBECONFIG``.
- ``kubelet_standin`` (session): the ``KubeletStandIn`` running the control plane's pods; skips
  against an existing cluster, whose kubelets run pods.
- ``namespace`` (function): a fresh namespace, ready for pods, deleted afterwards.
- ``helm`` (session): path of the pinned helm binary.
- ``postgres`` (session): the ``PostgresServer``; ``postgres_url`` (session): the SQLAlchemy URL
  of a fresh database in it.
- ``s3`` (function): an ``S3Bucket`` freshly created on the test S3 server.
- ``testbed_figures`` (session): a dict of measurements shown in the terminal summary.

A component that cannot be found skips the tests that need it, naming what to do. With
``KSTEP_TEST_REQUIRE_ALL=1`` (as in CI) such tests fail instead, so nothing is silently skipped.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from testbed.binaries import bin_dir, missing_binaries
from testbed.processes import wait_until

# The components' modules import the Kubernetes client, SQLAlchemy and boto3, which costs
# most of a second: they are imported when a fixture first needs them, so that test runs
# that use none of them start as fast as without the test bed.
if TYPE_CHECKING:
    from testbed.controlplane import ClusterAccess
    from testbed.kubelet_standin import KubeletStandIn
    from testbed.postgres import PostgresServer
    from testbed.s3 import S3Bucket, S3Server

logger = logging.getLogger(__name__)

_FIGURES: dict[str, str] = {}
_RUN_DIRS: dict[str, Path] = {}


def require_component(reason: str) -> NoReturn:
    """Skip the current test for a missing component, or fail it when all are required."""
    if os.environ.get("KSTEP_TEST_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (KSTEP_TEST_REQUIRE_ALL=1: missing components fail)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------- cluster


@dataclass
class _Cluster:
    access: ClusterAccess
    standin: KubeletStandIn | None


@pytest.fixture(scope="session")
def _testbed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Cluster]:
    from testbed.controlplane import ControlPlane, connect_existing
    from testbed.kubelet_standin import KubeletStandIn

    run_dir = tmp_path_factory.mktemp("cluster")
    _RUN_DIRS["cluster"] = run_dir
    existing = os.environ.get("KSTEP_TEST_KUBECONFIG")
    if existing:
        access = connect_existing(Path(existing), run_dir)
        _FIGURES["cluster"] = f"existing cluster at {access.server} (KSTEP_TEST_KUBECONFIG)"
        yield _Cluster(access, None)
        return

    directory = bin_dir()
    missing = missing_binaries(directory)
    if missing:
        require_component(
            f"test control plane binaries not found in {directory}; run "
            f"hack/testbed-binaries.sh (missing: {', '.join(missing)})"
        )
    plane = ControlPlane(directory, run_dir)
    access = plane.start()
    standin: KubeletStandIn | None = None
    try:
        assert access.admin_token is not None and access.ca_path is not None
        standin = KubeletStandIn(
            server=access.server,
            token=access.admin_token,
            ca_path=access.ca_path,
            run_dir=run_dir,
            serving_cert=plane.issue_serving_cert("kubelet-standin"),
        ).start()
        steps = ", ".join(
            f"{step} {seconds:.2f}" for step, seconds in access.timings.items() if step != "total"
        )
        _FIGURES["control plane start"] = f"{access.timings['total']:.1f} s ({steps})"
        _FIGURES["kubelet stand-in start"] = f"{standin.started_in:.2f} s"
        yield _Cluster(access, standin)
    finally:
        if standin is not None:
            standin.stop()
        plane.stop()


@pytest.fixture(scope="session")
def control_plane(_testbed_cluster: _Cluster) -> ClusterAccess:
    """The cluster under test: server, CA, kubeconfigs and tokens of admin and user."""
    return _testbed_cluster.access


@pytest.fixture(scope="session")
def kubelet_standin(_testbed_cluster: _Cluster) -> KubeletStandIn:
    """The stand-in running the test control plane's pods as local processes."""
    if _testbed_cluster.standin is None:
        pytest.skip("KSTEP_TEST_KUBECONFIG is set: the cluster's own kubelets run pods")
    return _testbed_cluster.standin


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    return f"{slug[:48].rstrip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(control_plane: ClusterAccess, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount and root CA ConfigMap exist."""
    import kubernetes

    name = _namespace_name(request.node.name)
    with control_plane.api_client() as client:
        core = kubernetes.client.CoreV1Api(client)
        labels = {"kstep.dev/testbed": "true"}
        metadata = kubernetes.client.V1ObjectMeta(name=name, labels=labels)
        core.create_namespace(kubernetes.client.V1Namespace(metadata=metadata))

        # Pods cannot be admitted before the default ServiceAccount exists, and their token
        # volume needs the root CA ConfigMap: both are written by controllers, shortly after.
        def ready() -> bool:
            core.read_namespaced_service_account("default", name)
            core.read_namespaced_config_map("kube-root-ca.crt", name)
            return True

        wait_until(ready, timeout=30, what=f"namespace {name} getting its default ServiceAccount")
        yield name
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the pinned helm binary, built by ``hack/testbed-binaries.sh``."""
    directory = bin_dir()
    if missing_binaries(directory, ("helm",)):
        require_component(f"helm not found in {directory}; run hack/testbed-binaries.sh")
    return directory / "helm"


# ---------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's Postgres server (``KSTEP_TEST_POSTGRES_URL``, or a throwaway cluster)."""
    from testbed.postgres import PostgresServer, connect_given

    given = os.environ.get("KSTEP_TEST_POSTGRES_URL")
    if given:
        server = connect_given(given)
        _FIGURES["postgres"] = "given by KSTEP_TEST_POSTGRES_URL"
    else:
        run_dir = tmp_path_factory.mktemp("postgres")
        _RUN_DIRS["postgres"] = run_dir
        try:
            server = PostgresServer.start_throwaway(run_dir)
        except FileNotFoundError as exc:
            require_component(
                f"{exc}; install the PostgreSQL server (Debian: postgresql) or set "
                "KSTEP_TEST_POSTGRES_URL"
            )
        _FIGURES["postgres start"] = f"{server.started_in:.1f} s"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a database created for this session."""
    return postgres.create_database()


@pytest.fixture
def fresh_postgres_url(postgres: PostgresServer) -> str:
    """A database of this test's own: with a fresh bucket, a test's runs find none of another
    test's step runs, so no step is served from another test's cache."""
    return postgres.create_database()


# ---------------------------------------------------------------------- s3


@pytest.fixture(scope="session")
def _testbed_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    from testbed.s3 import S3Server

    run_dir = tmp_path_factory.mktemp("s3")
    _RUN_DIRS["s3"] = run_dir
    try:
        server = S3Server.start(run_dir)
    except FileNotFoundError as exc:
        require_component(f"{exc}; pip install 'moto[s3,server]' flask flask-cors")
    _FIGURES["s3 start"] = f"{server.started_in:.1f} s"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(_testbed_s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on the test S3 server, deleted afterwards."""
    bucket = _testbed_s3_server.create_bucket()
    yield bucket
    _testbed_s3_server.delete_bucket(bucket)


# ---------------------------------------------------------------------- reporting


@pytest.fixture(scope="session")
def testbed_figures() -> dict[str, str]:
    """Measurements to show in the terminal summary (name -> human-readable value)."""
    return _FIGURES


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # A failing test's report says where the components it used wrote their logs.
    if report.failed and call.when in ("setup", "call"):
        fixtures = set(getattr(item, "fixturenames", ()))
        lines = []
        if fixtures & {"control_plane", "kubelet_standin", "namespace"} and "cluster" in _RUN_DIRS:
            cluster = _RUN_DIRS["cluster"]
            lines.append(f"control plane logs: {cluster / 'logs'}")
            lines.append(f"pod directories (logs/, termination/, volumes/): {cluster / 'pods'}")
        if fixtures & {"postgres", "postgres_url"} and "postgres" in _RUN_DIRS:
            lines.append(f"postgres logs: {_RUN_DIRS['postgres'] / 'logs'}")
        if "s3" in fixtures and "s3" in _RUN_DIRS:
            lines.append(f"s3 server log: {_RUN_DIRS['s3'] / 'logs'}")
        if lines:
            report.sections.append(("test bed", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("test bed")
    for name, value in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
    for name, directory in _RUN_DIRS.items():
        terminalreporter.write_line(f"{name} run directory: {directory}")
