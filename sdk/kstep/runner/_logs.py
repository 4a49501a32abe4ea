"""Capturing a step's stdout, stderr and `logging` records into its log while it runs.

Capture is per step run, not per process: several inline steps run at once on threads of one
process, so `sys.stdout` and `sys.stderr` are replaced by routers (again whenever something
else swapped them) that send each write to the log of the step running in the writing thread
(a context variable), and a handler on the root logger does the same for log records. Threads
a step starts inherit its log, because `threading.Thread.start` carries the starting thread's
context over. Output outside any step goes to the original streams unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from kstep.stores.artifacts import LogWriter

logger = logging.getLogger(__name__)

_LOGGING_FILE = os.path.normcase(logging.__file__)
_current: contextvars.ContextVar[tuple[LogWriter, bool] | None] = contextvars.ContextVar(
    "kstep_step_log", default=None
)
_install_lock = threading.Lock()
_installed = False


class _StreamRouter(io.TextIOBase):
    """Sends writes to the current step's log, and (if echoing) to the original stream."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def write(self, text: str) -> int:
        current = _current.get()
        if current is None:
            return int(self.original.write(text))
        writer, echo = current
        # Text a logging handler writes here was already captured by our own handler.
        if not _inside_logging():
            writer.write(text)
        if echo:
            self.original.write(text)
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return bool(self.original.isatty())

    def fileno(self) -> int:
        return int(self.original.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.original, "encoding", "utf-8"))

    def writable(self) -> bool:
        return True


def _inside_logging() -> bool:
    frame = sys._getframe(2)
    depth = 0
    while frame is not None and depth < 12:
        if os.path.normcase(frame.f_code.co_filename) == _LOGGING_FILE:
            return True
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return False


class _RecordRouter(logging.Handler):
    """Writes log records emitted inside a step to that step's log."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        current = _current.get()
        if current is None:
            return
        try:
            current[0].write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def install() -> None:
    """Route stdout, stderr and logging through per-step logs."""
    global _installed
    with _install_lock:
        # Checked on every step: whoever else swaps the streams (a test runner, a notebook,
        # contextlib.redirect_stdout) may have replaced our routers since the last one.
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = _StreamRouter(sys.stdout)
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = _StreamRouter(sys.stderr)
        if _installed:
            return
        root = logging.getLogger()
        root.addHandler(_RecordRouter())
        if root.level == logging.WARNING and len(root.handlers) == 1:
            # An unconfigured process: let INFO records of steps through, and keep printing
            # warnings outside steps as Python's last-resort handler would have.
            root.setLevel(logging.INFO)
            fallback = logging.StreamHandler()
            fallback.setLevel(logging.WARNING)
            fallback.addFilter(lambda record: _current.get() is None)
            root.addHandler(fallback)
        _carry_context_into_threads()
        _installed = True


def _carry_context_into_threads() -> None:
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if _current.get() is not None:
            context = contextvars.copy_context()
            run = self.run
            self.run = lambda: context.run(run)  # type: ignore[method-assign]
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]


@contextlib.contextmanager
def capture(writer: LogWriter, *, echo: bool) -> Iterator[None]:
    """Capture everything the current thread (and threads it starts) writes into `writer`."""
    install()
    token = _current.set((writer, echo))
    try:
        yield
    finally:
        _current.reset(token)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
