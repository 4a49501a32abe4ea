"""Holding Ctrl-C back while a write to the stores is half done.

Ctrl-C raises KeyboardInterrupt wherever the main thread happens to be. Inside a database
transaction that can leave a connection checked out with its write lock held, and the
engine's own next write (recording the run as cancelled) then waits for that lock. Writes
therefore defer the interrupt to their end.
"""

from __future__ import annotations

import _signal
import signal
import threading
from types import FrameType, TracebackType

# The C module's functions: the `signal` module's wrappers convert to enums on every call,
# which would cost more than the small writes this guards.
_get = _signal.getsignal
_set = _signal.signal
_SIGINT = int(signal.SIGINT)
_main = threading.main_thread()


class interrupts_deferred:  # noqa: N801 - used like a function, as a context manager
    """Delay a Ctrl-C that arrives inside the `with` block until the block is done."""

    __slots__ = ("_active", "_received")

    def __enter__(self) -> None:
        # Only the main thread handles signals, and a program's own handler is its own.
        self._active = (
            threading.current_thread() is _main and _get(_SIGINT) is signal.default_int_handler
        )
        self._received = False
        if self._active:
            _set(_SIGINT, self._remember)

    def _remember(self, number: int, frame: FrameType | None) -> None:
        self._received = True

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._active:
            return
        _set(_SIGINT, signal.default_int_handler)
        if self._received and kind is None:
            raise KeyboardInterrupt
