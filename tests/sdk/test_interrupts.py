"""Ctrl-C inside a store write waits for the write to finish."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from kstep._interrupts import interrupts_deferred


@pytest.fixture(autouse=True)
def terminal_interrupts() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal.

    A test run started in the background inherits SIGINT ignored, and Python then leaves it
    ignored: the deferral has nothing to defer there.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_interrupt_inside_a_deferred_block_is_raised_when_the_block_ends() -> None:
    finished = False

    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        finished = True

    assert finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferred_block_leaves_a_programs_own_interrupt_handler_alone() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: calls.append(number))
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_deferred_block_leaves_an_ignored_interrupt_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    with interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)

    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
