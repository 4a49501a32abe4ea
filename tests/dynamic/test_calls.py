"""Synchronous calls, submitted calls and their futures, runtimes and per-call options."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import kstep.runner
from dynamic.steps import (
    SideChannel,
    bounds,
    count,
    isolated_increment,
    isolated_sleep,
    nothing,
    square,
    timed,
    total,
    whereabouts,
)
from kstep import OutputArtifact, Retry, StepFuture, pipeline, step
from kstep.client import Client, Run


def max_overlap(step_runs: list[Any]) -> int:
    """The largest number of step bodies that ran at the same moment (from their metadata)."""
    events = []
    for step_run in step_runs:
        events.append((step_run.metadata["started"], 1))
        events.append((step_run.metadata["finished"], -1))
    running = peak = 0
    # Ends sort before starts at the same instant: touching intervals do not overlap.
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):
        running += change
        peak = max(peak, running)
    return peak


def test_sync_call_loops_over_a_loaded_count(side_channel: SideChannel) -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def loop(n: int) -> None:
        how_many = count(n)
        seen["count"] = how_many
        squares = [square(i) for i in range(how_many.load())]
        seen["total"] = total(squares).load()

    run = loop(4)

    assert run.status == "completed"
    assert isinstance(seen["count"], OutputArtifact)
    assert seen["total"] == 0 + 1 + 4 + 9
    assert list(run.steps) == ["count", "square", "square_2", "square_3", "square_4", "total"]
    assert side_channel.counts() == {
        "square": 1,
        "square_2": 1,
        "square_3": 1,
        "square_4": 1,
        "total": 1,
    }


def test_sync_call_returns_a_tuple_for_several_outputs_and_none_for_none() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def shapes() -> None:
        seen["several"] = bounds(5)
        seen["none"] = nothing()

    shapes()

    low, high = seen["several"]
    assert (low.output, low.load()) == ("low", 4)
    assert (high.output, high.load()) == ("high", 6)
    assert seen["none"] is None


def test_sync_call_passes_an_output_on_without_loading_it() -> None:
    @pipeline(dynamic=True)
    def chain() -> None:
        square(count(3))

    run = chain()

    consumed = run.steps["square"].inputs["x"]
    assert consumed == run.steps["count"].outputs["output"]
    assert run.steps["square"].outputs["output"].load() == 9


def test_submit_runs_fifty_calls_that_overlap_in_time(client: Client) -> None:
    timings: dict[str, float] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def fan_out() -> None:
        started = time.perf_counter()
        futures = [timed.submit(i, 0.3) for i in range(50)]
        timings["submit"] = time.perf_counter() - started
        assert all(isinstance(future, StepFuture) for future in futures)
        timings["total"] = total(futures).load()
        timings["elapsed"] = time.perf_counter() - started

    run = fan_out()

    step_runs = [s for s in run.steps.values() if s.step_name == "timed"]
    assert len(step_runs) == 50
    assert timings["total"] == sum(range(50))
    # 50 bodies of 0.3 s on 16 inline workers: at least half the pool busy at once.
    assert max_overlap(step_runs) >= 8
    assert timings["elapsed"] < 50 * 0.3 / 4
    # Submitting returns at once: far less than even one body's 0.3 s per call.
    assert timings["submit"] < 50 * 0.3 / 4


def test_submit_runs_eight_half_second_inline_steps_concurrently() -> None:
    timings: dict[str, float] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def eight() -> None:
        started = time.perf_counter()
        futures = [timed.submit(i, 0.5) for i in range(8)]
        for future in futures:
            future.wait()
        timings["steps"] = time.perf_counter() - started

    started = time.perf_counter()
    eight()
    timings["run"] = time.perf_counter() - started

    print(f"8 x 0.5 s inline steps: {timings['steps']:.2f} s, whole run {timings['run']:.2f} s")
    assert timings["steps"] < 2.5
    assert timings["run"] < 4.0


def test_inline_steps_run_on_as_many_threads_as_the_setting_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KSTEP_INLINE_WORKERS", "2")

    @pipeline(dynamic=True, enable_cache=False)
    def limited() -> None:
        futures = [timed.submit(i, 0.3) for i in range(4)]
        threads = [whereabouts.submit(i) for i in range(4)]
        total(futures)
        for future in threads:
            future.result()

    run = limited()

    timed_runs = [s for s in run.steps.values() if s.step_name == "timed"]
    assert max_overlap(timed_runs) == 2
    threads = {
        s.outputs["output"].load()["thread"]
        for s in run.steps.values()
        if s.step_name == "whereabouts"
    }
    assert len(threads) <= 2
    assert all(name.startswith("kstep-inline") for name in threads)


def test_calls_waiting_for_an_inline_thread_show_as_pending_and_then_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KSTEP_INLINE_WORKERS", "1")
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def queued() -> None:
        busy = timed.submit(0, 1.5)
        waiting = [square.submit(i) for i in range(3)]
        client = Client()
        run_id = client.list_runs(pipeline="queued", limit=1)[0].id
        deadline = time.monotonic() + 1.0
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            rows = client.stores.metadata.step_runs_of(run_id)
            statuses = {row.invocation_id: row.status for row in rows}
            if len(statuses) == 4:
                break
            time.sleep(0.02)
        client.stores.metadata.close()
        seen["statuses"] = statuses
        seen["busy_done"] = busy.done()
        seen["squares"] = [future.load() for future in waiting]

    run = queued()

    # Seen while the only thread was still busy: the queued calls had rows, as pending.
    assert seen["busy_done"] is False
    assert seen["statuses"] == {
        "timed": "running",
        "square": "pending",
        "square_2": "pending",
        "square_3": "pending",
    }
    assert seen["squares"] == [0, 1, 4]
    assert {key: str(s.status) for key, s in run.steps.items()} == {
        "timed": "completed",
        "square": "completed",
        "square_2": "completed",
        "square_3": "completed",
    }
    assert all(s.attempt == 1 and s.started_at is not None for s in run.steps.values())


def test_future_waits_and_gives_output_artifacts_and_values() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def futures() -> None:
        slow = timed.submit(7, 0.3)
        seen["done_at_once"] = slow.done()
        seen["wait"] = slow.wait()
        seen["done_after_wait"] = slow.done()
        seen["result"] = slow.result()
        seen["load"] = slow.load()
        pair = bounds.submit(10)
        seen["len"] = len(pair)
        low, high = pair
        seen["unpacked"] = (low.load(), high.load())
        seen["by_name"] = pair["high"].load()
        seen["by_index"] = pair[-2].result()
        seen["pair_result"] = pair.result()
        seen["pair_load"] = pair.load()
        seen["none"] = nothing.submit().result()

    futures()

    assert seen["done_at_once"] is False
    assert seen["wait"] is True
    assert seen["done_after_wait"] is True
    assert isinstance(seen["result"], OutputArtifact)
    assert seen["result"].invocation_id == "timed"
    assert seen["load"] == 7
    assert seen["len"] == 2
    assert seen["unpacked"] == (9, 11)
    assert seen["by_name"] == 11
    assert seen["by_index"].output == "low"
    assert [artifact.output for artifact in seen["pair_result"]] == ["low", "high"]
    assert seen["pair_load"] == (9, 11)
    assert seen["none"] is None


def test_future_indexing_names_the_outputs_when_out_of_range() -> None:
    errors: dict[str, BaseException] = {}

    @pipeline(dynamic=True)
    def indexing() -> None:
        pair = bounds.submit(1)
        for key in (2, "middle"):
            try:
                pair[key]
            except LookupError as error:
                errors[str(key)] = error

    indexing()

    assert str(errors["2"]) == "step invocation 'bounds' has 2 outputs; index 2 is out of range"
    assert errors["middle"].args[0] == (
        "step invocation 'bounds' has no output 'middle'; its outputs are ['low', 'high']"
    )


def test_futures_and_lists_of_futures_pass_to_steps_that_wait_for_them() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def passing() -> None:
        slow = timed.submit(3, 0.3)
        squared = square.submit(slow)
        seen["squared"] = squared.load()
        pair = bounds.submit(4)
        seen["sum"] = total([pair["low"], pair["high"], squared]).load()

    run = passing()

    assert seen["squared"] == 9
    assert seen["sum"] == 3 + 5 + 9
    assert run.steps["square"].upstream == ["timed"]
    assert run.steps["total"].upstream == ["bounds", "square"]


def test_runtime_runs_inline_and_isolated_steps_in_one_run() -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def mixed() -> None:
        whereabouts(1)
        # Outputs cross the process boundary both ways.
        square(isolated_increment(count(4)))

    run = mixed()

    here = run.steps["whereabouts"].outputs["output"].load()
    there = run.steps["isolated_increment"].metadata
    assert run.steps["whereabouts"].runtime == "inline"
    assert here["pid"] == os.getpid()
    assert here["thread"].startswith("kstep-inline")
    assert run.steps["isolated_increment"].runtime == "isolated"
    assert there["pid"] != os.getpid()
    # The step-runner's entry point, as in a Job's pod: python -m kstep.runner --request FILE.
    assert there["argv"][0] == str(Path(kstep.runner.__file__).with_name("__main__.py"))
    assert there["argv"][1] == "--request"
    assert run.steps["square"].runtime == "inline"
    assert run.steps["square"].outputs["output"].load() == 25


def test_with_options_configures_one_call() -> None:
    attempts: list[int] = []

    @step
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return len(attempts)

    @pipeline(dynamic=True)
    def options() -> None:
        whereabouts.with_options(runtime="isolated")(1)
        whereabouts(2)
        whereabouts.with_options(name="renamed")(3)
        flaky.with_options(retry=Retry(max_retries=2))()
        square(5)
        square.with_options(enable_cache=False)(5)

    run = options()

    assert run.steps["whereabouts"].runtime == "isolated"
    assert run.steps["whereabouts"].outputs["output"].load()["pid"] != os.getpid()
    assert run.steps["whereabouts_2"].runtime == "inline"
    assert run.steps["renamed"].step_name == "renamed"
    assert [a.status for a in run.steps["flaky"].attempts] == ["retrying", "retrying", "completed"]
    # The second square(5) matches the first one's cache key but was told not to use it.
    assert run.steps["square_2"].status == "completed"
    assert run.steps["square_2"].original_step_run_id is None
    assert flaky.config.retry == Retry()
    assert whereabouts.config.runtime is None


def test_branching_on_a_loaded_value_runs_only_the_taken_branch() -> None:
    @step
    def positive(x: int) -> str:
        return f"{x} is positive"

    @step
    def negative(x: int) -> str:
        return f"{x} is not positive"

    @pipeline(dynamic=True)
    def branch(x: int) -> None:
        value = count(x)
        if value.load() > 0:
            positive(value)
        else:
            negative(value)

    run: Run = branch(3)
    other: Run = branch(-3)

    assert list(run.steps) == ["count", "positive"]
    assert run.steps["positive"].outputs["output"].load() == "3 is positive"
    assert list(other.steps) == ["count", "negative"]
    assert all(s.step_name != "positive" for s in other.steps.values())


def test_sync_call_blocks_until_the_step_finished() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def blocking() -> None:
        started = time.perf_counter()
        timed(1, 0.4)
        seen["elapsed"] = time.perf_counter() - started
        seen["thread"] = threading.current_thread().name

    blocking()

    assert seen["elapsed"] >= 0.4
    # The pipeline's function runs in the caller's thread.
    assert seen["thread"] == threading.current_thread().name


def test_submit_returns_at_once_when_every_isolated_slot_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KSTEP_ISOLATED_WORKERS", "1")
    timings: dict[str, float] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def queued() -> None:
        started = time.perf_counter()
        futures = [isolated_sleep.submit(0.1) for _ in range(2)]
        timings["submit"] = time.perf_counter() - started
        timings["pids"] = len({future.load() for future in futures})

    queued()

    # Starting a step process alone takes longer than this.
    assert timings["submit"] < 0.3
    assert timings["pids"] == 2
