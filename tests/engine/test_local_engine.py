"""The local engine running static pipelines: concurrency, failures, retries, hooks, order."""

from __future__ import annotations

import datetime
import itertools
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine import steps_isolated
from kstep import Client, Retry, RunFailed, get_step_context, pipeline, step


@step(enable_cache=False)
def produce(value: int = 1) -> int:
    return value


@step(enable_cache=False)
def boom(value: int = 0) -> int:
    raise ValueError(f"boom {value}")


@step(enable_cache=False)
def increment(value: int) -> int:
    return value + 1


@step(enable_cache=False)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_engine_returns_the_finished_run_with_its_steps() -> None:
    @pipeline
    def chain(start: int = 1) -> None:
        increment(increment(produce(start)))

    run = chain(start=5)

    assert run.status == "completed"
    assert run.pipeline_name == "chain"
    assert re.fullmatch(r"chain-\d{8}-\d{6}-[0-9a-f]{6}", run.name)
    assert list(run.steps) == ["produce", "increment", "increment_2"]
    assert {step_run.status for step_run in run.steps.values()} == {"completed"}
    assert run.steps["increment_2"].outputs["output"].load() == 7
    assert run.started_at is not None and run.finished_at is not None
    assert run.started_at.tzinfo is not None
    assert run.started_at <= run.finished_at


def test_engine_runs_independent_inline_steps_concurrently() -> None:
    barrier = threading.Barrier(3, timeout=10)

    @step(enable_cache=False)
    def meet(index: int) -> str:
        # Passes only when all three are running at the same time.
        barrier.wait()
        return threading.current_thread().name

    @pipeline
    def together() -> None:
        for index in range(3):
            meet(index)

    run = together()

    threads = {step_run.outputs["output"].load() for step_run in run.steps.values()}
    assert len(threads) == 3
    assert threading.current_thread().name not in threads


def test_engine_runs_isolated_steps_concurrently_in_their_own_processes(tmp_path: Path) -> None:
    @pipeline
    def isolated_pair(directory: str) -> None:
        steps_isolated.meet("left", "right", directory)
        steps_isolated.meet("right", "left", directory)

    run = isolated_pair(str(tmp_path))

    pids = {step_run.outputs["output"].load() for step_run in run.steps.values()}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert {step_run.runtime for step_run in run.steps.values()} == {"isolated"}


def test_engine_runs_an_isolated_step_with_artifact_inputs_context_and_metadata() -> None:
    @pipeline
    def mixed() -> None:
        context = steps_isolated.describe_context(produce(7))
        increment(produce(1, id="first"), after=context)

    run = mixed()

    step_run = run.steps["describe_context"]
    context = step_run.outputs["output"].load()
    assert context == {
        "run_id": run.id,
        "run_name": run.name,
        "step_run_id": step_run.id,
        "invocation_id": "describe_context",
        "pipeline_name": "mixed",
        "attempt": 1,
        "pid": context["pid"],
        "entry_point": context["entry_point"],
        "value": 7,
    }
    assert context["pid"] != os.getpid()
    # The step process is the step-runner's entry point, `python -m kstep.runner`.
    assert context["entry_point"].endswith(os.path.join("kstep", "runner", "__main__.py"))
    assert step_run.metadata == {"pid": context["pid"], "value": 7}
    assert step_run.inputs == {"value": run.steps["produce"].outputs["output"]}
    assert run.steps["increment"].upstream == ["first", "describe_context"]
    assert run.steps["increment"].started_at >= step_run.finished_at


def test_engine_continue_on_failure_runs_other_branches_and_skips_dependants() -> None:
    @pipeline(execution_mode="continue_on_failure")
    def branches() -> None:
        increment(boom(1), id="after_boom")
        increment(produce(1), id="after_ok")

    with pytest.raises(RunFailed) as caught:
        branches()

    run = caught.value.run
    statuses = {key: step_run.status for key, step_run in run.steps.items()}
    assert statuses == {
        "boom": "failed",
        "produce": "completed",
        "after_boom": "skipped",
        "after_ok": "completed",
    }
    assert run.status == "failed"
    assert run.failed_step == "boom"
    assert run.message == "step 'boom' failed: ValueError: boom 1"
    assert str(caught.value) == f"pipeline run {run.name!r} ended failed: {run.message}"


def test_engine_stop_on_failure_lets_running_steps_finish_and_starts_nothing_new() -> None:
    @pipeline(execution_mode="stop_on_failure")
    def stopping() -> None:
        boom()
        increment(nap(0.5), id="after_nap")

    with pytest.raises(RunFailed) as caught:
        stopping()

    statuses = {key: step_run.status for key, step_run in caught.value.run.steps.items()}
    assert statuses == {"boom": "failed", "nap": "completed", "after_nap": "skipped"}


