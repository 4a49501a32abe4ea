"""What the operator knows of its objects: the latest version seen of each, by key.

The watches fill it (through kopf's event handlers), and so do the answers to the operator's
own writes, so a reconcile that follows a write sees it without waiting for the watch. An
older version never replaces a newer one, and the watch's echo of a write the operator made
itself is recognised as nothing new.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from kstep.cluster.names import LABEL_RUN, LABEL_STEP_RUN

Key = tuple[str, str]


def _version(body: dict[str, Any]) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


class ObjectCache:
    """PipelineRuns, StepRuns and step Jobs by namespace and name, with indexes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[Key, dict[str, Any]] = {}
        self.steps: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self._steps_by_run: dict[Key, set[str]] = defaultdict(set)
        self.synced = threading.Event()

    def _store(self, table: dict[Key, dict[str, Any]], body: dict[str, Any]) -> bool:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        known = table.get(key)
        if known is not None and known["metadata"].get("uid") == metadata.get("uid"):
            if _version(known) >= _version(body):
                return False
        elif known is not None:
            # A new object under an old name: forget the old one's index entries.
            self._forget(table, key)
        table[key] = body
        return True

    def _forget(self, table: dict[Key, dict[str, Any]], key: Key) -> None:
        body = table.pop(key, None)
        if body is not None and table is self.steps:
            run = body.get("spec", {}).get("pipelineRun")
            self._steps_by_run[(key[0], run)].discard(key[1])

    def put_run(self, body: dict[str, Any]) -> bool:
        """Record a PipelineRun version; False if the cache had it (or a newer one) already."""
        with self._lock:
            return self._store(self.runs, body)

    def put_step(self, body: dict[str, Any]) -> bool:
        """Record a StepRun version; False if the cache had it (or a newer one) already."""
        with self._lock:
            if not self._store(self.steps, body):
                return False
            metadata = body["metadata"]
            run = body.get("spec", {}).get("pipelineRun") or metadata.get("labels", {}).get(
                LABEL_RUN
            )
            self._steps_by_run[(metadata["namespace"], run)].add(metadata["name"])
            return True

    def put_job(self, body: dict[str, Any]) -> bool:
        """Record a Job version; False if the cache had it (or a newer one) already."""
        with self._lock:
            return self._store(self.jobs, body)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Forget an object the watch reported deleted."""
        table = {"run": self.runs, "step": self.steps, "job": self.jobs}[kind]
        with self._lock:
            self._forget(table, (namespace, name))

    def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A PipelineRun."""
        with self._lock:
            return self.runs.get((namespace, name))

    def step(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A StepRun."""
        with self._lock:
            return self.steps.get((namespace, name))

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job."""
        with self._lock:
            return self.jobs.get((namespace, name))

    def steps_of(self, namespace: str, run_name: str) -> list[dict[str, Any]]:
        """The StepRuns of a PipelineRun."""
        with self._lock:
            names = list(self._steps_by_run.get((namespace, run_name), ()))
            return [self.steps[(namespace, n)] for n in names if (namespace, n) in self.steps]

    def step_of_job(self, job: dict[str, Any]) -> Key | None:
        """The StepRun a step Job belongs to."""
        labels = job.get("metadata", {}).get("labels", {})
        name = labels.get(LABEL_STEP_RUN)
        return None if name is None else (job["metadata"]["namespace"], name)

    def all_runs(self) -> list[dict[str, Any]]:
        """Every PipelineRun known."""
        with self._lock:
            return list(self.runs.values())

    def all_steps(self) -> list[dict[str, Any]]:
        """Every StepRun known."""
        with self._lock:
            return list(self.steps.values())
