"""The operator's work queue: deduplication, delays and coalesced keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator

import pytest

from kstep_operator.workqueue import WorkQueue


class Recorder:
    """Processes keys by noting when each was processed."""

    def __init__(self) -> None:
        self.seen: list[tuple[Hashable, float]] = []
        self.lock = threading.Lock()

    def __call__(self, key: Hashable) -> None:
        with self.lock:
            self.seen.append((key, time.monotonic()))

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


def test_a_burst_of_coalesced_adds_processes_the_key_once_after_the_delay(
    recorded: tuple[WorkQueue, Recorder],
) -> None:
    queue, recorder = recorded
    started = time.monotonic()

    for _ in range(200):
        queue.add_coalesced("run-a", 0.2)
    queue.add_coalesced("run-b", 0.2)
    wait_for(lambda: len(recorder.keys()) >= 2)
    time.sleep(0.4)

    assert sorted(recorder.keys()) == ["run-a", "run-b"]
    first_at = min(at for _, at in recorder.seen)
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


def test_a_coalesced_add_of_a_key_already_queued_adds_nothing() -> None:
    release = threading.Event()
    blocked = WorkQueue(lambda key: release.wait(5), workers=1, name="test-blocked")
    blocked.start()
    try:
        blocked.add("busy")
        wait_for(lambda: blocked.depth() == 0)
        blocked.add("run-a")
        blocked.add_coalesced("run-a", 0.05)
        time.sleep(0.2)

        assert blocked.depth() == 1
    finally:
        release.set()
        blocked.stop()
