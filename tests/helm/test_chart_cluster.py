"""The Helm chart against the test control plane: server-side validation and RBAC.

Every rendered object of every `ci/` scenario goes through a server-side dry run, so the real
API server validates it (schemas, CRDs, RBAC objects) without creating it. The operator's RBAC
is then exercised with the operator's own ServiceAccount token, through the operator's own API
layer: everything the operator does is allowed, and nothing else.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_support import SCENARIOS, documents, render, values_file

from kstep_operator.kube import JOBS, LEASES, PIPELINE_RUNS, SECRETS, STEP_RUNS, ApiError, Kube
from kstep_operator.leader import LeaderElector

pytestmark = pytest.mark.cluster

HERE = Path(__file__).resolve().parent
RELEASE = "kstep"


@pytest.fixture(scope="session")
def monitoring_crds(control_plane: Any) -> None:
    """ServiceMonitor and PrometheusRule kinds, for the chart's monitoring objects."""
    control_plane.kubectl("apply", "--server-side", "-f", str(HERE / "monitoring-crds.yaml"))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    )


def ensure_namespace(control_plane: Any, name: str) -> None:
    manifest = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    control_plane.kubectl("apply", "-f", "-", stdin=manifest)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_objects_are_accepted_by_the_api_server_in_each_scenario(
    helm: Path, control_plane: Any, monitoring_crds: None, namespace: str, scenario: str
) -> None:
    rendered = render(helm, "-f", str(values_file(scenario)), namespace=namespace)
    objects = documents(rendered)
    for other in {o["metadata"].get("namespace") for o in objects} - {None, namespace}:
        ensure_namespace(control_plane, other)

    result = control_plane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered, check=False
    )

    assert result.returncode == 0, result.stderr
    accepted = re.findall(r"^(\S+) \S+ \(server dry run\)$", result.stdout, re.MULTILINE)
    assert len(accepted) == len(objects), result.stdout


# ------------------------------------------------------------------ RBAC


