"""`helm install` on the test control plane runs a pipeline; `helm uninstall` keeps the runs.

The kubelet stand-in runs the operator Deployment's pod: both of its containers, with the
chart's command, the chart's environment and the image's own (read from the Dockerfile), and
the operator container alone with its ServiceAccount's token. A pipeline submitted from the
SDK then runs through that operator: inline steps in the executor container, the isolated one
as a Job whose pod runs as the chart's step ServiceAccount.

Two adaptations to the stand-in, which runs containers as processes of this machine: the test
bed's run directory lives under /tmp, so the chart's /tmp emptyDir mounts are left out (each
pod gets its own HOME and TMPDIR from the stand-in instead), and the image's variables that
point into /tmp are replaced by those same per-pod directories.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, ROOT

from kstep._settings import Settings
from kstep.cluster.submit import submit
from kstep.runner._references import import_reference

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

RELEASE = "kstep"
# The post-renderer: drops mounts over /tmp, which would hide the test bed's run directory.
POST_RENDERER = """\
import sys
import yaml

objects = [o for o in yaml.safe_load_all(sys.stdin) if o]
for obj in objects:
    if obj["kind"] in ("Deployment", "Job"):
        for container in obj["spec"]["template"]["spec"]["containers"]:
            container["volumeMounts"] = [
                m for m in container.get("volumeMounts", []) if m["mountPath"] != "/tmp"
            ]
yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
"""


def image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage, minus what the stand-in provides per pod."""
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    final = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    environment: dict[str, str] = {}
    for line in lines[final:]:
        if line.startswith("ENV "):
            for pair in shlex.split(line[len("ENV ") :]):
                key, _, value = pair.partition("=")
                environment[key] = value
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1", environment
    return {
        key: value
        for key, value in environment.items()
        if key not in ("PATH", "HOME", "TMPDIR", "KSTEP_HOME")
    }


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def store_environment(s3: Any, fresh_postgres_url: str) -> dict[str, str]:
    return {
        "KSTEP_METADATA_URL": fresh_postgres_url,
        "KSTEP_ARTIFACT_ROOT": s3.uri("kstep"),
        "KSTEP_S3_ENDPOINT_URL": s3.endpoint_url,
        "KSTEP_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        "AWS_DEFAULT_REGION": s3.region,
    }


@pytest.fixture
def helm_env(tmp_path: Path, control_plane: Any) -> dict[str, str]:
    """helm's environment: the admin kubeconfig, and its state and plugins under tmp_path."""
    plugin = tmp_path / "helm-plugins" / "kstep-testbed"
    plugin.mkdir(parents=True)
    (plugin / "render.py").write_text(POST_RENDERER)
    (plugin / "render.sh").write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$HELM_PLUGIN_DIR/render.py"\n'
    )
    (plugin / "render.sh").chmod(0o755)
    (plugin / "plugin.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "type": "postrenderer/v1",
                "name": "kstep-testbed",
                "version": "0.1.0",
                "runtime": "subprocess",
                "runtimeConfig": {"platformCommand": [{"command": "${HELM_PLUGIN_DIR}/render.sh"}]},
            }
        )
    )
    return {
        "PATH": os.environ["PATH"],
        # helm keeps the API's discovery cache under $HOME/.kube.
        "HOME": str(tmp_path),
        "KUBECONFIG": str(control_plane.admin_kubeconfig),
        "HELM_PLUGINS": str(tmp_path / "helm-plugins"),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }


