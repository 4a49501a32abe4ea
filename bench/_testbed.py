"""The test bed with the operator on it, and what the cluster benchmarks observe there.

Shared by `bench/cluster_operator.py` and `bench/cluster_dynamic.py`: the test bed's processes
(kube-apiserver, etcd and kube-controller-manager from cached binaries, the kubelet stand-in
that runs pods as local processes, a throwaway Postgres and an S3 server), the operator and
its inline executor on a fresh namespace, a watch of the runs' ends, and readings of memory,
CPU and the machine. Every process is started in a context manager that stops it by its PID.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The workloads' steps live apart from the benchmark scripts: the pods and inline workers get
# only this folder on PYTHONPATH, as an image would carry only a user's code.
CODE = BENCH / "operator_code"
for _path in (CODE, ROOT / "tests", ROOT / "tests" / "operator"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from operator_harness import (  # noqa: E402
    GROUP,
    VERSION,
    Cluster,
    apply_crds,
    operator_cluster,
    store_settings,
)

__all__ = ["CODE", "GROUP", "ROOT", "VERSION", "Cluster"]


# ------------------------------------------------------------------ the test bed


@contextlib.contextmanager
def test_bed(run_dir: Path) -> Iterator[tuple[Any, str, Any]]:
    """Control plane, kubelet stand-in, Postgres and S3; yields (access, postgres URL, S3)."""
    from testbed.binaries import bin_dir, missing_binaries
    from testbed.controlplane import ControlPlane
    from testbed.kubelet_standin import KubeletStandIn
    from testbed.postgres import PostgresServer
    from testbed.s3 import S3Server

    directory = bin_dir()
    missing = missing_binaries(directory)
    if missing:
        raise SystemExit(
            f"missing in {directory}: {', '.join(missing)}; run hack/testbed-binaries.sh"
        )
    with contextlib.ExitStack() as stack:
        plane = ControlPlane(directory, run_dir / "cluster")
        access = plane.start()
        stack.callback(plane.stop)
        standin = KubeletStandIn(
            server=access.server,
            token=access.admin_token,
            ca_path=access.ca_path,
            run_dir=run_dir / "cluster",
            serving_cert=plane.issue_serving_cert("kubelet-standin"),
        ).start()
        stack.callback(standin.stop)
        postgres = PostgresServer.start_throwaway(run_dir / "postgres")
        stack.callback(postgres.stop)
        s3 = S3Server.start(run_dir / "s3")
        stack.callback(s3.stop)
        yield access, postgres.create_database("kstep_bench"), s3


@contextlib.contextmanager
def operator_on(
    access: Any,
    postgres_url: str,
    s3: Any,
    run_dir: Path,
    settings: dict[str, str] | None = None,
    pod_settings: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """The operator and its executor on a fresh namespace and bucket, with default timings.

    `settings` are further environment variables of the operator; `pod_settings` go with the
    store settings into the Secret that every pod (and inline worker) reads.
    """
    from kubernetes import client

    apply_crds(access.admin_kubeconfig)
    namespace = f"bench-{os.getpid()}"
    with access.api_client("admin") as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        deadline = time.monotonic() + 30
        while True:
            try:
                core.read_namespaced_service_account("default", namespace)
                break
            except client.ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    bucket = s3.create_bucket()
    # The operator's own defaults, not the tests' shorter sweep.
    environment = {
        "KSTEP_OPERATOR_SWEEP_SECONDS": "2",
        "KSTEP_OPERATOR_LOST_JOB_GRACE_SECONDS": "10",
        **(settings or {}),
    }
    profile = os.environ.get("KSTEP_BENCH_PROFILE")
    if profile:
        environment["KSTEP_OPERATOR_PROFILE_PATH"] = profile
    with operator_cluster(
        access,
        namespace,
        {**store_settings(postgres_url, bucket), **(pod_settings or {})},
        run_dir / "side-channel.log",
        run_dir / "operator",
        code_paths=(CODE,),
        settings=environment,
    ) as cluster:
        wait_serving(cluster)
        yield cluster


def wait_serving(cluster: Cluster) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if cluster.metric("kstep_operator_leader") == 1:
                return
        time.sleep(0.2)
    raise RuntimeError("the operator did not start")


# ------------------------------------------------------------------ observing runs


class NamespaceWatch:
    """A thread that follows one kind of object in the namespace, watching again after an
    error; subclasses say what to list and what to note of each object seen."""

    # How long one watch request lasts before it is made again.
    request_seconds = 30

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def _list_call(self) -> tuple[Any, ...]:
        """The list function and its positional arguments."""
        raise NotImplementedError

    def _observe(self, body: Any, now: float) -> None:
        """Note an object seen at monotonic time `now`."""
        raise NotImplementedError

    def _watch(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    *self._list_call(), timeout_seconds=self.request_seconds
                ):
                    self._observe(event["object"], time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


class RunWatch(NamespaceWatch):
    """Watches the namespace's PipelineRuns and notes when each one ended (local clock),
    and how many versions of each it saw (its creation and every write to it)."""

    def __init__(self, cluster: Cluster) -> None:
        self.ended: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self.versions: dict[str, set[str]] = {}
        self._changed = threading.Condition()
        super().__init__(cluster)

    def _list_call(self) -> tuple[Any, ...]:
        return (
            self.cluster.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.cluster.namespace,
            "pipelineruns",
        )

    def _observe(self, body: Any, now: float) -> None:
        phase = (body.get("status") or {}).get("phase")
        name = body["metadata"]["name"]
        # A set: a watch that starts again lists the current version once more.
        self.versions.setdefault(name, set()).add(body["metadata"]["resourceVersion"])
        if phase in ("completed", "failed", "cancelled") and name not in self.ended:
            with self._changed:
                self.ended[name] = now
                self.phases[name] = phase
                self._changed.notify_all()

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(n in self.ended for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.ended]
                    raise TimeoutError(f"{len(missing)} runs did not end, e.g. {missing[:3]}")
                self._changed.wait(min(left, 1.0))
        failed = [n for n in names if self.phases[n] != "completed"]
        if failed:
            raise RuntimeError(f"runs did not complete: {failed[:5]}")


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p99": at(0.99),
        "min": ordered[0],
        "max": ordered[-1],
    }


# ------------------------------------------------------------------ memory


def peak_rss(cluster: Cluster) -> dict[str, float]:
    """Peak resident memory (VmHWM, MiB) of the operator, the executor and its workers."""
    processes = cluster.processes
    assert processes.operator is not None and processes.executor is not None
    found = {
        "operator": hwm(processes.operator.pid),
        "executor": hwm(processes.executor.pid),
    }
    workers = [pid for pid in _children(processes.executor.pid)]
    found["inline_workers"] = sum(hwm(pid) for pid in workers)
    found["inline_worker_count"] = len(workers)
    return found


def hwm(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM) in MiB; 0 once it is gone."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


# ------------------------------------------------------------------ CPU


_GROUPS = (
    ("kube-apiserver", "kube-apiserver"),
    ("etcd", "etcd"),
    ("kube-controller-manager", "kube-controller-manager"),
    ("operator", "kstep-operator run"),
    ("inline executor", "kstep-operator executor"),
    ("inline workers", "kstep_operator.inline.worker"),
    ("orchestrator pods", "kstep-orchestrator"),
    ("step pods", "kstep-runner"),
    ("postgres", "postgres"),
    ("s3 (moto)", "moto_server"),
)
EXITED = "exited children (pods that ended)"


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process (with the kubelet stand-in and the test's
    API calls) and by each group of its descendants, named by their command lines.

    A pod that ended was reaped by the kubelet stand-in, in this process: its CPU time is
    then only in this process's children's total, reported as one group.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float, str]] = {}
    own_children = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            used = (int(fields[11]) + int(fields[12])) / ticks
            table[int(entry)] = (int(fields[1]), used, command)
            if int(entry) == os.getpid():
                own_children = (int(fields[13]) + int(fields[14])) / ticks
    ours = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (parent, _, _) in table.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                changed = True
    found: dict[str, float] = {EXITED: own_children}
    for pid in ours:
        if pid not in table:
            continue
        _, used, command = table[pid]
        group = (
            "benchmark process (kubelet stand-in, watches)"
            if pid == os.getpid()
            else next((name for name, needle in _GROUPS if needle in command), "other")
        )
        found[group] = found.get(group, 0.0) + used
    return found


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in after}


def wait_quiet(limit: float = 60.0, window: float = 2.0, busy: float = 0.1) -> float:
    """Wait until the test bed's processes use under `busy` of a core over `window` seconds.

    A workload leaves work behind (the controllers settling hundreds of finished Jobs and pods,
    the operator's last status writes): the next one starts once that is done, or after
    `limit` seconds. Returns the seconds waited.
    """
    began = time.monotonic()
    while time.monotonic() - began < limit:
        before = sum(cpu_seconds().values())
        time.sleep(window)
        if sum(cpu_seconds().values()) - before < busy * window:
            break
    return time.monotonic() - began


# ------------------------------------------------------------------ the machine


def machine() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        facts["cpu"] = names[0] if names else platform.processor()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    facts["kstep_commit"] = commit.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    facts["uncommitted_changes"] = bool(dirty.stdout.strip())
    return facts
