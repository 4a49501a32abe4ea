"""Running one pod's containers as local processes, for the kubelet stand-in.

A ``PodSupervisor`` thread owns one pod: it writes the pod's volumes, resolves each container's
environment, starts init containers one by one and then the main containers, restarts them as
``restartPolicy`` says, writes the pod status, and on deletion signals the processes and removes
the pod. Each container is one process group; its output goes to ``logs/<container>.log`` in
the pod's directory.

With root privileges each process gets a private mount namespace, in which its volumes, its
termination-message file and a missing ``workingDir`` are bind mounts of per-pod directories.
Bind mounts need a target on the host: a missing one is created empty (for example
``/dev/termination-log``); see ``mount_targets`` for when it is removed.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from testbed.kubeconfigs import write_kubeconfig
from testbed.mount_targets import MountTargets
from testbed.pod_environment import (
    HOST_IP,
    POD_IP,
    ContainerConfigError,
    Lookup,
    container_environment,
    expand,
)
from testbed.pod_volumes import PodVolumes, materialize_volumes
from testbed.rest import ApiError, Json, RestClient, path

logger = logging.getLogger(__name__)

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
_TERMINATION_MESSAGE_LIMIT = 4096
# FallbackToLogsOnError takes this much of the log's end, as the kubelet does.
_FALLBACK_LOG_LINES, _FALLBACK_LOG_BYTES = 80, 2048
# Exit code and reason a container runtime reports when it cannot start the process at all.
_START_ERROR_CODE = 128


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeRuntime:
    """What every pod supervisor of one stand-in shares."""

    rest: RestClient
    node_name: str
    server: str
    ca_pem: bytes
    pods_dir: Path
    node_allocatable: dict[str, str]
    service_env: dict[str, str]
    path_prepend: list[str]
    extra_env: dict[str, str]
    entrypoints: dict[str, list[str]]
    isolate: bool
    restart_backoff: tuple[float, float]
    mount_targets: MountTargets
    # The test environment and the pods' directories, which no volume may be mounted over.
    protected_paths: list[Path] = field(default_factory=list)


@dataclass
class PodRecord:
    """What the stand-in knows about a pod it ran; tests read logs and timings from it."""

    namespace: str
    name: str
    uid: str
    directory: Path
    containers: list[str]
    seen_at: float
    spawned_at: dict[str, float] = field(default_factory=dict)
    finished: threading.Event = field(default_factory=threading.Event)

    def log_path(self, container: str) -> Path:
        return self.directory / "logs" / f"{container}.log"


@dataclass
class _Container:
    spec: Json
    init: bool
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # True from the start of a process until the supervisor has handled its exit.
    alive: bool = False
    restart_count: int = 0
    restart_at: float | None = None
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    done: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class PodSupervisor(threading.Thread):
    """Runs one pod. Events from the stand-in's watch arrive through ``notify_*``.

    Processes are started from this thread only: their parent-death signal is tied to it, and
    it lives until every process of the pod has been reaped.
    """

    def __init__(self, runtime: NodeRuntime, pod: Json, seen_at: float) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runtime = runtime
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        spec = pod["spec"]
        self.policy: str = spec.get("restartPolicy", "Always")
        self.containers = {
            c["name"]: _Container(c, init=True) for c in spec.get("initContainers") or []
        } | {c["name"]: _Container(c, init=False) for c in spec["containers"]}
        if spec.get("initContainers"):
            for container in self.containers.values():
                if not container.init:
                    container.state = {"waiting": {"reason": "PodInitializing"}}
        directory = runtime.pods_dir / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.record = PodRecord(
            self.namespace, self.pod_name, self.uid, directory, list(self.containers), seen_at
        )
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._started_at: str | None = None
        self._phase = "Pending"
        self._gone = False
        self._terminating = False
        self._kill_at: float | None = None
        self._shutting_down = False
        self._main_started = False
        self._conditions: dict[str, Json] = {}
        self.volumes = PodVolumes()

    # ------------------------------------------------------------------ from the stand-in

    def notify_update(self, pod: Json) -> None:
        self._events.put(("update", pod))

    def notify_deleted(self, pod: Json) -> None:
        self._events.put(("deleted", pod))

    def shutdown(self) -> None:
        """Kill the pod's processes at once and end the thread, writing nothing to the API."""
        self._events.put(("shutdown", None))

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        try:
            if self._prepare():
                self._supervise()
        except Exception:
            logger.exception("Supervising pod %s/%s failed", self.namespace, self.pod_name)
            self._kill_all(signal.SIGKILL)
        finally:
            self._reap_all()
            self.record.finished.set()

    def _prepare(self) -> bool:
        """Write volumes and resolve environments; wait while a referenced object is missing."""
        for sub in ("home", "tmp", "logs", "termination", "volumes", "workdirs"):
            (self.record.directory / sub).mkdir(parents=True, exist_ok=True)
        while True:
            try:
                volumes = self._materialize()
                break
            except (ContainerConfigError, ApiError, urllib3.exceptions.HTTPError) as exc:
                # The kubelet keeps retrying until the Secret or ConfigMap appears.
                for container in self.containers.values():
                    container.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                    }
                with contextlib.suppress(ApiError, urllib3.exceptions.HTTPError):
                    self._write_status()
                if not self._wait_for_events(1.0) or self._terminating:
                    self._finish_termination()
                    return False
        self.volumes = volumes
        return True

    def _materialize(self) -> PodVolumes:
        cache: dict[tuple[str, str, str], Json | None] = {}

        def lookup(kind: str, namespace: str, name: str) -> Json | None:
            if (kind, namespace, name) not in cache:
                try:
                    obj = self.runtime.rest.get(
                        path("api", "v1", "namespaces", namespace, kind, name)
                    )
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    obj = None
                cache[kind, namespace, name] = obj
            return cache[kind, namespace, name]

        volumes = materialize_volumes(
            self.pod,
            self.record.directory / "volumes",
            lookup=lookup,
            issue_token=self._issue_token,
            node_allocatable=self.runtime.node_allocatable,
        )
        for container in self.containers.values():
            container.env = self._environment(container, volumes, lookup)
        return volumes

    def _issue_token(self, audience: str | None, expiration: int) -> str:
        service_account = self.pod["spec"].get("serviceAccountName") or "default"
        spec: Json = {
            "expirationSeconds": expiration,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.pod_name,
                "uid": self.uid,
            },
        }
        if audience:
            spec["audiences"] = [audience]
        token_path = path(
            "api", "v1", "namespaces", self.namespace, "serviceaccounts", service_account, "token"
        )
        response = self.runtime.rest.post(
            token_path,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(response["status"]["token"])

    def _environment(
        self, container: _Container, volumes: PodVolumes, lookup: Lookup
    ) -> dict[str, str]:
        home = self.record.directory / "home"
        env = {
            "PATH": os.pathsep.join(
                [*self.runtime.path_prepend, "/usr/local/bin", "/usr/bin", "/bin"]
            ),
            "HOME": str(home),
            "TMPDIR": str(self.record.directory / "tmp"),
            "HOSTNAME": self.pod["spec"].get("hostname") or self.pod_name,
            "LANG": "C.UTF-8",
            **self.runtime.extra_env,
        }

        # In place of in-cluster configuration, a container that mounts a service-account
        # token also gets a kubeconfig for it, so clients configured either way act as the
        # pod's ServiceAccount.
        token = volumes.token_for(container.spec)
        if token is not None:
            service_account = self.pod["spec"].get("serviceAccountName") or "default"
            kubeconfig = write_kubeconfig(
                self.record.directory / "kubeconfig",
                server=self.runtime.server,
                ca_pem=self.runtime.ca_pem,
                user=f"system:serviceaccount:{self.namespace}:{service_account}",
                token=token,
                namespace=self.namespace,
            )
            env["KUBECONFIG"] = str(kubeconfig)

        env |= container_environment(
            self.pod,
            container.spec,
            lookup=lookup,
            service_env=self.runtime.service_env,
            node_allocatable=self.runtime.node_allocatable,
        )
        return env

    def _supervise(self) -> None:
        init = [c for c in self.containers.values() if c.init]
        main = [c for c in self.containers.values() if not c.init]
        self._started_at = now_rfc3339()
        self._advance(init, main)
        self._write_status()

        while True:
            if not self._wait_for_events(self._next_timer()):
                return
            self._run_timers()
            if self._terminating:
                if not any(c.alive for c in self.containers.values()):
                    self._finish_termination()
                    return
                continue
            self._advance(init, main)
            self._write_status()
            if self._phase in ("Succeeded", "Failed"):
                logger.debug("Pod %s/%s ended: %s", self.namespace, self.pod_name, self._phase)
                return

    def _advance(self, init: list[_Container], main: list[_Container]) -> None:
        """Start what is due next: the next init container, or all main containers."""
        if self._phase == "Failed":
            return
        pending_init = [c for c in init if not c.done]
        if pending_init:
            first = pending_init[0]
            if not first.alive and first.restart_at is None and first.process is None:
                self._start(first)
            return
        if not self._main_started:
            self._main_started = True
            for container in main:
                self._start(container)
            return
        if all(c.done for c in main):
            exit_codes = [c.state["terminated"]["exitCode"] for c in main]
            self._phase = "Succeeded" if not any(exit_codes) else "Failed"

    # ------------------------------------------------------------------ events and timers

    def _wait_for_events(self, timeout: float | None) -> bool:
        """Handle queued events (waiting up to ``timeout`` for the first); False: stop now."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return True
        while True:
            kind, payload = event
            if kind == "shutdown":
                self._shutting_down = True
                self._kill_all(signal.SIGKILL)
                return False
            if kind == "exited":
                self._on_exit(*payload)
            elif kind == "update":
                self.pod = payload
                if payload["metadata"].get("deletionTimestamp"):
                    self._begin_termination(payload)
            elif kind == "deleted":
                self._gone = True
                self._begin_termination(payload)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return True

    def _next_timer(self) -> float | None:
        moments = [c.restart_at for c in self.containers.values() if c.restart_at is not None]
        if self._kill_at is not None:
            moments.append(self._kill_at)
        return max(0.0, min(moments) - time.monotonic()) if moments else None

    def _run_timers(self) -> None:
        now = time.monotonic()
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            self._kill_all(signal.SIGKILL)
        for container in self.containers.values():
            if container.restart_at is not None and now >= container.restart_at:
                container.restart_at = None
                container.restart_count += 1
                if not self._terminating:
                    self._start(container)

    def _on_exit(
        self, name: str, code: int, finished_at: str, start_error: str | None = None
    ) -> None:
        container = self.containers[name]
        container.alive = False
        if container.process is not None:
            # A container's leftover children die with it, as in a real container.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(container.process.pid, signal.SIGKILL)
            container.process = None
        terminated = self._terminated(container, code, finished_at)
        if start_error is not None:
            terminated.update(reason="StartError", message=start_error)
        container.state = {"terminated": terminated}
        if self._terminating:
            container.done = True
            return
        if container.init:
            restart = code != 0 and self.policy != "Never"
        else:
            restart = self.policy == "Always" or (self.policy == "OnFailure" and code != 0)
        if restart:
            first, cap = self.runtime.restart_backoff
            delay = min(cap, first * 2**container.restart_count)
            container.restart_at = time.monotonic() + delay
            container.last_state = container.state
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:.1f}s restarting failed container={name}",
                }
            }
            return
        container.done = True
        if container.init and code != 0:
            self._phase = "Failed"

    def _terminated(self, container: _Container, code: int, finished_at: str) -> Json:
        message = self._termination_message(container, code)
        state: Json = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.state.get("running", {}).get("startedAt", finished_at),
            "finishedAt": finished_at,
            "containerID": self._container_id(container),
        }
        if message:
            state["message"] = message
        return state

    def _termination_message(self, container: _Container, code: int) -> str:
        termination = self.record.directory / "termination" / container.name
        try:
            message = termination.read_bytes()[:_TERMINATION_MESSAGE_LIMIT].decode(
                "utf-8", "replace"
            )
        except FileNotFoundError:
            message = ""
        fallback = container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        if not message and fallback and code != 0:
            log = self.record.log_path(container.name).read_bytes()
            tail = b"\n".join(log.splitlines()[-_FALLBACK_LOG_LINES:])[-_FALLBACK_LOG_BYTES:]
            message = tail.decode("utf-8", "replace")
        return message

    # ------------------------------------------------------------------ processes

    def _container_id(self, container: _Container) -> str:
        return f"kstep-standin://{self.uid[:8]}-{container.name}-{container.restart_count}"

    def _argv(self, container: _Container) -> list[str]:
        spec = container.spec
        command = spec.get("command") or self.runtime.entrypoints.get(spec.get("image", ""))
        if not command:
            raise ContainerConfigError(
                f"container {container.name!r} has no command and the kubelet stand-in knows "
                f"no entrypoint for image {spec.get('image')!r}"
            )
        return [expand(part, container.env) for part in [*command, *(spec.get("args") or [])]]

    def _binds(self, container: _Container) -> tuple[list[tuple[Path, Path]], Path, Path]:
        """Return (host source, target) bind mounts, the working directory, and its host twin."""
        binds: list[tuple[Path, Path]] = []
        for mount in container.spec.get("volumeMounts") or []:
            source = self.volumes.host_paths.get(mount["name"])
            if source is None:
                raise ContainerConfigError(f"volumeMount names no volume: {mount['name']!r}")
            if mount.get("subPath"):
                source = source / expand(mount["subPath"], container.env)
                if not source.exists():
                    source.mkdir(parents=True)
            target = Path(mount["mountPath"])
            hidden = [p for p in self.runtime.protected_paths if p == target or target in p.parents]
            if hidden:
                raise ContainerConfigError(
                    f"volumeMount {mount['name']!r} at {target} would hide {hidden[0]}, which "
                    f"the kubelet stand-in's processes need; mount the volume elsewhere"
                )
            binds.append((source, target))
        termination = self.record.directory / "termination" / container.name
        termination.write_bytes(b"")
        message_path = container.spec.get("terminationMessagePath")
        binds.append((termination, Path(message_path or DEFAULT_TERMINATION_MESSAGE_PATH)))

        # Without a workingDir the image's would apply; the pod's home directory stands in
        # for it so that relative paths never land in the host's root directory.
        workdir = Path(container.spec.get("workingDir") or self.record.directory / "home")
        host_workdir = workdir
        if not workdir.exists():
            host_workdir = self.record.directory / "workdirs" / container.name
            host_workdir.mkdir(parents=True, exist_ok=True)
            binds.append((host_workdir, workdir))
        # Parents before children, so that a mount inside another mount stays visible.
        binds.sort(key=lambda bind: len(bind[1].parts))
        return binds, workdir, host_workdir

    def _launcher(self, binds: list[tuple[Path, Path]], workdir: Path) -> list[str]:
        """Return the argv prefix that isolates the container process and dies with us."""
        prefix = ["setpriv", "--pdeathsig", "SIGKILL", "--"] if shutil.which("setpriv") else []
        if not self.runtime.isolate:
            return prefix
        steps = []
        for source, target in binds:
            self.runtime.mount_targets.ensure(target, directory=source.is_dir())
            failed = f"echo 'kubelet stand-in: cannot mount {target}' >&2; exit {_START_ERROR_CODE}"
            steps.append(
                f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))} "
                f"|| {{ {failed}; }}"
            )
        steps.append(f"cd {shlex.quote(str(workdir))}")
        steps.append('exec "$@"')
        return [
            *prefix,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "; ".join(steps),
            "sh",
        ]

    def _start(self, container: _Container) -> None:
        log_path = self.record.log_path(container.name)
        try:
            argv = self._argv(container)
            binds, workdir, host_workdir = self._binds(container)
            executable = shutil.which(argv[0], path=container.env.get("PATH"))
            if executable is None and os.sep not in argv[0]:
                raise ContainerConfigError(f'exec: "{argv[0]}": executable file not found in $PATH')
            launcher = self._launcher(binds, workdir)
        except (ContainerConfigError, OSError) as exc:
            self._fail_start(container, str(exc))
            return

        with log_path.open("ab") as log:
            container.process = subprocess.Popen(
                [*launcher, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=container.env,
                # Isolated processes change directory after their mounts are in place.
                cwd=None if self.runtime.isolate else host_workdir,
                start_new_session=True,
            )
        container.alive = True
        self.record.spawned_at.setdefault(container.name, time.time())
        container.state = {"running": {"startedAt": now_rfc3339()}}
        logger.debug(
            "Started container %s of pod %s/%s as PID %s",
            container.name,
            self.namespace,
            self.pod_name,
            container.process.pid,
        )
        threading.Thread(
            target=self._wait_for_exit,
            args=(container.name, container.process),
            name=f"wait-{container.process.pid}",
            daemon=True,
        ).start()

    def _fail_start(self, container: _Container, message: str) -> None:
        # As a container runtime does: the container ends with exit code 128 and StartError.
        logger.info(
            "Container %s of pod %s/%s cannot start: %s",
            container.name,
            self.namespace,
            self.pod_name,
            message,
        )
        with self.record.log_path(container.name).open("a") as log:
            log.write(f"kubelet stand-in: {message}\n")
        container.alive = True
        stamp = now_rfc3339()
        container.state = {"running": {"startedAt": stamp}}
        self._events.put(("exited", (container.name, _START_ERROR_CODE, stamp, message)))

    def _wait_for_exit(self, name: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        # A signal shows up as a negative return code; runtimes report 128 + signal number.
        self._events.put(("exited", (name, code if code >= 0 else 128 - code, now_rfc3339())))

    def _kill_all(self, sig: int) -> None:
        for container in self.containers.values():
            if container.alive and container.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(container.process.pid, sig)

    def _reap_all(self) -> None:
        for container in self.containers.values():
            if container.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(container.process.pid, signal.SIGKILL)
                container.process.wait()
                container.alive = False

    # ------------------------------------------------------------------ deletion

    def _begin_termination(self, pod: Json) -> None:
        if self._terminating:
            return
        self._terminating = True
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        grace = 30 if grace is None else int(grace)
        # A forced deletion (grace 0) still gets a moment, as the kubelet's 2 s minimum.
        self._kill_at = time.monotonic() + max(grace, 2 if self._gone else 0)
        for container in self.containers.values():
            container.restart_at = None
        logger.debug(
            "Terminating pod %s/%s with a grace period of %s s",
            self.namespace,
            self.pod_name,
            grace,
        )
        self._kill_all(signal.SIGTERM)

    def _finish_termination(self) -> None:
        """Record how the containers ended, then remove the pod as the kubelet does."""
        if self._gone or self._shutting_down:
            return
        main = [c for c in self.containers.values() if not c.init]
        for container in self.containers.values():
            if "running" in container.state:
                container.state = {"terminated": self._terminated(container, 137, now_rfc3339())}
        succeeded = all(c.state.get("terminated", {}).get("exitCode") == 0 for c in main)
        self._phase = "Succeeded" if succeeded else "Failed"
        self._write_status()
        try:
            self.runtime.rest.delete(
                path("api", "v1", "namespaces", self.namespace, "pods", self.pod_name),
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    # ------------------------------------------------------------------ status

    def _container_status(self, container: _Container) -> Json:
        running = "running" in container.state
        status: Json = {
            "name": container.name,
            "image": container.spec.get("image", ""),
            "imageID": "",
            "ready": running and not container.init,
            "started": running,
            "restartCount": container.restart_count,
            "state": container.state,
            "lastState": container.last_state,
        }
        if "waiting" not in container.state:
            status["containerID"] = self._container_id(container)
        return status

    def _write_status(self) -> None:
        if self._gone or self._shutting_down:
            return
        containers = list(self.containers.values())
        main = [c for c in containers if not c.init]
        init_done = all(c.done for c in containers if c.init)
        ready = self._phase not in ("Succeeded", "Failed") and all(
            "running" in c.state for c in main
        )
        if self._phase == "Pending" and init_done and any(c.alive for c in main):
            self._phase = "Running"
        not_ready_reason = (
            "PodCompleted" if self._phase in ("Succeeded", "Failed") else ("ContainersNotReady")
        )
        stamp = now_rfc3339()

        def condition(kind: str, value: bool, reason: str = "") -> Json:
            previous = self._conditions.get(kind)
            if previous is not None and previous["status"] == str(value):
                return previous
            entry: Json = {"type": kind, "status": str(value), "lastTransitionTime": stamp}
            if reason and not value:
                entry["reason"] = reason
            self._conditions[kind] = entry
            return entry

        status: Json = {
            "phase": self._phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "conditions": [
                condition("PodReadyToStartContainers", True),
                condition("Initialized", init_done, "ContainersNotInitialized"),
                condition("ContainersReady", ready, not_ready_reason),
                condition("Ready", ready, not_ready_reason),
            ],
            "containerStatuses": [self._container_status(c) for c in main],
        }
        if self._started_at:
            status["startTime"] = self._started_at
        if any(c.init for c in containers):
            status["initContainerStatuses"] = [
                self._container_status(c) for c in containers if c.init
            ]
        try:
            self.runtime.rest.patch(
                path("api", "v1", "namespaces", self.namespace, "pods", self.pod_name, "status"),
                {"metadata": {"uid": self.uid}, "status": status},
            )
        except ApiError as exc:
            # Gone or replaced by a pod of the same name: the watch reports the deletion.
            if exc.status not in (404, 409, 422):
                raise
            logger.debug("Status of pod %s/%s not written: %s", self.namespace, self.pod_name, exc)
