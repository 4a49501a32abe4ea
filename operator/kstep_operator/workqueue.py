"""A work queue of object keys, processed by a pool of threads.

A key waiting in the queue is never queued twice, and a key is never processed by two threads
at once: a key queued again while it is being processed is processed once more afterwards.
Keys can also be queued for later (retries, timeouts). Bursts of events for one object
therefore collapse into few reconciles.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable

logger = logging.getLogger(__name__)


class WorkQueue:
    """Deduplicating, delaying queue of keys with a worker pool."""

    def __init__(
        self,
        process: Callable[[Hashable], None],
        *,
        workers: int,
        name: str = "kstep-worker",
        on_error: Callable[[Hashable, BaseException], None] | None = None,
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._mutex = threading.Lock()
        # Workers wait on one condition, the timer on another, so a notify reaches the
        # thread it is meant for.
        self._lock = threading.Condition(self._mutex)
        self._timer_wake = threading.Condition(self._mutex)
        self._queue: list[Hashable] = []
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._delayed: list[tuple[float, int, Hashable]] = []
        # Keys queued for later by `add_coalesced` that are not due yet.
        self._coalescing: set[Hashable] = set()
        self._sequence = 0
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._timer = threading.Thread(
            target=self._release_delayed, name=f"{name}-timer", daemon=True
        )

    def start(self) -> None:
        """Start the worker threads."""
        for thread in self._threads:
            thread.start()
        self._timer.start()

    def stop(self) -> None:
        """Stop handing out keys; threads finish what they process."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
            self._timer_wake.notify_all()

    def add(self, key: Hashable) -> None:
        """Queue `key` now."""
        with self._lock:
            if key in self._processing:
                self._again.add(key)
                return
            if key in self._queued:
                return
            self._queued.add(key)
            self._queue.append(key)
            self._lock.notify()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Queue `key` once `seconds` have passed."""
        if seconds <= 0:
            self.add(key)
            return
        with self._lock:
            self._delay(key, seconds)

    def add_coalesced(self, key: Hashable, seconds: float) -> None:
        """Queue `key` once `seconds` have passed, unless it already waits for that.

        For events whose only effect can wait: however many arrive meanwhile, the key is
        processed once per `seconds`.
        """
        with self._lock:
            if key in self._coalescing or key in self._queued:
                return
            self._coalescing.add(key)
            self._delay(key, seconds)

    def _delay(self, key: Hashable, seconds: float) -> None:
        # Called with the lock held.
        self._sequence += 1
        heapq.heappush(self._delayed, (time.monotonic() + seconds, self._sequence, key))
        self._timer_wake.notify()

    def alive(self) -> bool:
        """Whether every worker thread and the timer run (they only end when stopped)."""
        return all(t.is_alive() for t in self._threads) and self._timer.is_alive()

    def depth(self) -> int:
        """Keys waiting to be processed (not counting delayed ones)."""
        with self._lock:
            return len(self._queue)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopped:
                    self._lock.wait()
                if self._stopped:
                    return
                key = self._queue.pop(0)
                self._queued.discard(key)
                self._processing.add(key)
            try:
                self._process(key)
            except BaseException as error:
                if self._on_error is not None:
                    self._on_error(key, error)
                else:
                    logger.exception("Processing %s failed.", key)
            finally:
                with self._lock:
                    self._processing.discard(key)
                    again = key in self._again
                    self._again.discard(key)
            if again:
                self.add(key)

    def _release_delayed(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._delayed and self._delayed[0][0] <= now:
                    due.append(heapq.heappop(self._delayed)[2])
                self._coalescing.difference_update(due)
                wait = self._delayed[0][0] - now if self._delayed else 1.0
            for key in due:
                self.add(key)
            with self._lock:
                if not self._stopped:
                    self._timer_wake.wait(timeout=min(max(wait, 0.001), 1.0))
