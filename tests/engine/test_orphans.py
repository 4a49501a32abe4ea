"""Runs whose process is gone: a new engine marks them failed instead of leaving them running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kstep._settings import Settings
from kstep.engine import LocalEngine
from kstep.engine._owner import current_owner
from kstep.stores import Stores
from kstep.stores.metadata import RunRecord, StepRunRecord
from kstep.stores.metadata.store import new_id


@pytest.fixture
def stores() -> Iterator[Stores]:
    opened = Stores.open(Settings())
    yield opened
    opened.metadata.close()


def exited_process_owner() -> dict[str, Any]:
    """The owner record of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return {"host": socket.gethostname(), "pid": child.pid, "start": 1}


def record_running_run(
    stores: Stores, owner: dict[str, Any] | None, *steps: tuple[str, int, str]
) -> str:
    """A run left running by `owner`, with step runs (invocation id, attempt, status)."""
    run = RunRecord(
        id=new_id(),
        name=f"orphan-{new_id()[:8]}",
        pipeline_name="orphan",
        mode="static",
        status="running",
        execution_mode="continue_on_failure",
        parameters={},
        owner=owner,
    )
    stores.metadata.create_run(run)
    for invocation_id, attempt, status in steps:
        stores.metadata.start_step_run(
            StepRunRecord(
                id=new_id(),
                run_id=run.id,
                invocation_id=invocation_id,
                step_name="step",
                attempt=attempt,
                status=status,
                runtime="inline",
                owner=owner,
            )
        )
    return run.id


def statuses(stores: Stores, run_id: str) -> tuple[str, list[str]]:
    run = stores.metadata.get_run(run_id)
    return run.status, [s.status for s in stores.metadata.step_runs_of(run_id)]


def start_engine() -> None:
    LocalEngine(Settings()).close()


def test_engine_start_fails_a_run_whose_process_exited(stores: Stores) -> None:
    owner = exited_process_owner()
    run_id = record_running_run(
        stores, owner, ("load", 1, "completed"), ("train", 1, "running"), ("test", 1, "pending")
    )

    start_engine()

    assert statuses(stores, run_id) == ("failed", ["completed", "failed", "failed"])
    run = stores.metadata.get_run(run_id)
    assert run.message == (
        f"the process that ran it (pid {owner['pid']}) exited before the run finished"
    )
    assert run.finished_at is not None
    assert stores.metadata.step_runs_of(run_id)[1].error_message == run.message


def test_engine_start_fails_the_waiting_retry_of_an_orphaned_run(stores: Stores) -> None:
    run_id = record_running_run(
        stores, exited_process_owner(), ("train", 1, "retrying"), ("train", 2, "retrying")
    )

    start_engine()

    # The first attempt was followed by a second; the second's retry never comes.
    assert statuses(stores, run_id) == ("failed", ["retrying", "failed"])


def test_engine_start_fails_a_run_whose_process_is_a_zombie(stores: Stores) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    owner = {"host": socket.gethostname(), "pid": child.pid, "start": None}
    run_id = record_running_run(stores, owner, ("train", 1, "running"))

    try:
        start_engine()
    finally:
        child.wait()

    assert statuses(stores, run_id) == ("failed", ["failed"])


def test_engine_start_fails_a_run_whose_pid_now_belongs_to_another_process(
    stores: Stores,
) -> None:
    reused = {**current_owner(), "start": (current_owner()["start"] or 0) + 1}
    run_id = record_running_run(stores, reused, ("train", 1, "running"))

    start_engine()

    assert statuses(stores, run_id) == ("failed", ["failed"])


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param(current_owner(), id="live-process"),
        pytest.param({"host": "another-host", "pid": 1, "start": 1}, id="other-host"),
        pytest.param(None, id="unknown"),
    ],
)
def test_engine_start_leaves_runs_it_cannot_prove_orphaned(
    stores: Stores, owner: dict[str, Any] | None
) -> None:
    run_id = record_running_run(stores, owner, ("train", 1, "running"))

    start_engine()

    assert statuses(stores, run_id) == ("running", ["running"])


def test_engine_default_is_rebuilt_after_reset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = LocalEngine.default()
    monkeypatch.setenv("KSTEP_HOME", str(tmp_path / "other"))

    same = LocalEngine.default()
    LocalEngine.reset_default()
    rebuilt = LocalEngine.default()

    assert same is first
    assert rebuilt is not first
    assert rebuilt.settings.home == os.path.abspath(tmp_path / "other")
