"""A dynamic run of 10,000 invocations, in a process of its own so its peak memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCALE = Path(__file__).with_name("scale.py")


@pytest.mark.slow
def test_dynamic_run_of_ten_thousand_invocations_stays_under_500_mb() -> None:
    environment = {**os.environ, "KSTEP_ECHO_STEP_LOGS": "false"}
    finished = subprocess.run(
        [sys.executable, str(SCALE), "10000"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr[-5000:]
    measured = json.loads(finished.stdout.strip().splitlines()[-1])
    print(f"10,000 invocations: {measured['seconds']} s, peak RSS {measured['peak_rss_mb']} MB")
    assert measured["status"] == "completed"
    # The map's invocations and the reduce.
    assert measured["invocations"] == 10_001
    assert measured["total"] == sum(range(1, 10_001))
    assert measured["peak_rss_mb"] < 500
