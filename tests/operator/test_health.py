"""The operator's HTTP endpoint: metrics, liveness and readiness."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from kstep_operator.health import Health, serve
from kstep_operator.metrics import Metrics


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Health, Metrics]]:
    metrics, health = Metrics(), Health()
    server = serve("127.0.0.1", 0, metrics.registry, health)
    yield f"http://127.0.0.1:{server.server_port}", health, metrics
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_endpoint_serves_the_operator_metrics(
    endpoint: tuple[str, Health, Metrics],
) -> None:
    url, _, metrics = endpoint
    metrics.runs.labels("completed").inc()

    status, body = get(url + "/metrics")

    assert status == 200
    assert 'kstep_pipeline_runs_total{outcome="completed"} 1.0' in body
    assert "kstep_operator_leader 0.0" in body
    # Labelled series exist at zero before anything happens, so rates and alerts see them.
    assert 'kstep_pipeline_runs_total{outcome="failed"} 0.0' in body
    assert 'kstep_reconcile_errors_total{kind="step"} 0.0' in body
    assert 'kstep_step_runs_total{outcome="cached",runtime="isolated"} 0.0' in body
    assert "kstep_pipeline_run_longest_running_seconds 0.0" in body


def test_health_endpoint_passes_with_no_checks(endpoint: tuple[str, Health, Metrics]) -> None:
    url, _, _ = endpoint

    assert get(url + "/healthz") == (200, "ok\n")
    assert get(url + "/readyz") == (200, "ok\n")


def test_health_endpoint_fails_readiness_when_a_check_fails(
    endpoint: tuple[str, Health, Metrics],
) -> None:
    url, health, _ = endpoint
    connected = False
    health.add_readiness("inline-executor", lambda: connected)
    health.add_liveness("reconcile-workers", lambda: True)

    assert get(url + "/readyz") == (503, "[-]inline-executor failed\nfailed\n")
    assert get(url + "/healthz") == (200, "[+]reconcile-workers ok\nok\n")
    connected = True
    assert get(url + "/readyz") == (200, "[+]inline-executor ok\nok\n")


def test_health_endpoint_fails_liveness_when_a_check_raises(
    endpoint: tuple[str, Health, Metrics],
) -> None:
    url, health, _ = endpoint

    def broken() -> bool:
        raise RuntimeError("no thread")

    health.add_liveness("reconcile-workers", broken)

    assert get(url + "/healthz") == (503, "[-]reconcile-workers failed\nfailed\n")


def test_health_endpoint_answers_404_for_other_paths(
    endpoint: tuple[str, Health, Metrics],
) -> None:
    url, _, _ = endpoint

    assert get(url + "/")[0] == 404
