"""The chart's monitoring against a real Prometheus scraping a real operator.

Prometheus (Debian's `prometheus` package) scrapes the operator of `kstep_cluster` every second,
with the labels a ServiceMonitor of the chart would give it, and evaluates the chart's
PrometheusRule (with `for: 0s`). After a completed and a failed run, every query of the
chart's Grafana dashboard returns data and the failing-run alert fires.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import operator_steps as steps
import pytest
import yaml
from operator_harness import Cluster, free_port

from helm.chart_support import CHART, documents, find, render
from testbed.plugin import require_component

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

RELEASE = "kstep"
SCRAPE_JOB = "kstep-metrics"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        require_component(f"{name} is not installed (Debian: apt-get install prometheus)")
    return str(found)


def alert_rules(helm: Path, namespace: str, **overrides: str) -> dict[str, Any]:
    """The `groups` of the chart's PrometheusRule, rendered for `namespace`."""
    options = {"metrics.prometheusRule.enabled": "true", **overrides}
    flags = [part for key, value in options.items() for part in ("--set", f"{key}={value}")]
    rule = find(documents(render(helm, *flags, namespace=namespace)), "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def test_prometheus_rules_of_the_chart_pass_promtool(helm: Path, tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(alert_rules(helm, "kstep-system")))

    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


class Prometheus:
    """A Prometheus server of this test, queried over its HTTP API."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def query(self, expression: str) -> list[Any]:
        """The result of an instant query; fails the test on a query error."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
        try:
            with urllib.request.urlopen(address, timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        assert body["status"] == "success", f"{expression}: {body.get('error')}"
        result: list[Any] = body["data"]["result"]
        return result

    def firing(self) -> set[str]:
        return {
            series["metric"]["alertname"] for series in self.query('ALERTS{alertstate="firing"}')
        }


@pytest.fixture
def prometheus(helm: Path, kstep_cluster: Cluster, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus scraping the operator every second and evaluating the chart's alerts."""
    binary = tool("prometheus")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    rules = alert_rules(
        helm,
        kstep_cluster.namespace,
        **{
            "metrics.prometheusRule.failingRuns.for": "0s",
            "metrics.prometheusRule.failingRuns.window": "5m",
        },
    )
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(directory / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{kstep_cluster.processes.metrics_port}"],
                        # What a ServiceMonitor of the chart's metrics Service would add.
                        "labels": {
                            "namespace": kstep_cluster.namespace,
                            "service": f"{RELEASE}-metrics",
                        },
                    }
                ],
            }
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        # The counters must be seen at zero before a run ends, or no increase shows.
        wait_for(
            lambda: _answers(server, f'up{{job="{SCRAPE_JOB}"}} == 1'),
            "Prometheus to scrape the operator",
            log,
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(server: Prometheus, expression: str) -> bool:
    try:
        return bool(server.query(expression))
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def dashboard_queries(namespace: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, with Grafana's variables filled in."""
    dashboard = json.loads((CHART / "files" / "dashboards" / "kstep.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = target["expr"].replace("$namespace", namespace)
            queries.append((panel["title"], expression.replace("$__rate_interval", "1m")))
    return queries


def test_prometheus_scrapes_the_operator_and_the_dashboard_and_alerts_work(
    kstep_cluster: Cluster, prometheus: Prometheus
) -> None:
    namespace = kstep_cluster.namespace
    assert prometheus.firing() == set()

    completed = kstep_cluster.submit(steps.fan, {"n": 2})
    failed = kstep_cluster.submit(steps.branches)
    phases = [kstep_cluster.wait(name)["status"]["phase"] for name in (completed, failed)]
    assert phases == ["completed", "failed"]

    wait_for(
        lambda: "KstepPipelineRunsFailing" in prometheus.firing(),
        "the failing-run alert to fire",
        prometheus.log,
    )
    assert prometheus.firing() == {"KstepPipelineRunsFailing"}

    # Every query of the dashboard evaluates, and has data once scrapes after the runs exist.
    queries = dashboard_queries(namespace)
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = [f"{title}: {query}" for title, query in queries if not prometheus.query(query)]
        return not empty

    try:
        wait_for(all_have_data, "every dashboard query to return data", prometheus.log, 30)
    except AssertionError:
        raise AssertionError("dashboard queries without data:\n" + "\n".join(empty)) from None
    assert (
        prometheus.query(
            f'sum(kstep_pipeline_runs_total{{namespace="{namespace}", outcome="failed"}})'
        )[0]["value"][1]
        == "1"
    )
    assert prometheus.query("count by (namespace) (kstep_operator_leader)")[0]["metric"] == {
        "namespace": namespace
    }