@pytest.fixture
def installed(
    helm: Path,
    helm_env: dict[str, str],
    control_plane: Any,
    kubelet_standin: Any,
    namespace: str,
    store_environment: dict[str, str],
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """The chart installed in `namespace` with the store Secret it needs; uninstalled after."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "kstep-stores", "namespace": namespace},
        "data": {
            key: base64.b64encode(value.encode()).decode()
            for key, value in store_environment.items()
        },
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    port = free_port()
    image_env = [{"name": k, "value": v} for k, v in image_environment().items()]
    values = {
        "image": {"repository": "kstep", "tag": "test"},
        "operator": {
            "metricsPort": port,
            "logFormat": "text",
            "leaderElection": {"leaseDurationSeconds": 6, "renewSeconds": 2},
            "extraEnv": [*image_env, {"name": "KSTEP_OPERATOR_SWEEP_SECONDS", "value": "0.5"}],
        },
        "executor": {"extraEnv": image_env},
    }
    values_path = tmp_path / "values.yaml"
    values_path.write_text(yaml.safe_dump(values))

    def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(helm), *args, "--namespace", namespace],
            env=helm_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    # The CRDs may exist already, applied by other tests of this session: the release adopts
    # them, and keeps them when it is uninstalled.
    started = time.monotonic()
    result = run_helm(
        "install",
        RELEASE,
        str(CHART),
        "-f",
        str(values_path),
        "--take-ownership",
        "--post-renderer",
        "kstep-testbed",
        "--wait",
        "--timeout",
        "180s",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    installed_in = time.monotonic() - started
    release = {"namespace": namespace, "port": port, "helm": run_helm, "seconds": installed_in}
    try:
        yield release
    finally:
        if not release.get("uninstalled"):
            run_helm("uninstall", RELEASE, "--wait", "--timeout", "60s")


def get_json(control_plane: Any, *args: str) -> dict[str, Any]:
    """An object or list, read with kubectl as the admin."""
    found: dict[str, Any] = json.loads(control_plane.kubectl("get", *args, "-o", "json").stdout)
    return found


def wait_for_status(
    control_plane: Any, namespace: str, name: str, phase: str, timeout: float = 60.0
) -> dict[str, Any]:
    """A PipelineRun's status once it reaches `phase`."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = get_json(control_plane, "pipelinerun", name, "-n", namespace).get("status") or {}
        if status.get("phase") == phase:
            return status
        time.sleep(0.5)
    raise AssertionError(f"the run {name} did not become {phase} within {timeout} s: {status}")


def wait_for_leader(port: int, timeout: float = 60.0) -> str:
    """The operator's /readyz once it leads and its executor is connected.

    The stand-in runs no probes: the test asks. Before it leads, the operator is ready with no
    checks at all (a standby is ready to take over).
    """
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                answer = reply.read().decode()
            if "inline-executor" in answer:
                return str(answer)
        except OSError as error:
            answer = str(error)
        time.sleep(0.5)
    raise AssertionError(f"the operator did not lead within {timeout} s: {answer}")


def test_chart_install_runs_a_pipeline_and_uninstall_keeps_the_crds_and_runs(
    installed: dict[str, Any],
    control_plane: Any,
    kubelet_standin: Any,
    store_environment: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = installed["namespace"]
    assert wait_for_leader(installed["port"]) == "[+]inline-executor ok\nok\n"
    pods = get_json(
        control_plane, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator"
    )
    pod = pods["items"][0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["operator", "executor"]
    lease = get_json(control_plane, "lease", f"{RELEASE}-operator", "-n", namespace)
    assert lease["spec"]["holderIdentity"] == pod["metadata"]["name"]

    for key, value in store_environment.items():
        monkeypatch.setenv(key, value)
    fan_out = import_reference(f"{ROOT}/examples/fan_out.py:fan_out")
    run = submit(
        fan_out,
        {"size": 60, "shards": 2},
        namespace=namespace,
        kubeconfig=control_plane.admin_kubeconfig,
        settings=Settings(home=str(tmp_path / "home")),
    )
    try:
        finished = run.wait(timeout=240)
    except BaseException:
        print(kubelet_standin.logs(namespace, pod["metadata"]["name"], "operator")[-20_000:])
        raise
    finally:
        run.close()

    assert finished.status == "completed", finished.message
    data = [float(i % 11) for i in range(60)]
    assert finished.steps["combine"].outputs["total"].load() == sum(v * v for v in data)
    assert finished.steps["score_heavy"].runtime == "isolated"
    jobs = get_json(control_plane, "jobs", "-n", namespace)["items"]
    step_pods = [
        j["spec"]["template"]["spec"] for j in jobs if "kstep.dev/role" in j["metadata"]["labels"]
    ]
    assert step_pods and {p["serviceAccountName"] for p in step_pods} == {f"{RELEASE}-step"}

    # A run naming a Secret the chart's RBAC does not let the operator read fails at once.
    quickstart = import_reference(f"{ROOT}/examples/quickstart.py:training")
    forbidden = submit(
        quickstart,
        {"rows": 20},
        namespace=namespace,
        kubeconfig=control_plane.admin_kubeconfig,
        settings=Settings(home=str(tmp_path / "home")),
        store_secret="unlisted",
    )
    forbidden.close()
    status = wait_for_status(control_plane, namespace, forbidden.name, "failed")
    assert status["conditions"][0]["reason"] == "SecretForbidden", status
    assert "may not read the store Secret 'unlisted'" in status["message"]

    # Uninstalling removes the operator but keeps the CRDs, and with them the users' runs.
    result = installed["helm"]("uninstall", RELEASE, "--wait", "--timeout", "60s")
    installed["uninstalled"] = True
    assert result.returncode == 0, result.stderr
    assert "kept" in result.stdout + result.stderr
    control_plane.kubectl("get", "crd", "pipelineruns.kstep.dev", "stepruns.kstep.dev")
    runs = control_plane.kubectl("get", "pipelineruns", "-n", namespace, "-o", "name").stdout
    assert sorted(runs.split()) == sorted(
        f"pipelinerun.kstep.dev/{name}" for name in (run.name, forbidden.name)
    )
    deployments = control_plane.kubectl("get", "deployments", "-n", namespace, "-o", "name")
    assert deployments.stdout.strip() == ""
    print(f"helm install took {installed['seconds']:.1f} s")
