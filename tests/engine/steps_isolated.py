"""Steps the engine tests run as isolated steps.

An isolated step runs in its own process, which imports it again by reference, so these
live at module level in an importable module. Files in directories the tests pass in are
how the steps and the tests signal each other across processes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

from kstep import Retry, get_step_context, log_metadata, step

logger = logging.getLogger(__name__)


def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    """Wait until another process creates `path`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


@step(runtime="isolated", enable_cache=False)
def meet(me: str, peer: str, directory: str) -> int:
    """Announce itself, wait for its peer to announce itself too, return its own pid."""
    (Path(directory) / me).touch()
    wait_for_file(Path(directory) / peer)
    return os.getpid()


@step(runtime="isolated", enable_cache=False)
def sleep_long(seconds: float, directory: str) -> int:
    """Mark that it started, then sleep."""
    (Path(directory) / "sleeping").touch()
    time.sleep(seconds)
    return 1


def record_failure(error: BaseException) -> None:
    """A failure hook that appends the exception it got to a file named by the environment."""
    with open(os.environ["TEST_HOOK_FILE"], "a", encoding="utf-8") as file:
        file.write(f"{type(error).__name__}: {error}\n")


@step(runtime="isolated", retry=Retry(max_retries=1), on_failure=record_failure)
def always_fails(value: int) -> int:
    """Print its context, then fail."""
    context = get_step_context()
    print(f"attempt {context.attempt} in process {os.getpid()}")
    raise ValueError(f"cannot use {value}")


@step(runtime="isolated")
def describe_context(value: int) -> dict[str, object]:
    """Return its step context, attach metadata, and write to every kind of output."""
    context = get_step_context()
    log_metadata({"value": value, "pid": os.getpid()})
    print("to stdout")
    print("to stderr", file=sys.stderr)
    logger.info("through logging")
    thread = threading.Thread(target=print, args=("from a thread",))
    thread.start()
    thread.join()
    return {
        "run_id": context.run_id,
        "run_name": context.run_name,
        "step_run_id": context.step_run_id,
        "invocation_id": context.invocation_id,
        "pipeline_name": context.pipeline_name,
        "attempt": context.attempt,
        "pid": os.getpid(),
        "entry_point": sys.argv[0],
        "value": value,
    }


@step(runtime="isolated")
def killed() -> int:
    """Die the way an out-of-memory kill does: at once, recording nothing."""
    print("about to die", flush=True)
    os.kill(os.getpid(), 9)
    return 1
