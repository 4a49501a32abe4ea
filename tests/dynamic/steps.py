"""Steps the dynamic pipeline tests share, and the side channel they write to.

The steps live at module level in an importable module because isolated steps run in a
subprocess that imports them again by reference.

Steps note in a side-channel file when their bodies start and end (`note`). The file is the
test's own record of executions, independent of the metadata store under test: a body that
was killed has a start and no end.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from kstep import get_step_context, log_metadata, step

SIDE_CHANNEL_ENV = "DYNAMIC_TESTS_SIDE_CHANNEL"


class StepBoom(Exception):
    """Raised by the failing steps, so that tests can check callers get this very type."""


def note(event: str) -> None:
    """Append one line about the running step's body to the side channel, if there is one."""
    path = os.environ.get(SIDE_CHANNEL_ENV)
    if not path:
        return
    context = get_step_context()
    line = json.dumps(
        {
            "event": event,
            "invocation": context.invocation_id,
            "step_run": context.step_run_id,
            "pid": os.getpid(),
            "time": time.time(),
        }
    )
    # One write to a file opened for appending: lines of concurrent threads and processes
    # never interleave, and a killed process leaves whole lines behind.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass
class Execution:
    """One execution of a step body, as the side channel saw it."""

    invocation: str
    step_run: str
    pid: int
    started: float
    finished: float | None = None


class SideChannel:
    """Reads what the steps of a test noted."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def executions(self) -> list[Execution]:
        """Every body that started, in the order they started."""
        if not self.path.exists():
            return []
        found: dict[str, Execution] = {}
        for line in self.path.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == "start":
                assert record["step_run"] not in found, f"step run started twice: {record}"
                found[record["step_run"]] = Execution(
                    record["invocation"], record["step_run"], record["pid"], record["time"]
                )
            else:
                found[record["step_run"]].finished = record["time"]
        return sorted(found.values(), key=lambda execution: execution.started)

    def by_invocation(self) -> dict[str, list[Execution]]:
        """Executions grouped by invocation id."""
        grouped: dict[str, list[Execution]] = defaultdict(list)
        for execution in self.executions():
            grouped[execution.invocation].append(execution)
        return dict(grouped)

    def counts(self) -> dict[str, int]:
        """How many times each invocation's body started."""
        return {key: len(value) for key, value in self.by_invocation().items()}


def wait_for_start(channel_path: str, invocation: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the side channel shows that `invocation`'s body started; return its line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(channel_path):
            with open(channel_path, encoding="utf-8") as file:
                for line in file:
                    record = json.loads(line)
                    if record["invocation"] == invocation and record["event"] == "start":
                        return dict(record)
        time.sleep(0.02)
    raise AssertionError(f"{invocation!r} did not start within {timeout} s")


# ------------------------------------------------------------------ inline steps


@step
def count(n: int) -> int:
    return n


@step
def square(x: int) -> int:
    note("start")
    note("end")
    return x * x


@step
def add(a: int, b: int) -> int:
    note("start")
    note("end")
    return a + b


@step
def total(values: list[int]) -> int:
    note("start")
    note("end")
    return sum(values)


@step
def numbers(n: int) -> list[int]:
    note("start")
    note("end")
    return list(range(n))


@step
def bounds(x: int) -> tuple[Annotated[int, "low"], Annotated[int, "high"]]:
    return x - 1, x + 1


@step
def nothing() -> None:
    return None


@step
def blob() -> bytes:
    return b"not a sequence"


@step
def timed(tag: int, seconds: float) -> int:
    """Sleep, and record when the body ran as the step run's metadata."""
    note("start")
    started = time.time()
    time.sleep(seconds)
    log_metadata({"started": started, "finished": time.time()})
    note("end")
    return tag


@step
def fail(message: str) -> int:
    note("start")
    raise StepBoom(message)


@step
def whereabouts(tag: int) -> dict[str, Any]:
    """Where the body ran: process and thread."""
    return {"tag": tag, "pid": os.getpid(), "thread": threading.current_thread().name}


# ------------------------------------------------------------------ isolated steps


@step(runtime="isolated")
def isolated_sleep(seconds: float) -> int:
    note("start")
    time.sleep(seconds)
    note("end")
    return os.getpid()


@step(runtime="isolated")
def isolated_fail(message: str) -> int:
    raise StepBoom(message)


@step(runtime="isolated")
def isolated_increment(value: int) -> int:
    """Add one, and record where the body ran as the step run's metadata."""
    log_metadata({"pid": os.getpid(), "argv": sys.argv})
    return value + 1
