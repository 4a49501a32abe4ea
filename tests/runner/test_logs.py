"""Capturing what steps print and log, per step run, while they run."""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine import steps_isolated
from kstep import pipeline, step

logger = logging.getLogger(__name__)


@step(enable_cache=False)
def chatty(tag: str) -> int:
    print(f"{tag}: stdout")
    print(f"{tag}: stderr", file=sys.stderr)
    logger.info("%s: info record", tag)
    logger.warning("%s: warning record", tag)
    return 1


def test_logs_capture_stdout_stderr_and_logging_of_an_inline_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Like an application that configured logging at INFO (pytest leaves the root at WARNING).
    caplog.set_level(logging.INFO)

    @pipeline
    def talking() -> None:
        chatty("alpha")

    run = talking()

    lines = run.steps["chatty"].logs().splitlines()
    assert lines[0] == "alpha: stdout"
    assert lines[1] == "alpha: stderr"
    assert lines[2].endswith(f" INFO {__name__}: alpha: info record")
    assert lines[3].endswith(f" WARNING {__name__}: alpha: warning record")
    assert len(lines) == 4


def test_logs_keep_the_level_a_configured_process_chose() -> None:
    # pytest has configured logging with the root logger at WARNING: INFO records are dropped.
    @pipeline
    def talking() -> None:
        chatty("beta")

    logs = talking().steps["chatty"].logs()

    assert "beta: warning record" in logs
    assert "beta: info record" not in logs


def test_logs_capture_each_run_of_a_step_again() -> None:
    @pipeline
    def talking(tag: str) -> None:
        chatty(tag)

    first = talking("first")
    second = talking("second")

    assert first.steps["chatty"].logs().startswith("first: stdout\n")
    assert second.steps["chatty"].logs().startswith("second: stdout\n")


def test_logs_capture_output_of_threads_the_step_starts() -> None:
    @step(enable_cache=False)
    def threaded() -> int:
        thread = threading.Thread(target=print, args=("from a thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda i: logger.warning("from pool task %d", i), range(2)))
        return 1

    @pipeline
    def threads() -> None:
        threaded()

    logs = threads().steps["threaded"].logs()

    assert "from a thread\n" in logs
    assert "from pool task 0" in logs
    assert "from pool task 1" in logs


def test_logs_of_concurrent_inline_steps_never_mix() -> None:
    barrier = threading.Barrier(3, timeout=10)

    @step(enable_cache=False)
    def interleaved(tag: str) -> int:
        barrier.wait()
        for index in range(200):
            print(f"{tag} line {index}")
            if index % 20 == 0:
                logger.warning("%s record %d", tag, index)
                time.sleep(0.001)
        return 1

    @pipeline
    def crowd() -> None:
        for tag in ("red", "green", "blue"):
            interleaved(tag, id=tag)

    run = crowd()

    for tag in ("red", "green", "blue"):
        lines = run.steps[tag].logs().splitlines()
        assert len(lines) == 210
        assert all(f"{tag} " in line for line in lines)
        prints = [line for line in lines if " line " in line]
        assert prints == [f"{tag} line {index}" for index in range(200)]


def test_logs_leave_output_outside_steps_alone(capsys) -> None:  # type: ignore[no-untyped-def]
    @pipeline
    def talking() -> None:
        chatty("inside")

    run = talking()
    print("outside any step")

    assert "outside any step" not in run.steps["chatty"].logs()
    assert "outside any step" in capsys.readouterr().out


def test_logs_of_an_isolated_step_are_stored_with_its_step_run() -> None:
    @pipeline
    def isolated_talk() -> None:
        steps_isolated.describe_context(1)

    logs = isolated_talk().steps["describe_context"].logs()

    assert "to stdout\n" in logs
    assert "to stderr\n" in logs
    # A step process has no logging configuration of its own: INFO records are kept.
    assert "INFO engine.steps_isolated: through logging" in logs
    assert "from a thread\n" in logs


def test_logs_of_a_cache_hit_are_those_of_the_original_step_run() -> None:
    @step
    def cached_talk() -> int:
        print("computed once")
        return 1

    @pipeline
    def twice() -> None:
        cached_talk()

    first = twice()
    second = twice()

    assert second.steps["cached_talk"].status == "cached"
    assert second.steps["cached_talk"].logs() == first.steps["cached_talk"].logs()
    assert second.steps["cached_talk"].logs() == "computed once\n"
