"""Ctrl-C inside a store write waits for the write to finish."""

from __future__ import annotations

import os
import signal
import time

import pytest

from kstep._interrupts import interrupts_deferred


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
