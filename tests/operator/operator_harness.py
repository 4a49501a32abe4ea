"""Running the operator (and its inline executor) as real processes against the test bed."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent
# The checkout's own packages: the operator, its executor and the pods import kstep from
# here rather than from wherever the virtualenv's editable install points (another worktree).
CHECKOUT = (ROOT / "sdk", ROOT / "operator")
GROUP = "kstep.dev"
VERSION = "v1alpha1"


def apply_crds(kubeconfig: Path | str) -> None:
    """Apply the project's CRDs and wait until they are established."""
    kubectl = [str(BIN / "kubectl"), f"--kubeconfig={kubeconfig}"]
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


def store_settings(postgres_url: str, bucket: Any) -> dict[str, str]:
    """Store settings every component shares: a Postgres database and an S3 bucket."""
    return {
        "KSTEP_METADATA_URL": postgres_url,
        "KSTEP_ARTIFACT_ROOT": bucket.uri("kstep"),
        "KSTEP_S3_ENDPOINT_URL": bucket.endpoint_url,
        **{k: v for k, v in bucket.env.items() if not k.startswith("AWS_ENDPOINT")},
    }


def python_path(*code_paths: Path) -> str:
    """PYTHONPATH of the operator and the pods: this folder, `code_paths`, the checkout."""
    return os.pathsep.join(str(p) for p in (HERE, *code_paths, *CHECKOUT))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def operator_cluster(
    control_plane: Any,
    namespace: str,
    store_env: dict[str, str],
    side_channel: Path,
    workdir: Path,
    *,
    standin: Any = None,
    code_paths: tuple[Path, ...] = (),
    settings: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start the operator and its executor watching `namespace`, with the stores it needs.

    `code_paths` are importable by steps besides this folder; `settings` are further
    environment variables of the operator.
    """
    from kubernetes import client

    api = control_plane.api_client("admin")
    core = client.CoreV1Api(api)
    code_env = {
        "PYTHONPATH": python_path(*code_paths),
        "KSTEP_TEST_SIDE_CHANNEL": str(side_channel),
    }
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
        "KSTEP_OPERATOR_ORCHESTRATOR_RESTART_LIMIT": "2",
        **store_env,
        **code_env,
        **(settings or {}),
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
        yield Cluster(
            api, namespace, processes, store_env, kubectl, standin, side_channel=side_channel
        )
    finally:
        processes.stop()
        api.close()


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


@dataclass
class OperatorProcesses:
    """The operator and its executor, started and stopped by PID."""

    environment: dict[str, str]
    workdir: Path
    socket_path: Path
    metrics_port: int
    operator: subprocess.Popen[bytes] | None = None
    executor: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start_executor(self) -> None:
        log = self.workdir / "executor.log"
        self.logs.append(log)
        self.executor = subprocess.Popen(
            [str(BIN / "kstep-operator"), "executor", "--socket", str(self.socket_path)],
            env=self.environment,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )

    def start_operator(self) -> None:
        self.starts += 1
        log = self.workdir / f"operator-{self.starts}.log"
        self.logs.append(log)
        self.operator = subprocess.Popen(
            [str(BIN / "kstep-operator"), "run"],
            env=self.environment,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )

    def kill_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGKILL)
            self.operator.wait()

    def stop(self) -> None:
        for process in (self.operator, self.executor):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (self.operator, self.executor):
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-6000:] for p in self.logs if p.exists())


class Cluster:
    """What a test needs: the API as dicts, the operator's processes, the store settings."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        processes: OperatorProcesses,
        store_env: dict[str, str],
        kubectl: Any,
        standin: Any = None,
        side_channel: Path | None = None,
    ) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.processes = processes
        self.store_env = store_env
        self.kubectl = kubectl
        self.side_channel = side_channel or processes.workdir / "side-channel.log"
        self.standin = standin

    # -------------------------------------------------------------- runs

    def render(
        self, pipeline: Any, parameters: dict[str, Any] | None = None, **options: Any
    ) -> dict[str, Any]:
        from kstep.cluster.render import render_pipeline_run

        return render_pipeline_run(pipeline, parameters or {}, namespace=self.namespace, **options)

    def submit(
        self, pipeline: Any, parameters: dict[str, Any] | None = None, **options: Any
    ) -> str:
        manifest = self.render(pipeline, parameters, **options)
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "pipelineruns", manifest
        )
        return str(manifest["metadata"]["name"])

    def run(self, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "pipelineruns", name
            )
        )

    def wait(
        self,
        name: str,
        timeout: float = 90.0,
        phases: tuple[str, ...] = ("completed", "failed", "cancelled"),
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(name)
            if (run.get("status") or {}).get("phase") in phases:
                return run
            time.sleep(0.1)
        raise AssertionError(
            f"run {name} did not reach {phases} in {timeout} s; it is "
            f"{json.dumps(self.run(name).get('status'), indent=1)}\n"
            f"steps: {self.step_phases(name)}\n--- operator logs ---\n{self.processes.log_text()}"
            f"\n--- pod logs ---\n{self.pod_logs()}"
        )

    def step_runs(self, name: str) -> dict[str, dict[str, Any]]:
        found = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "stepruns", label_selector=f"kstep.dev/run={name}"
        )
        return {item["spec"]["invocationId"]: item for item in found["items"]}

    def step_phases(self, name: str) -> dict[str, str | None]:
        return {i: (s.get("status") or {}).get("phase") for i, s in self.step_runs(name).items()}

    def pod_logs(self) -> str:
        """The last lines of every pod's output in the namespace (for failure reports)."""
        if self.standin is None:
            return ""
        texts = []
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            try:
                text = self.standin.logs(self.namespace, pod.metadata.name)
            except Exception as error:
                text = f"(no log: {error})"
            texts.append(f"== {pod.metadata.name}\n{text[-3000:]}")
        return "\n".join(texts)

    def create(self, manifest: dict[str, Any]) -> str:
        """Create a PipelineRun from a manifest as is; return its name."""
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "pipelineruns", manifest
        )
        return str(manifest["metadata"]["name"])

    def jobs(self, run: str | None = None) -> list[Any]:
        selector = f"kstep.dev/run={run}" if run else None
        return list(self.batch.list_namespaced_job(self.namespace, label_selector=selector).items)

    def pods(self, run: str | None = None) -> list[Any]:
        selector = f"kstep.dev/run={run}" if run else None
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def delete_job(self, name: str) -> None:
        """Delete a Job as `kubectl delete job` does: its pods follow in the background."""
        self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")

    def delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.namespace)

    def events(self) -> list[tuple[str, str, str, str]]:
        """(kind, name, reason, message) of every Event in the namespace, oldest first."""
        found = self.core.list_namespaced_event(self.namespace).items
        found.sort(key=lambda e: (e.first_timestamp or e.event_time or 0, e.metadata.name))
        return [
            (e.involved_object.kind, e.involved_object.name, e.reason, e.message) for e in found
        ]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The operator's /metrics samples: (name, sorted labels) -> value."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.processes.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics, 0 when it is absent (a counter never incremented)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def patch_run(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "pipelineruns", name, patch
        )

    def client(self) -> Any:
        """A kstep Client on the same stores as the cluster."""
        from kstep import Client
        from kstep._settings import Settings

        settings = Settings(
            home=str(self.processes.workdir / "client-home"),
            metadata_url=self.store_env["KSTEP_METADATA_URL"],
            artifact_root=self.store_env["KSTEP_ARTIFACT_ROOT"],
            s3_endpoint_url=self.store_env["KSTEP_S3_ENDPOINT_URL"],
        )
        with environment(self.store_env):
            return Client(settings)

    def apply_yaml(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        from kstep.cluster.render import to_yaml

        return self.kubectl("apply", "-n", self.namespace, "-f", "-", input=to_yaml(manifest))


def wait_for(condition: Any, what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def side_channel_counts(path: Path) -> dict[tuple[str, str, str], int]:
    """How often each (run, invocation, event) appears in a side-channel file."""
    counts: dict[tuple[str, str, str], int] = {}
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        run, invocation, event = line.split(" ")
        counts[(run, invocation, event)] = counts.get((run, invocation, event), 0) + 1
    return counts
