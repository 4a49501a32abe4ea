"""What a failed step does to the pipeline's function and to the run, per execution mode."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import pytest

from dynamic.steps import (
    SIDE_CHANNEL_ENV,
    SideChannel,
    StepBoom,
    count,
    fail,
    isolated_fail,
    isolated_sleep,
    square,
    timed,
    wait_for_start,
)
from kstep import RunFailed, UpstreamFailed, pipeline
from kstep.client import Client


def statuses(run: Any) -> dict[str, str]:
    return {invocation: str(step_run.status) for invocation, step_run in run.steps.items()}


def test_failed_sync_call_raises_the_step_exception_type_in_the_function() -> None:
    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def handled() -> None:
        try:
            fail("bad input")
        except StepBoom as error:
            caught.append(error)
        square(2)

    run = handled()

    assert type(caught[0]) is StepBoom
    assert str(caught[0]) == "bad input"
    assert run.status == "completed"
    assert statuses(run) == {"fail": "failed", "square": "completed"}
    assert run.steps["fail"].error_type == "dynamic.steps.StepBoom"


def test_failed_future_raises_the_step_exception_from_result_and_load() -> None:
    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def handled() -> None:
        future = fail.submit("from a future")
        future.wait()
        for method in (future.result, future.load):
            try:
                method()
            except StepBoom as error:
                caught.append(error)

    run = handled()

    assert [str(error) for error in caught] == ["from a future", "from a future"]
    assert run.status == "completed"
    assert statuses(run) == {"fail": "failed"}


def test_failed_isolated_step_raises_its_own_exception_type() -> None:
    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def handled() -> None:
        try:
            isolated_fail("in another process")
        except StepBoom as error:
            caught.append(error)

    run = handled()

    assert type(caught[0]) is StepBoom
    assert str(caught[0]) == "in another process"
    assert run.status == "completed"
    assert statuses(run) == {"isolated_fail": "failed"}


def test_upstream_failure_skips_the_consumer_and_is_handled_through_it() -> None:
    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def handled() -> None:
        consumer = square.submit(fail.submit("upstream"))
        try:
            consumer.result()
        except UpstreamFailed as error:
            caught.append(error)

    run = handled()

    assert str(caught[0]) == (
        "step 'square' was skipped because its upstream step 'fail' did not complete"
    )
    assert isinstance(caught[0].__cause__, StepBoom)
    assert run.status == "completed"
    assert statuses(run) == {"fail": "failed", "square": "skipped"}


def test_unhandled_failure_fails_the_run_with_the_failing_step() -> None:
    @pipeline(dynamic=True)
    def unhandled() -> None:
        count(1)
        fail("nobody catches this")

    with pytest.raises(RunFailed) as raised:
        unhandled()

    run = raised.value.run
    assert run.status == "failed"
    assert run.failed_step == "fail"
    assert run.message == "step 'fail' failed: StepBoom: nobody catches this"
    assert statuses(run) == {"count": "completed", "fail": "failed"}


def test_unhandled_upstream_failure_names_the_step_that_failed() -> None:
    @pipeline(dynamic=True)
    def unhandled() -> None:
        square(fail.submit("root cause"))

    with pytest.raises(RunFailed) as raised:
        unhandled()

    run = raised.value.run
    assert run.failed_step == "fail"
    assert run.message == "step 'fail' failed: StepBoom: root cause"
    assert statuses(run) == {"fail": "failed", "square": "skipped"}


def test_exception_of_the_function_itself_fails_the_run() -> None:
    @pipeline(dynamic=True)
    def broken() -> None:
        count(1)
        raise KeyError("no such thing")

    with pytest.raises(RunFailed) as raised:
        broken()

    run = raised.value.run
    assert run.status == "failed"
    assert run.failed_step is None
    assert run.message == "KeyError: 'no such thing'"


def test_keyboard_interrupt_cancels_the_run_and_reaches_the_caller(
    client: Client, side_channel: SideChannel
) -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def interrupted() -> None:
        count(1)
        isolated_sleep.submit(60.0)
        wait_for_start(os.environ[SIDE_CHANNEL_ENV], "isolated_sleep")
        raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        interrupted()

    (run,) = client.list_runs(pipeline="interrupted")
    assert (run.status, run.message) == ("cancelled", "KeyboardInterrupt")
    # Stopping everything includes the step process, as with fail_fast.
    assert statuses(run) == {"count": "completed", "isolated_sleep": "cancelled"}
    assert time.perf_counter() - started < 30


def test_unhandled_failure_skips_pending_steps_and_lets_running_steps_finish(
    side_channel: SideChannel,
) -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def stopping() -> None:
        slow = timed.submit(1, 1.0, id="slow")
        square.submit(slow, id="waits_for_slow")
        wait_for_start(os.environ[SIDE_CHANNEL_ENV], "slow")
        fail("stop")

    with pytest.raises(RunFailed) as raised:
        stopping()

    run = raised.value.run
    assert run.status == "failed"
    assert statuses(run) == {"slow": "completed", "waits_for_slow": "skipped", "fail": "failed"}
    assert run.steps["waits_for_slow"].error_message == (
        "step 'waits_for_slow' was not started because the run is stopping after an unhandled "
        "failure"
    )
    executions = side_channel.by_invocation()
    assert "waits_for_slow" not in executions
    assert executions["slow"][0].finished is not None


def test_unhandled_failure_starts_no_step_still_queued_for_a_worker(
    monkeypatch: pytest.MonkeyPatch, side_channel: SideChannel
) -> None:
    monkeypatch.setenv("KSTEP_INLINE_WORKERS", "2")

    @pipeline(dynamic=True, enable_cache=False)
    def stopping() -> None:
        for index in range(2):
            timed.submit(index, 1.0, id=f"busy_{index}")
        # Both workers are busy: these wait in the engine's queue, not yet started.
        for index in range(3):
            timed.submit(index, 0.0, id=f"queued_{index}")
        wait_for_start(os.environ[SIDE_CHANNEL_ENV], "busy_1")
        raise RuntimeError("stop now")

    with pytest.raises(RunFailed) as raised:
        stopping()

    run = raised.value.run
    assert statuses(run) == {
        "busy_0": "completed",
        "busy_1": "completed",
        "queued_0": "skipped",
        "queued_1": "skipped",
        "queued_2": "skipped",
    }
    assert sorted(side_channel.counts()) == ["busy_0", "busy_1"]


def test_handled_failure_stops_nothing(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def carrying_on() -> None:
        slow = timed.submit(1, 0.5)
        with contextlib.suppress(StepBoom):
            fail("handled")
        square.submit(slow)
        square(3)

    run = carrying_on()

    assert run.status == "completed"
    assert statuses(run) == {
        "timed": "completed",
        "fail": "failed",
        "square": "completed",
        "square_2": "completed",
    }


def test_never_awaited_failure_fails_the_run() -> None:
    @pipeline(dynamic=True)
    def forgetful() -> None:
        fail.submit("nobody looked")
        square(2)

    with pytest.raises(RunFailed) as raised:
        forgetful()

    run = raised.value.run
    assert run.status == "failed"
    assert run.failed_step == "fail"
    assert run.message == "step 'fail' failed: StepBoom: nobody looked"
    assert statuses(run) == {"fail": "failed", "square": "completed"}


def test_never_awaited_failure_of_an_upstream_step_fails_the_run() -> None:
    @pipeline(dynamic=True)
    def forgetful() -> None:
        square.submit(fail.submit("nobody looked"))

    with pytest.raises(RunFailed) as raised:
        forgetful()

    run = raised.value.run
    assert run.failed_step == "fail"
    assert statuses(run) == {"fail": "failed", "square": "skipped"}


def test_fail_fast_terminates_a_running_isolated_step(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True, enable_cache=False, execution_mode="fail_fast")
    def fast() -> None:
        isolated_sleep.submit(60.0)
        wait_for_start(os.environ[SIDE_CHANNEL_ENV], "isolated_sleep")
        fail("stop everything")

    started = time.perf_counter()
    with pytest.raises(RunFailed) as raised:
        fast()
    elapsed = time.perf_counter() - started

    run = raised.value.run
    assert elapsed < 30
    assert statuses(run) == {"isolated_sleep": "cancelled", "fail": "failed"}
    (execution,) = side_channel.by_invocation()["isolated_sleep"]
    assert execution.finished is None
    with pytest.raises(ProcessLookupError):
        os.kill(execution.pid, 0)


def test_stop_on_failure_lets_a_running_isolated_step_finish(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def patient() -> None:
        isolated_sleep.submit(0.2)
        wait_for_start(os.environ[SIDE_CHANNEL_ENV], "isolated_sleep")
        fail("stop")

    with pytest.raises(RunFailed) as raised:
        patient()

    run = raised.value.run
    assert statuses(run) == {"isolated_sleep": "completed", "fail": "failed"}
    assert side_channel.by_invocation()["isolated_sleep"][0].finished is not None


def test_continue_on_failure_runs_every_submitted_invocation(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True, enable_cache=False, execution_mode="continue_on_failure")
    def relentless() -> None:
        slow = timed.submit(2, 0.5)
        square.submit(slow)
        fail("keep going")

    with pytest.raises(RunFailed) as raised:
        relentless()

    run = raised.value.run
    assert run.status == "failed"
    assert run.failed_step == "fail"
    assert statuses(run) == {"timed": "completed", "square": "completed", "fail": "failed"}
    assert run.steps["square"].outputs["output"].load() == 4


def test_failed_run_is_visible_to_the_client_with_every_step(client: Client) -> None:
    @pipeline(dynamic=True)
    def unhandled() -> None:
        fail("recorded")

    with pytest.raises(RunFailed):
        unhandled()

    (run,) = client.list_runs(pipeline="unhandled")
    assert run.status == "failed"
    assert run.mode == "dynamic"
    assert run.steps["fail"].error_message == "recorded"
