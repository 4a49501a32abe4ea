"""Ctrl-C while a pipeline runs: the run ends cancelled and the interrupt reaches the caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from engine.steps_isolated import wait_for_file
from kstep import Client


def test_interrupt_cancels_the_run_and_raises_keyboard_interrupt(
    tmp_path: Path, client: Client
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.interrupted_pipeline", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background hands its children
        # SIGINT ignored, and Python would keep ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for_file(tmp_path / "started")

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode != 0
    assert stderr.rstrip().endswith("KeyboardInterrupt")
    assert "RunFailed" not in stderr
    (run,) = client.list_runs()
    assert (run.status, run.message) == ("cancelled", "KeyboardInterrupt")
    assert run.finished_at is not None