def test_engine_fail_fast_terminates_running_isolated_steps(tmp_path: Path) -> None:
    @step(enable_cache=False)
    def fail_once_sleeping(directory: str) -> int:
        steps_isolated.wait_for_file(Path(directory) / "sleeping")
        raise RuntimeError("giving up")

    @pipeline(execution_mode="fail_fast")
    def fast(directory: str) -> None:
        increment(steps_isolated.sleep_long(60, directory), id="after_sleep")
        fail_once_sleeping(directory)

    started = time.monotonic()
    with pytest.raises(RunFailed) as caught:
        fast(str(tmp_path))

    assert time.monotonic() - started < 30
    statuses = {key: step_run.status for key, step_run in caught.value.run.steps.items()}
    assert statuses == {
        "sleep_long": "cancelled",
        "after_sleep": "skipped",
        "fail_once_sleeping": "failed",
    }
    assert caught.value.run.failed_step == "fail_once_sleeping"


def test_engine_retries_with_delay_and_backoff_recording_each_attempt() -> None:
    calls: list[float] = []

    @step(retry=Retry(max_retries=3, delay=0.1, backoff=2.0), enable_cache=False)
    def flaky() -> int:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} lost its connection")
        return len(calls)

    @pipeline
    def retrying() -> None:
        flaky()

    run = retrying()

    step_run = run.steps["flaky"]
    assert (step_run.status, step_run.attempt) == ("completed", 3)
    assert step_run.outputs["output"].load() == 3
    attempts = step_run.attempts
    assert [(a.attempt, a.status) for a in attempts] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "completed"),
    ]
    assert attempts[0].error_message == "attempt 1 lost its connection"
    assert len({a.id for a in attempts}) == 3
    waits = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert waits[0] >= 0.1
    assert waits[1] >= 0.2


def test_engine_calls_the_failure_hook_once_after_the_last_attempt() -> None:
    received: list[BaseException] = []
    succeeded: list[bool] = []

    @step(
        retry=Retry(max_retries=2),
        on_failure=received.append,
        on_success=lambda: succeeded.append(True),
        enable_cache=False,
    )
    def hopeless() -> int:
        raise KeyError("missing column")

    @pipeline
    def doomed() -> None:
        hopeless()

    with pytest.raises(RunFailed) as caught:
        doomed()

    assert len(received) == 1
    assert isinstance(received[0], KeyError)
    assert received[0].args == ("missing column",)
    assert succeeded == []
    attempts = caught.value.run.steps["hopeless"].attempts
    assert [a.status for a in attempts] == ["retrying", "retrying", "failed"]
    assert attempts[-1].error_type == "builtins.KeyError"


def test_engine_calls_the_success_hook_once() -> None:
    succeeded: list[int] = []

    @step(on_success=lambda: succeeded.append(1), enable_cache=False)
    def fine() -> int:
        return 1

    @pipeline
    def happy() -> None:
        fine()

    happy()

    assert succeeded == [1]


def test_engine_retries_an_isolated_step_in_a_new_process_and_hooks_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_file = tmp_path / "hook.txt"
    monkeypatch.setenv("TEST_HOOK_FILE", str(hook_file))

    @pipeline
    def isolated_failure() -> None:
        steps_isolated.always_fails(3)

    with pytest.raises(RunFailed) as caught:
        isolated_failure()

    attempts = caught.value.run.steps["always_fails"].attempts
    assert [(a.attempt, a.status) for a in attempts] == [(1, "retrying"), (2, "failed")]
    logs = [a.logs() for a in attempts]
    assert "attempt 1 in process" in logs[0]
    assert "attempt 2 in process" in logs[1]
    assert logs[0].split("process ")[1].split()[0] != logs[1].split("process ")[1].split()[0]
    assert hook_file.read_text() == "ValueError: cannot use 3\n"
    assert caught.value.run.message == "step 'always_fails' failed: ValueError: cannot use 3"


def test_engine_fails_an_isolated_step_whose_process_dies() -> None:
    @pipeline
    def dying() -> None:
        steps_isolated.killed()

    with pytest.raises(RunFailed) as caught:
        dying()

    step_run = caught.value.run.steps["killed"]
    assert step_run.status == "failed"
    assert step_run.error_message == (
        "step 'killed': the isolated step process was killed by signal 9 before recording a result"
    )
    assert "about to die" in step_run.logs()


def test_engine_calls_pipeline_hooks_with_the_outcome() -> None:
    failures: list[BaseException] = []
    successes: list[bool] = []

    @pipeline(on_failure=failures.append, on_success=lambda: successes.append(True))
    def hooked(fail: bool) -> None:
        boom() if fail else produce()

    hooked(False)
    with pytest.raises(RunFailed):
        hooked(True)

    assert successes == [True]
    assert [str(error) for error in failures] == ["boom 0"]


