"""Holding Ctrl-C back while a write to the stores is half done.

Ctrl-C raises KeyboardInterrupt wherever the main thread happens to be. Inside a database
transaction that can leave a connection checked out with its write lock held, and the
engine's own next write (recording the run as cancelled) then waits for that lock. Writes
therefore defer the interrupt to their end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Delay a Ctrl-C that arrives inside the block until the block is done."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        # Only the main thread receives signals, and a program's own handler is its own.
        yield
        return
    received: list[int] = []

    def remember(number: int, _: FrameType | None) -> None:
        received.append(number)

    signal.signal(signal.SIGINT, remember)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt
