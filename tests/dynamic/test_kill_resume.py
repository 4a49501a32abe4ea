"""Resuming dynamic runs whose pipeline process was killed with SIGKILL.

The pipelines of `killable.py` run in a process of their own, which the tests kill at random
moments and then resume. The side channel records every body that started and whether it
ended; the metadata store records which step run completed. Together they show that no
invocation's body ran again once a step run of it had completed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from dynamic.killable import ORDER_ENV
from dynamic.steps import SIDE_CHANNEL_ENV, Execution, SideChannel, wait_for_start
from kstep import Status
from kstep.client import Client, Run
from kstep.stores.metadata import StepRunRecord

KILLABLE = Path(__file__).with_name("killable.py")
TESTS = Path(__file__).resolve().parent.parent
N = 10
INVOCATIONS = {
    "slow_square",
    *(f"slow_square_{i}" for i in range(2, N + 1)),
    *(f"map:slow_add:{i}" for i in range(N)),
    "slow_total",
}
TOTAL = sum(i * i + 1 for i in range(N))


@pytest.fixture
def process_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    """Where the pipeline processes write their output (see `output_of`)."""
    with open(tmp_path / "processes.log", "ab") as log:
        yield log


def output_of(log: IO[bytes]) -> str:
    """The end of what the pipeline processes wrote, for a failure's message."""
    log.flush()
    return Path(log.name).read_text(errors="replace")[-4000:]


def start(arguments: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Run killable.py with the test's KSTEP_HOME and side channel."""
    path = os.environ.get("PYTHONPATH")
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), *([path] if path else [])]),
    }
    return subprocess.Popen(
        [sys.executable, str(KILLABLE), *arguments],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def the_run(client: Client, pipeline_name: str) -> Run | None:
    runs = client.list_runs(pipeline=pipeline_name)
    assert len(runs) <= 1, "resume must continue the same run, not start another"
    return runs[0] if runs else None


def killed(process: subprocess.Popen[bytes], after: float) -> bool:
    """Let the process run for `after` seconds, then SIGKILL it; whether it was still alive."""
    try:
        process.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return True
    finally:
        process.kill()
        process.wait()


def assert_no_completed_work_ran_again(
    client: Client, run: Run, side_channel: SideChannel, invocations: set[str]
) -> int:
    """Check every piece of work's executions; return how many were lost to a kill.

    A piece of work is a step with its inputs (an input fingerprint). When the function calls
    steps in the same order it is also one invocation id; in another order, ids move to other
    inputs, and a completed piece of work may be reused under another id.
    """
    records = {record.id: record for record in client.stores.metadata.step_runs_of(run.id)}
    assert all(Status(record.status).is_finished for record in records.values())
    assert {record.invocation_id for record in records.values()} == invocations
    work: dict[tuple[str, str | None], list[tuple[Execution, StepRunRecord]]] = {}
    for execution in side_channel.executions():
        record = records[execution.step_run]
        work.setdefault((record.step_name, record.input_fingerprint), []).append(
            (execution, record)
        )
    interrupted = 0
    for key, bodies in work.items():
        statuses = [record.status for _, record in bodies]
        # The one execution that completed is the last one: none started after it.
        assert statuses.count("completed") == 1, (key, bodies)
        assert statuses[-1] == "completed", (key, bodies)
        assert bodies[-1][0].finished is not None
        # Every earlier execution was lost with a killed process, never completed.
        for _, record in bodies[:-1]:
            assert record.status == "failed", (key, record)
            assert "exited before the run finished" in (record.error_message or "")
            interrupted += 1
    return interrupted


def test_resume_after_sigkill_executes_no_completed_invocation_twice(
    client: Client, side_channel: SideChannel, process_log: IO[bytes]
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    kills = 0

    for _ in range(5):
        run = the_run(client, "killable")
        if run is not None and run.status == "completed":
            break
        arguments = ["start", "killable"] if run is None else ["resume", run.id]
        kills += killed(start(arguments, process_log), after=rng.uniform(0.4, 2.0))

    # Then resume, without killing, until the run completes.
    run = the_run(client, "killable")
    if run is None or run.status != "completed":
        arguments = ["start", "killable"] if run is None else ["resume", run.id]
        process = start(arguments, process_log)
        try:
            code = process.wait(timeout=120)
            assert code == 0, f"seed {seed}: the last process failed:\n{output_of(process_log)}"
        finally:
            process.kill()
            process.wait()

    run = the_run(client, "killable")
    assert run is not None
    assert run.status == "completed", f"seed {seed}:\n{output_of(process_log)}"
    assert run.steps["slow_total"].outputs["output"].load() == TOTAL
    interrupted = assert_no_completed_work_ran_again(client, run, side_channel, INVOCATIONS)
    # In the same order, each piece of work is one invocation id, and each executed.
    assert set(side_channel.counts()) == INVOCATIONS
    print(f"seed {seed}: {kills} kills, {interrupted} executions lost and executed again")


def test_resume_after_sigkill_in_reversed_order_reexecutes_nothing_completed(
    client: Client,
    side_channel: SideChannel,
    process_log: IO[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = start(["start", "killable"], process_log)
    try:
        # Squares of 0 to 3 completed once the fifth one started.
        wait_for_start(os.environ[SIDE_CHANNEL_ENV], "slow_square_5")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    run = the_run(client, "killable")
    assert run is not None
    squares = {invocation: step_run.id for invocation, step_run in run.steps.items()}
    monkeypatch.setenv(ORDER_ENV, "reversed")

    resumed = client.resume_run(run.id)

    assert resumed.status == "completed"
    assert resumed.steps["slow_total"].outputs["output"].load() == TOTAL
    assert_no_completed_work_ran_again(client, resumed, side_channel, INVOCATIONS)
    # The last call now squares 0, which 'slow_square' computed before the kill.
    assert resumed.steps["slow_square_10"].original_step_run_id == squares["slow_square"]


def test_resume_reuses_an_isolated_step_that_outlived_the_killed_process(
    client: Client, side_channel: SideChannel, process_log: IO[bytes]
) -> None:
    process = start(["start", "outliving"], process_log)
    try:
        started = wait_for_start(os.environ[SIDE_CHANNEL_ENV], "isolated_sleep")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    run = the_run(client, "outliving")
    assert run is not None

    try:
        resumed = client.resume_run(run.id)
    finally:
        # The step process is not ours to leave behind, whatever happened.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{started['pid']}"):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(started["pid"], signal.SIGKILL)

    assert resumed.status == "completed"
    assert side_channel.counts() == {"isolated_sleep": 1, "slow_square": 1}
    assert resumed.steps["isolated_sleep"].status == "completed"
    assert resumed.steps["isolated_sleep"].id == started["step_run"]