def test_engine_after_starts_a_step_only_once_the_named_ones_finished() -> None:
    @pipeline
    def ordered() -> None:
        first = nap(0.3)
        nap(0.2, id="second")
        produce(after=[first, "second"])

    run = ordered()

    steps = run.steps
    assert steps["produce"].started_at >= steps["nap"].finished_at
    assert steps["produce"].started_at >= steps["second"].finished_at
    assert steps["produce"].upstream == ["nap", "second"]


def test_engine_records_a_step_context_for_each_step_run() -> None:
    seen: list[Any] = []

    @step(enable_cache=False)
    def inspect_context() -> None:
        from kstep import get_step_context

        seen.append(get_step_context())

    @pipeline(name="context-check")
    def contextual() -> None:
        inspect_context(id="probe")

    run = contextual()

    context = seen[0]
    assert (context.run_id, context.run_name, context.pipeline_name) == (
        run.id,
        run.name,
        "context-check",
    )
    assert (context.invocation_id, context.step_name, context.attempt) == (
        "probe",
        "inspect_context",
        1,
    )
    assert context.step_run_id == run.steps["probe"].id


def test_engine_run_is_visible_to_a_new_client(client: Client) -> None:
    @pipeline
    def simple() -> None:
        produce()

    run = simple()

    fetched = client.get_run(run.name)
    assert (fetched.id, fetched.status) == (run.id, "completed")
    assert fetched.finished_at == run.finished_at
    assert fetched.finished_at - fetched.started_at < datetime.timedelta(minutes=1)


@pytest.mark.parametrize("mode", ["stop_on_failure", "fail_fast"])
def test_engine_stopping_abandons_a_retry_still_waiting_for_its_delay(mode: str) -> None:
    @step(retry=Retry(max_retries=1, delay=5.0), enable_cache=False)
    def patient() -> int:
        raise TimeoutError("service busy")

    @step(enable_cache=False)
    def late_failure() -> int:
        time.sleep(0.2)
        raise ValueError("bad data")

    @pipeline(execution_mode=mode)
    def stopping() -> None:
        patient()
        late_failure()

    started = time.monotonic()
    with pytest.raises(RunFailed) as caught:
        stopping()

    assert time.monotonic() - started < 4
    run = caught.value.run
    assert run.failed_step == "late_failure"
    attempts = run.steps["patient"].attempts
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed")]
    assert attempts[0].error_message == "service busy"


def test_engine_runs_inline_steps_while_isolated_steps_wait_for_a_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KSTEP_ISOLATED_WORKERS", "1")

    @step(enable_cache=False)
    def observe(directory: str) -> dict[str, str]:
        # Runs while the first isolated step holds the only slot.
        steps_isolated.wait_for_file(Path(directory) / "sleeping")
        client = Client()
        steps = client.get_run(get_step_context().run_id).steps
        statuses = {key: str(steps[key].status) for key in ("sleep_long", "sleep_long_2")}
        client.stores.metadata.close()
        return statuses

    @pipeline
    def queued(directory: str) -> None:
        steps_isolated.sleep_long(0.3, directory)
        steps_isolated.sleep_long(0.3, directory)
        observe(directory)

    run = queued(str(tmp_path))

    inline = run.steps["observe"]
    observed = inline.outputs["output"].load()
    assert sorted(observed.values()) == ["pending", "running"]
    first, second = sorted(
        (run.steps[key] for key in observed), key=lambda s: observed[s.invocation_id] != "running"
    )
    assert inline.finished_at < first.finished_at
    # One slot: the second isolated step starts only after the first one ended, and its
    # recorded start is when its process started, not when it began to wait.
    assert second.started_at >= first.finished_at


def test_engine_compiles_a_static_pipeline_once_per_run() -> None:
    calls: list[int] = []

    @pipeline
    def counted(value: int) -> None:
        calls.append(value)
        increment(produce(value))

    counted(3)

    assert calls == [3]


def test_engine_shows_the_run_and_step_running_while_the_step_runs() -> None:
    @step(enable_cache=False)
    def look() -> dict[str, str]:
        context = get_step_context()
        client = Client()
        seen = {
            "run": str(client.get_run(context.run_id).status),
            "step": str(client.get_step_run(context.step_run_id).status),
        }
        client.stores.metadata.close()
        return seen

    @pipeline
    def watched() -> None:
        look()

    run = watched()

    assert run.steps["look"].outputs["output"].load() == {"run": "running", "step": "running"}
    assert run.status == "completed"
