"""`Operator`: what every controller shares, and the dispatch of queued keys to them."""

from __future__ import annotations

import contextlib
import cProfile
import datetime
import logging
import os
import pstats
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from kstep._settings import Settings
from kstep.stores import Stores
from kstep_operator.cache import ObjectCache
from kstep_operator.inline.client import ExecutorClient
from kstep_operator.kube import SECRETS, Kube, parse_time
from kstep_operator.metrics import Metrics
from kstep_operator.reconcile.manifests import PodDefaults
from kstep_operator.settings import OperatorSettings
from kstep_operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

RUN = "run"
STEP = "step"

# Artifact version records kept in memory for cache keys (a few hundred bytes each).
_VERSIONS_KEPT = 50_000

# Store settings a step needs; everything else in the operator's environment stays there.
_STORE_VARIABLES = (
    "KSTEP_METADATA_URL",
    "KSTEP_ARTIFACT_ROOT",
    "KSTEP_S3_ENDPOINT_URL",
    "KSTEP_S3_REGION",
    "KSTEP_ALLOW_PICKLE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


class KeyLocks:
    """One reentrant lock per key, held only while someone uses it.

    The work queue never reconciles one key on two threads, but a run's reconcile also acts
    on its StepRuns (cancelling them, starting first attempts) while their own reconciles
    may run: both take the StepRun's lock, so each sees what the other did before deciding.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Hashable, tuple[threading.RLock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Hold the lock of `key` for the duration of the block."""
        with self._lock:
            lock, users = self._held.get(key) or (threading.RLock(), 0)
            self._held[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._held[key]
                if users == 1:
                    del self._held[key]
                else:
                    self._held[key] = (lock, users - 1)


class Operator:
    """Shared state of the operator process and the loop that reconciles queued objects."""

    def __init__(
        self,
        settings: OperatorSettings,
        store_settings: Settings,
        kube: Kube,
        stores: Stores,
        executor_socket: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store_settings = store_settings
        self.kube = kube
        self.stores = stores
        self.cache = ObjectCache()
        self.metrics = metrics or Metrics()
        self.defaults = PodDefaults(
            image=settings.image,
            image_pull_policy=settings.image_pull_policy,
            store_secret=settings.store_secret,
            service_account=settings.step_service_account,
            orchestrator_service_account=settings.orchestrator_service_account,
            orchestrator_restart_limit=settings.orchestrator_restart_limit,
        )
        self.queue = WorkQueue(
            self._process,
            workers=settings.reconcile_workers,
            name="kstep-reconcile",
            on_error=self._failed,
        )
        self.step_locks = KeyLocks()
        self.inline_attempts: dict[str, tuple[str, str]] = {}
        self.executor = ExecutorClient(executor_socket, self._inline_done, self._inline_lost)
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        self._lock = threading.Lock()
        self._thread_state = threading.local()
        self._profilers: list[cProfile.Profile] = []
        self._counts_written: dict[tuple[str, str], float] = {}
        self._waiting_runs: set[tuple[str, str]] = set()
        self._reserved = 0
        self._run_names: dict[str, str] = {}
        self._versions: OrderedDict[str, Any] = OrderedDict()

    def start(self) -> None:
        """Start reconciling and connect to the inline executor."""
        self.executor.start()
        self.queue.start()
        threading.Thread(target=self._sweep_forever, name="kstep-sweep", daemon=True).start()

    def stop(self) -> None:
        """Stop handing out work."""
        self.queue.stop()
        self.executor.stop()
        self._write_profile()

    # -------------------------------------------------------------- dispatch

    def enqueue_run(self, namespace: str, name: str) -> None:
        """Queue a PipelineRun for reconciling."""
        self.queue.add((RUN, namespace, name))

    def enqueue_run_coalesced(self, namespace: str, name: str) -> None:
        """Queue a PipelineRun for reconciling within the counts interval, once for many calls."""
        self.queue.add_coalesced((RUN, namespace, name), self.settings.counts_interval_seconds)

    def enqueue_step(self, namespace: str, name: str, after: float = 0.0) -> None:
        """Queue a StepRun for reconciling, now or after `after` seconds."""
        self.queue.add_after((STEP, namespace, name), after)

    def _process(self, key: Hashable) -> None:
        from kstep_operator import runs, steps

        kind, namespace, name = str(key[0]), str(key[1]), str(key[2])  # type: ignore[index]
        profiler = self._profiler()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            if kind == RUN:
                runs.reconcile_run(self, namespace, name)
            else:
                steps.reconcile_step(self, namespace, name)
        finally:
            if profiler is not None:
                profiler.disable()
        self.metrics.reconcile_duration.labels(kind).observe(time.perf_counter() - started)
        self.metrics.queue_depth.set(self.queue.depth())

    def _profiler(self) -> cProfile.Profile | None:
        # One profiler per worker thread: a profiler only sees the thread that enabled it.
        if not self.settings.profile_path:
            return None
        profiler: cProfile.Profile | None = getattr(self._thread_state, "profiler", None)
        if profiler is None:
            profiler = cProfile.Profile()
            self._thread_state.profiler = profiler
            with self._lock:
                self._profilers.append(profiler)
        return profiler

    def _write_profile(self) -> None:
        with self._lock:
            profilers = list(self._profilers)
        if not self.settings.profile_path or not profilers:
            return
        statistics = pstats.Stats(profilers[0])
        for profiler in profilers[1:]:
            statistics.add(profiler)
        statistics.dump_stats(self.settings.profile_path)
        logger.info("The reconciles' profile is in %s.", self.settings.profile_path)

    def _failed(self, key: Hashable, error: BaseException) -> None:
        kind = key[0]  # type: ignore[index]
        self.metrics.reconcile_errors.labels(kind).inc()
        logger.warning("Reconciling %s failed (%s); retrying in 2 s.", key, error, exc_info=error)
        self.queue.add_after(key, 2.0)

    # -------------------------------------------------------------- inline executor

    def _inline_done(self, step_run_id: str, status: str) -> None:
        with self._lock:
            key = self.inline_attempts.pop(step_run_id, None)
        if key is not None:
            self.enqueue_step(*key)

    def _inline_lost(self, step_run_ids: list[str]) -> None:
        for step_run_id in step_run_ids:
            self._inline_done(step_run_id, "lost")

    def track_inline(self, step_run_id: str, namespace: str, name: str) -> None:
        """Remember which StepRun an inline attempt belongs to, to queue it when it ends."""
        with self._lock:
            self.inline_attempts[step_run_id] = (namespace, name)

    # -------------------------------------------------------------- the global limit

    def capacity_freed(self) -> None:
        """A step ended (or room was released): queue the runs that waited for room."""
        with self._lock:
            waiting = list(self._waiting_runs)
            self._waiting_runs.clear()
        for namespace, name in waiting:
            self.enqueue_run(namespace, name)

    # -------------------------------------------------------------- pacing and memos

    def counts_wait(self, namespace: str, name: str) -> float:
        """Seconds until a run's step counts may be written again (0: now)."""
        with self._lock:
            written = self._counts_written.get((namespace, name))
        if written is None:
            return 0.0
        return max(0.0, written + self.settings.counts_interval_seconds - time.monotonic())

    def counts_were_written(self, namespace: str, name: str) -> None:
        """Note that a run's step counts were written now."""
        with self._lock:
            self._counts_written[(namespace, name)] = time.monotonic()

    def run_ended(self, namespace: str, name: str, uid: str) -> None:
        """Forget what was kept about a run while it ran."""
        with self._lock:
            self._counts_written.pop((namespace, name), None)
            self._run_names.pop(uid, None)

    def run_name(self, uid: str) -> str | None:
        """The name a run has in the metadata store, once looked up (it never changes)."""
        with self._lock:
            return self._run_names.get(uid)

    def remember_run_name(self, uid: str, name: str) -> None:
        with self._lock:
            self._run_names[uid] = name

    def artifact_versions(self, ids: list[str]) -> dict[str, Any]:
        """Artifact version records by id; versions never change, so each is read once."""
        with self._lock:
            found = {i: self._versions[i] for i in ids if i in self._versions}
        missing = [i for i in ids if i not in found]
        if missing:
            read = self.stores.metadata.versions_by_id(missing)
            self.remember_versions(read.values())
            found.update(read)
        return found

    def remember_versions(self, records: Iterable[Any]) -> None:
        """Keep artifact version records (the outputs a step just recorded, for instance)."""
        with self._lock:
            for record in records:
                self._versions[record.id] = record
                self._versions.move_to_end(record.id)
            while len(self._versions) > _VERSIONS_KEPT:
                self._versions.popitem(last=False)

    # -------------------------------------------------------------- store settings

    def store_environment(self, namespace: str, secret: str | None) -> dict[str, str] | None:
        """The store settings of a run: its Secret's values, or the operator's own.

        None when the run names a Secret that does not exist.
        """
        if not secret:
            return {k: os.environ[k] for k in _STORE_VARIABLES if k in os.environ} | {
                "KSTEP_METADATA_URL": self.store_settings.metadata_url,
                "KSTEP_ARTIFACT_ROOT": self.store_settings.artifact_root,
            }
        return self.secret(namespace, secret)

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's values, cached for a few seconds."""
        key = (namespace, name)
        now = time.monotonic()
        with self._lock:
            cached = self._secrets.get(key)
        if cached is not None and now - cached[0] < 10:
            return cached[1]
        data = self.kube.secret_data(namespace, name)
        with self._lock:
            self._secrets[key] = (now, data)
        return data

    def secret_exists(self, namespace: str, name: str) -> bool:
        """Whether a Secret exists (without reading more than needed)."""
        return self.kube.get(SECRETS, namespace, name) is not None

    # -------------------------------------------------------------- sweeping

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(self.settings.sweep_seconds)
            try:
                self.sweep()
            except Exception:
                logger.exception("The periodic sweep failed; it runs again shortly.")

    def sweep(self) -> None:
        """Queue what time alone changes: timeouts, TTLs, retries due, lost Jobs and steps."""
        from kstep_operator import runs, steps

        if not self.cache.synced.is_set():
            return
        active = 0
        for step_run in self.cache.all_steps():
            phase = (step_run.get("status") or {}).get("phase")
            if phase in ("running", "retrying", "pending", None):
                active += 1
                if steps.needs_attention(self, step_run):
                    metadata = step_run["metadata"]
                    self.enqueue_step(metadata["namespace"], metadata["name"])
        self.metrics.steps_active.set(active)
        # A safety net for runs waiting for room under the global limit.
        self.capacity_freed()
        running_runs = 0
        oldest: datetime.datetime | None = None
        for run in self.cache.all_runs():
            if runs.needs_attention(self, run):
                self.enqueue_run(run["metadata"]["namespace"], run["metadata"]["name"])
            status = run.get("status") or {}
            if status.get("phase") == "running":
                running_runs += 1
                started = parse_time(status.get("startTime"))
                if started is not None and (oldest is None or started < oldest):
                    oldest = started
        self.metrics.runs_active.set(running_runs)
        now = datetime.datetime.now(datetime.UTC)
        self.metrics.longest_running_run.set(
            0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        )

    @contextlib.contextmanager
    def room_for_steps(self, namespace: str, name: str, wanted: int) -> Iterator[int]:
        """Reserve room for up to `wanted` more active StepRuns of a run under the global limit.

        Yields how many may start; the room stays taken until the block ends, by when the
        StepRuns started in it are in the cache, where `active_steps` counts them. A run
        given less than it wanted is queued again when room may have come free.
        """
        with self._lock:
            free = self.settings.max_active_steps - self.active_steps() - self._reserved
            granted = max(0, min(wanted, free))
            self._reserved += granted
            # Noted under the same lock as the count, so that no step can end unnoticed in
            # between (its end is in the cache before it calls `capacity_freed`).
            if granted < wanted:
                self._waiting_runs.add((namespace, name))
        try:
            yield granted
        finally:
            with self._lock:
                self._reserved -= granted
            if granted:
                # Room reserved but not used may be what another run was refused.
                self.capacity_freed()

    def active_steps(self) -> int:
        """StepRuns not yet ended, across all runs (for the global limit)."""
        return sum(
            1
            for step_run in self.cache.all_steps()
            if (step_run.get("status") or {}).get("phase")
            in ("running", "retrying", "pending", None)
        )


def describe(body: dict[str, Any]) -> str:
    """`namespace/name` of an object, for log lines."""
    metadata = body.get("metadata", {})
    return f"{metadata.get('namespace')}/{metadata.get('name')}"
