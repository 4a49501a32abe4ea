"""Replay: reusing what a run already completed when its pipeline function runs again.

An invocation is reused when a completed (or cached) step run of the same run matches it by
invocation id and inputs (an input fingerprint: a hash of its parameters and input artifact
versions), and ran the same step. Failing that, a completed step run of the same step with
the same inputs that no other call claimed is reused, so a function that now calls steps in a
different order still never executes completed work twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from kstep.stores.metadata import StepRunRecord

_REUSABLE = ("completed", "cached")


class ReplayIndex:
    """The finished work of a run, claimable once per step run."""

    def __init__(self, step_runs: list[StepRunRecord]) -> None:
        self._lock = threading.Lock()
        self._by_invocation: dict[tuple[str, str | None], StepRunRecord] = {}
        self._by_step: dict[tuple[str, str | None], list[StepRunRecord]] = defaultdict(list)
        self._claimed: set[str] = set()
        self.last_attempt: dict[str, int] = {}
        for record in step_runs:
            self.last_attempt[record.invocation_id] = max(
                record.attempt, self.last_attempt.get(record.invocation_id, 0)
            )
            if record.status in _REUSABLE:
                self._by_invocation[(record.invocation_id, record.input_fingerprint)] = record
                self._by_step[(record.step_name, record.input_fingerprint)].append(record)

    def claim(self, invocation_id: str, step_name: str, fingerprint: str) -> StepRunRecord | None:
        """A finished step run to reuse for this call, or None to execute it."""
        with self._lock:
            # The step must match too: the function may now call another step under an id
            # that a completed step run holds, with inputs that hash the same.
            record = self._by_invocation.get((invocation_id, fingerprint))
            if (
                record is not None
                and record.step_name == step_name
                and record.id not in self._claimed
            ):
                self._claimed.add(record.id)
                return record
            for candidate in self._by_step.get((step_name, fingerprint), []):
                if candidate.id not in self._claimed:
                    self._claimed.add(candidate.id)
                    return candidate
        return None