class Rbac:
    """Requests as one identity; `allowed` tells authorization apart from everything after."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def status(self, method: str, path: str, body: Any = None, **query: str) -> int:
        # Writes are dry runs: the API server authorizes them, then validates and stops.
        parameters = list(query.items())
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            parameters.append(("dryRun", "All"))
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        try:
            self.kube.request(method, path, body=body, query=parameters, content_type=content_type)
        except ApiError as error:
            return error.status
        return 200

    def allowed(self, method: str, path: str, body: Any = None, **query: str) -> bool:
        return self.status(method, path, body, **query) != 403


@pytest.fixture
def rbac_release(helm: Path, control_plane: Any, namespace: str) -> Iterator[dict[str, str]]:
    """The chart's RBAC, ServiceAccounts and store Secret in `namespace`; no operator pod.

    Also a second namespace holding a Secret of the same name, which the operator must not read.
    """
    rendered = render(
        helm,
        "--set",
        "crds.install=false",
        "--set",
        "operator.replicas=0",
        release=RELEASE,
        namespace=namespace,
    )
    control_plane.kubectl("apply", "-f", "-", stdin=rendered)
    other = f"{namespace[:50]}-other"
    ensure_namespace(control_plane, other)
    for where, name in (
        (namespace, "kstep-stores"),
        (namespace, "unrelated"),
        (other, "kstep-stores"),
    ):
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": where},
            "data": {"KSTEP_METADATA_URL": base64.b64encode(b"sqlite://").decode()},
        }
        control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    try:
        yield {"namespace": namespace, "other": other}
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false", check=False)


def token_of(control_plane: Any, namespace: str, account: str) -> str:
    created = control_plane.kubectl("create", "token", account, "-n", namespace)
    return str(created.stdout.strip())


def test_chart_rbac_lets_the_operator_do_its_work_and_nothing_more(
    control_plane: Any, rbac_release: dict[str, str]
) -> None:
    namespace, other = rbac_release["namespace"], rbac_release["other"]
    token = token_of(control_plane, namespace, f"{RELEASE}-operator")
    as_operator = Rbac(Kube(control_plane.token_client(token)))
    run_path, step_path = PIPELINE_RUNS.path(namespace), STEP_RUNS.path(namespace)
    job_path = JOBS.path(namespace)
    body = {"metadata": {"name": "x"}}

    # Its own kinds: watched, created, patched (with status), deleted.
    for path in (run_path, step_path, job_path):
        assert as_operator.allowed("GET", path), path
        assert as_operator.allowed("GET", path, watch="true", timeoutSeconds="1"), path
        assert as_operator.allowed("POST", path, body), path
        assert as_operator.allowed("DELETE", f"{path}/x"), path
    for path in (run_path, step_path):
        assert as_operator.allowed("PATCH", f"{path}/x", {}), path
        assert as_operator.allowed("PATCH", f"{path}/x/status", {"status": {}}), path
    assert as_operator.allowed("POST", f"/api/v1/namespaces/{namespace}/events", body)
    accounts = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    assert as_operator.status("GET", f"{accounts}/{RELEASE}-step") == 200
    assert not as_operator.allowed("POST", f"{accounts}/{RELEASE}-step/token", body)

    # The store Secret by name, and nothing else of Secrets.
    assert as_operator.status("GET", SECRETS.path(namespace, "kstep-stores")) == 200
    assert not as_operator.allowed("GET", SECRETS.path(namespace, "unrelated"))
    assert not as_operator.allowed("GET", SECRETS.path(namespace))
    assert not as_operator.allowed("GET", SECRETS.path(other, "kstep-stores"))

    # Nothing in a namespace it does not watch, and no other kinds.
    assert not as_operator.allowed("GET", PIPELINE_RUNS.path(other))
    assert not as_operator.allowed("POST", JOBS.path(other), body)
    assert not as_operator.allowed("GET", f"/api/v1/namespaces/{namespace}/pods")
    assert not as_operator.allowed("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert not as_operator.allowed("GET", "/api/v1/namespaces")

    # Its own Lease, acquired and released with the operator's own elector; no other Lease.
    elector = LeaderElector(
        as_operator.kube,
        name=f"{RELEASE}-operator",
        namespace=namespace,
        identity="rbac-test",
        duration=15,
        renew_seconds=5,
    )
    assert elector.try_acquire_or_renew()
    assert elector.try_acquire_or_renew()
    elector.release()
    assert not as_operator.allowed("GET", LEASES.path(namespace, "someone-else"))
    assert not as_operator.allowed("PUT", LEASES.path(namespace, "someone-else"), body)


def test_chart_rbac_gives_step_pods_no_api_access(
    control_plane: Any, rbac_release: dict[str, str]
) -> None:
    namespace = rbac_release["namespace"]
    token = token_of(control_plane, namespace, f"{RELEASE}-step")
    as_step = Rbac(Kube(control_plane.token_client(token)))

    for path in (
        PIPELINE_RUNS.path(namespace),
        STEP_RUNS.path(namespace),
        JOBS.path(namespace),
        SECRETS.path(namespace, "kstep-stores"),
        f"/api/v1/namespaces/{namespace}/pods",
    ):
        assert as_step.status("GET", path) == 403, path


def test_chart_rbac_lets_orchestrator_pods_manage_step_runs_only(
    control_plane: Any, rbac_release: dict[str, str]
) -> None:
    namespace, other = rbac_release["namespace"], rbac_release["other"]
    token = token_of(control_plane, namespace, f"{RELEASE}-orchestrator")
    as_orchestrator = Rbac(Kube(control_plane.token_client(token)))
    body = {"metadata": {"name": "x"}}

    assert as_orchestrator.allowed("GET", PIPELINE_RUNS.path(namespace, "x"))
    assert as_orchestrator.allowed("POST", STEP_RUNS.path(namespace), body)
    assert as_orchestrator.allowed("PATCH", STEP_RUNS.path(namespace, "x", "status"), {})
    assert not as_orchestrator.allowed("PATCH", PIPELINE_RUNS.path(namespace, "x"), {})
    assert not as_orchestrator.allowed("POST", JOBS.path(namespace), body)
    assert not as_orchestrator.allowed("GET", SECRETS.path(namespace, "kstep-stores"))
    assert not as_orchestrator.allowed("GET", STEP_RUNS.path(other))
