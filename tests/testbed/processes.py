"""Background processes of the test bed: each logs to a file and is stopped by its own PID.

Every process started here asks the kernel to kill it when the thread that started it exits
(``PR_SET_PDEATHSIG``), and an ``atexit`` hook stops whatever is still running, so neither a
killed nor a crashed pytest leaves servers behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

_running: dict[int, ManagedProcess] = {}
_running_lock = threading.Lock()


class ComponentError(RuntimeError):
    """A test bed component failed to start or stopped unexpectedly."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    ``check`` runs between attempts and may raise to give up early (e.g. the process died).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except Exception as exc:  # the probe's own errors only mean "not yet"
            last_error = exc
        else:
            if result:
                return result
        if check is not None:
            check()
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s{detail}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. The signal fires when the *thread* that forked
    # exits, which is why components are started from pytest's main thread only.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One background program of the test bed, with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ComponentError(f"{self.name} was never started")
        return self._popen.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    preexec_fn=_die_with_parent,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ComponentError(f"{self.name} could not be started: {exc}") from exc
        with _running_lock:
            _running[self._popen.pid] = self
        logger.debug("Started %s as PID %s: %s", self.name, self._popen.pid, self.argv)
        return self

    def exit_code(self) -> int | None:
        """Return the exit code if the process has ended, else None."""
        return None if self._popen is None else self._popen.poll()

    def raise_if_exited(self) -> None:
        """Raise a ComponentError naming this component and its log if it has ended."""
        code = self.exit_code()
        if code is not None:
            raise ComponentError(self.describe_failure(f"exited with code {code}"))

    def describe_failure(self, what: str) -> str:
        return f"{self.name} {what}; last lines of {self.log_path}:\n{log_tail(self.log_path)}"

    def stop(self, *, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process by its PID, then SIGKILL it if it outlives ``grace`` seconds."""
        if self._popen is None:
            return
        popen = self._popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, sig)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (PID %s) ignored signal %s; killing it", self.name, popen.pid, sig
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(popen.pid, signal.SIGKILL)
                popen.wait()
        with _running_lock:
            _running.pop(popen.pid, None)
        logger.debug("Stopped %s (PID %s, exit code %s)", self.name, popen.pid, popen.returncode)


@atexit.register
def _stop_leftovers() -> None:
    # Normally the fixtures stop everything; this covers an interpreter that exits early.
    with _running_lock:
        leftovers = list(_running.values())
    for process in reversed(leftovers):
        process.stop(grace=2.0)
