"""The operator's work queue: deduplication, delays and coalesced keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator

import pytest

from kstep_operator.workqueue import WorkQueue


class Recorder:
    """Processes keys by noting when each was processed, taking a while for each.

    A key queued again while it is being processed is processed once more afterwards, so
    adds that were not coalesced show up as repeated keys.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[Hashable, float]] = []
        self.lock = threading.Lock()

    def __call__(self, key: Hashable) -> None:
        with self.lock:
            self.seen.append((key, time.monotonic()))
        time.sleep(0.02)

    def keys(self) -> list[Hashable]:
        with self.lock:
            return [key for key, _ in self.seen]


@pytest.fixture
def recorded() -> Iterator[tuple[WorkQueue, Recorder]]:
    recorder = Recorder()
    queue = WorkQueue(recorder, workers=2, name="test-queue")
    queue.start()
    yield queue, recorder
    queue.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_coalesced_adds_process_a_key_at_most_once_per_delay(
    recorded: tuple[WorkQueue, Recorder],
) -> None:
    queue, recorder = recorded
    started = time.monotonic()

    # An add every 10 ms for 0.3 s, with a delay of 0.2 s: at most two releases.
    while time.monotonic() - started < 0.3:
        queue.add_coalesced("run-a", 0.2)
        time.sleep(0.01)
    queue.add_coalesced("run-b", 0.2)
    time.sleep(0.6)

    assert 1 <= recorder.keys().count("run-a") <= 2
    assert recorder.keys().count("run-b") == 1
    first_at = min(at for key, at in recorder.seen if key == "run-a")
    assert first_at - started >= 0.2


def test_a_coalesced_key_added_again_after_processing_is_processed_again(
    recorded: tuple[WorkQueue, Recorder],
) -> None:
    queue, recorder = recorded

    queue.add_coalesced("run-a", 0.05)
    wait_for(lambda: len(recorder.keys()) == 1)
    queue.add_coalesced("run-a", 0.05)
    wait_for(lambda: len(recorder.keys()) == 2)

    assert recorder.keys() == ["run-a", "run-a"]
