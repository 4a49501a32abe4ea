"""A kubelet stand-in: one Node whose pods run as local processes. It is not a kubelet.

What it does, so that the real Job, ReplicaSet and garbage-collection controllers behave:

- registers a Node (Ready, with the machine's CPU and memory as allocatable) and renews its
  Lease, so that the node lifecycle controller keeps it healthy;
- binds every pending, unscheduled pod to that Node through the Binding subresource, as a
  scheduler would (there is one node, so nodeSelector, affinity and taints are not evaluated);
- runs each bound pod's containers: ``command`` + ``args`` (or an entrypoint given for the
  image) as a local process group with the environment Kubernetes would compute (see
  ``pod_environment``), volumes as per-pod directories bind-mounted in a private mount
  namespace (see ``pod_volumes``), ``workingDir``, and the termination message file;
- writes pod status (Running with container states and conditions, then Succeeded or Failed
  with exit codes, reasons and termination messages), restarts containers as
  ``restartPolicy`` says (with a back-off of 0.5 s doubling to 10 s, shorter than the kubelet's),
  and on deletion sends SIGTERM, then SIGKILL after the grace period, and removes the pod;
- serves container logs on the Node's kubelet port, so ``kubectl logs`` works.

Substitution for in-cluster configuration: a container that mounts the pod's service-account
token volume (which the ServiceAccount admission plugin adds unless automounting is off) gets
the token obtained through the TokenRequest API, mounted where in-cluster clients look for it,
``KUBERNETES_SERVICE_HOST``/``PORT`` pointing at the test API server, and ``KUBECONFIG`` naming
a kubeconfig for that ServiceAccount. Clients that prefer either route therefore act as the
pod's ServiceAccount.

Processes run the test environment's programs: its virtualenv's ``bin`` comes first on
``PATH``, so ``python`` and console scripts such as ``kstep-runner`` resolve as they would in
the project's image. ``HOME``, ``TMPDIR`` and the default working directory are per-pod
directories. Not emulated: images, resource limits, probes (containers are ready once started),
pod networking (every pod is 127.0.0.1), service environment variables other than the API
server's, and pod-level ``activeDeadlineSeconds``.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import logging
import os
import platform
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib3

from testbed.certificates import KeyPair
from testbed.mount_targets import MountTargets
from testbed.pod_runtime import NodeRuntime, PodRecord, PodSupervisor
from testbed.rest import ApiError, Json, RestClient, WatchExpiredError, path

logger = logging.getLogger(__name__)

NODE_NAME = "kstep-testbed-node"
_LEASE_SECONDS = 40
_LEASE_RENEWAL = 10.0


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _machine_allocatable() -> dict[str, str]:
    memory_kib = 8 * 1024 * 1024
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_kib}Ki",
        "pods": "250",
        "ephemeral-storage": "100Gi",
    }


def _can_isolate() -> bool:
    """Whether private mount namespaces (and so volume mounts) are available: root only."""
    if os.geteuid() != 0:
        return False
    try:
        subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "true"],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


class KubeletStandIn:
    """One Node of the test control plane, running its pods as local processes.

    Args:
        server: API server URL.
        token: Bearer token with rights over nodes, pods, leases and service-account tokens.
        ca_path: CA of the API server's certificate.
        run_dir: Where pod directories (``pods/<ns>_<name>_<uid>/``) are written.
        serving_cert: Certificate for the log port; without it ``kubectl logs`` is unavailable.
        node_name: Name of the Node to register.
        path_prepend: Directories put first on pods' ``PATH`` (default: this interpreter's).
        extra_env: Variables every container gets (its own ``env`` still wins).
        entrypoints: Command to run for an image when a container has no ``command``.
    """

    def __init__(
        self,
        *,
        server: str,
        token: str,
        ca_path: Path,
        run_dir: Path,
        serving_cert: KeyPair | None = None,
        node_name: str = NODE_NAME,
        path_prepend: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        entrypoints: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.server = server
        self.node_name = node_name
        self.run_dir = run_dir
        self.rest = RestClient(server, token=token, ca_path=str(ca_path))
        self._serving_cert = serving_cert
        port = urllib.parse.urlsplit(server).port or 443
        self.runtime = NodeRuntime(
            rest=self.rest,
            node_name=node_name,
            server=server,
            ca_pem=ca_path.read_bytes(),
            pods_dir=run_dir / "pods",
            node_allocatable=_machine_allocatable(),
            service_env={
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
                f"KUBERNETES_PORT_{port}_TCP": f"tcp://127.0.0.1:{port}",
            },
            path_prepend=list(path_prepend or [str(Path(sys.executable).parent)]),
            extra_env=dict(extra_env or {}),
            entrypoints={image: list(argv) for image, argv in (entrypoints or {}).items()},
            isolate=False,
            restart_backoff=(0.5, 10.0),
            mount_targets=MountTargets(),
            protected_paths=[Path(sys.prefix), Path(sys.base_prefix), run_dir.resolve()],
        )
        self._lock = threading.Lock()
        self._supervisors: dict[str, PodSupervisor] = {}
        self._finished: set[str] = set()
        self._binding: set[str] = set()
        self._records: dict[tuple[str, str], PodRecord] = {}
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._binder = ThreadPoolExecutor(max_workers=4, thread_name_prefix="standin-bind")
        self._threads: list[threading.Thread] = []
        self._log_server: http.server.ThreadingHTTPServer | None = None
        self.started_in: float | None = None

    # ------------------------------------------------------------------ public API

    def start(self) -> KubeletStandIn:
        began = time.monotonic()
        self.runtime.isolate = _can_isolate()
        if self.runtime.isolate:
            self.runtime.mount_targets.open_session()
        else:
            logger.warning(
                "No private mount namespaces (not root?): pods run without their volumes and "
                "termination-message files"
            )
        log_port = self._start_log_server() if self._serving_cert else 0
        self._register_node(log_port)
        for target, name in (
            (self._watch_pods, "standin-watch"),
            (self._heartbeat, "standin-lease"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._synced.wait(30):
            raise RuntimeError("the kubelet stand-in could not list pods within 30 s")
        self.started_in = time.monotonic() - began
        logger.info(
            "Kubelet stand-in runs node %s (%.2f s to start)", self.node_name, self.started_in
        )
        return self

    def stop(self) -> None:
        """Kill every pod process, then stop watching; pods keep their last written status."""
        self._stopping.set()
        with self._lock:
            supervisors = list(self._supervisors.values())
        for supervisor in supervisors:
            supervisor.shutdown()
        for supervisor in supervisors:
            supervisor.join(10)
        self.rest.close()
        self._binder.shutdown(wait=False, cancel_futures=True)
        if self._log_server is not None:
            self._log_server.shutdown()
            self._log_server.server_close()
        for thread in self._threads:
            thread.join(5)
        if self.runtime.isolate:
            self.runtime.mount_targets.close_session()

    def pod_record(self, namespace: str, name: str) -> PodRecord:
        """Return what the stand-in knows about the latest pod of that name it ran."""
        with self._lock:
            record = self._records.get((namespace, name))
        if record is None:
            raise KeyError(f"the kubelet stand-in has not run a pod {namespace}/{name}")
        return record

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """Return a container's output so far (stdout and stderr, all restarts appended)."""
        record = self.pod_record(namespace, name)
        if container is None:
            if len(record.containers) != 1:
                raise ValueError(
                    f"pod {namespace}/{name} has containers {record.containers}; name one"
                )
            container = record.containers[0]
        try:
            return record.log_path(container).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(
        self,
        namespace: str,
        name: str,
        text: str,
        *,
        container: str | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Wait until a container's output contains ``text``; return the whole output."""
        deadline = time.monotonic() + timeout
        output = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(KeyError):
                output = self.logs(namespace, name, container)
                if text in output:
                    return output
            time.sleep(0.02)
        raise TimeoutError(
            f"pod {namespace}/{name} did not log {text!r} within {timeout:.0f} s; "
            f"its output so far:\n{output}"
        )

    # ------------------------------------------------------------------ node

    def _register_node(self, log_port: int) -> None:
        version = self.rest.get("/version").get("gitVersion", "v0.0.0")
        allocatable = self.runtime.node_allocatable
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        architecture = {"x86_64": "amd64", "aarch64": "arm64"}.get(
            platform.machine(), platform.machine()
        )
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        status = {
            "capacity": allocatable,
            "allocatable": allocatable,
            "conditions": [
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": "kstep kubelet stand-in",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for kind, value, reason in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
            "nodeInfo": {
                "machineID": uuid.uuid4().hex,
                "systemUUID": str(uuid.uuid4()),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": "kstep kubelet stand-in",
                "containerRuntimeVersion": "kstep-standin://1",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": architecture,
            },
        }
        node = self.rest.post(
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": self.node_name,
                    "labels": {
                        "kubernetes.io/hostname": self.node_name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": architecture,
                        "kstep.dev/kubelet-standin": "true",
                    },
                },
                "status": status,
            },
        )
        # Status given at creation is not guaranteed to be kept; write it explicitly.
        self.rest.patch(path("api", "v1", "nodes", self.node_name, "status"), {"status": status})
        self.rest.post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node_name,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.node_name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": self.node_name,
                    "leaseDurationSeconds": _LEASE_SECONDS,
                    "renewTime": _micro_time(),
                },
            },
        )

    def _heartbeat(self) -> None:
        lease = path(
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            "kube-node-lease",
            "leases",
            self.node_name,
        )
        while not self._stopping.wait(_LEASE_RENEWAL):
            try:
                self.rest.patch(lease, {"spec": {"renewTime": _micro_time()}}, strategic=False)
            except (ApiError, urllib3.exceptions.HTTPError) as exc:
                logger.warning("Renewing the lease of node %s failed: %s", self.node_name, exc)

    # ------------------------------------------------------------------ pods

    def _watch_pods(self) -> None:
        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list_pods()
                for event in self.rest.watch(
                    "/api/v1/pods",
                    resourceVersion=resource_version,
                    allowWatchBookmarks="true",
                    timeoutSeconds="300",
                ):
                    pod = event["object"]
                    resource_version = pod["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._dispatch(event["type"], pod)
            except WatchExpiredError:
                resource_version = None
            except Exception as exc:
                if self._stopping.is_set():
                    return
                logger.warning("Watching pods failed; watching again: %s", exc)
                time.sleep(0.5)

    def _list_pods(self) -> str:
        listing = self.rest.get("/api/v1/pods")
        present = {pod["metadata"]["uid"] for pod in listing["items"]}
        for pod in listing["items"]:
            self._dispatch("ADDED", pod)
        # Pods deleted while the watch was down never produce a DELETED event.
        with self._lock:
            vanished = [s for uid, s in self._supervisors.items() if uid not in present]
        for supervisor in vanished:
            supervisor.notify_deleted(supervisor.pod)
        self._synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _dispatch(self, kind: str, pod: Json) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        with self._lock:
            supervisor = self._supervisors.get(uid)
            finished = uid in self._finished
        if kind == "DELETED":
            if supervisor is not None:
                supervisor.notify_deleted(pod)
            return

        node = spec.get("nodeName")
        if not node:
            phase = pod.get("status", {}).get("phase", "Pending")
            unschedulable = meta.get("deletionTimestamp") or spec.get("schedulingGates")
            if phase == "Pending" and not unschedulable:
                with self._lock:
                    if uid in self._binding:
                        return
                    self._binding.add(uid)
                self._binder.submit(self._bind, pod)
            return
        if node != self.node_name or finished:
            return
        if supervisor is not None:
            supervisor.notify_update(pod)
            return

        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        if meta.get("deletionTimestamp"):
            # Deleted before it ever ran here: nothing to stop, only the pod to remove.
            self._binder.submit(self._remove_unstarted, pod)
            return
        self._run_pod(pod)

    def _run_pod(self, pod: Json) -> None:
        supervisor = PodSupervisor(self.runtime, pod, seen_at=time.time())
        meta = pod["metadata"]
        with self._lock:
            self._supervisors[meta["uid"]] = supervisor
            self._records[meta["namespace"], meta["name"]] = supervisor.record
        supervisor.start()
        threading.Thread(
            target=self._forget_when_done,
            args=(supervisor,),
            daemon=True,
            name=f"forget-{meta['uid'][:8]}",
        ).start()

    def _forget_when_done(self, supervisor: PodSupervisor) -> None:
        supervisor.join()
        with self._lock:
            self._supervisors.pop(supervisor.uid, None)
            self._finished.add(supervisor.uid)

    def _bind(self, pod: Json) -> None:
        meta = pod["metadata"]
        try:
            self.rest.post(
                path("api", "v1", "namespaces", meta["namespace"], "pods", meta["name"], "binding"),
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": meta["name"], "uid": meta["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
                },
            )
        except ApiError as exc:
            # Already bound, deleted meanwhile, or its namespace is being deleted (403): the
            # watch tells what happens to the pod.
            if exc.status not in (403, 404, 409):
                logger.warning("Binding pod %s/%s failed: %s", meta["namespace"], meta["name"], exc)
        except Exception:
            logger.exception("Binding pod %s/%s failed", meta["namespace"], meta["name"])
        finally:
            with self._lock:
                self._binding.discard(meta["uid"])

    def _remove_unstarted(self, pod: Json) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.rest.delete(
                path("api", "v1", "namespaces", meta["namespace"], "pods", meta["name"]),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    # ------------------------------------------------------------------ logs endpoint

    def _start_log_server(self) -> int:
        standin = self

        class LogHandler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404, "the kubelet stand-in serves only /containerLogs")
                    return
                _, namespace, pod, container = parts
                query = urllib.parse.parse_qs(url.query)
                try:
                    text = standin.logs(namespace, pod, container)
                except KeyError as exc:
                    self.send_error(404, str(exc))
                    return
                if "tailLines" in query:
                    lines = int(query["tailLines"][0])
                    text = "".join(text.splitlines(keepends=True)[-lines:] if lines else [])
                body = text.encode()
                if "limitBytes" in query:
                    body = body[: int(query["limitBytes"][0])]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("Log request: " + format, *args)

        assert self._serving_cert is not None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LogHandler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._serving_cert.cert_path, self._serving_cert.key_path)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, name="standin-logs", daemon=True)
        thread.start()
        self._log_server = server
        return int(server.server_address[1])
