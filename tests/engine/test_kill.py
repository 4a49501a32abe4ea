"""Killing a pipeline process at random moments never leaves anything half-written."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.steps_isolated import wait_for_file
from kstep import Client
from kstep._settings import Settings
from kstep.engine import LocalEngine

pytestmark = pytest.mark.slow

KILLS = 12


def check_artifact(version: object, client: Client) -> None:
    """Load an artifact version and compare it with what its producer's parameters imply."""
    value = version.load()  # type: ignore[attr-defined]
    producer = version.producer  # type: ignore[attr-defined]
    step_name, parameters = producer.step_name, producer.parameters
    if step_name == "array":
        assert value.shape == (parameters["size"],)
        assert np.all(value == parameters["seed"])
    elif step_name == "listing":
        assert value == [parameters["seed"]] * parameters["length"]
    elif step_name == "constant":
        assert value == {"seed": parameters["seed"]}
    elif step_name == "total":
        source = producer.inputs["values"].producer.parameters
        assert value == source["seed"] * source["size"]
    elif step_name == "doubled":
        source = producer.inputs["values"].producer.parameters
        assert value == [2 * source["seed"]] * source["length"]
    else:
        raise AssertionError(f"unexpected producer {step_name!r}")


def test_kill_at_random_moments_leaves_every_artifact_whole_and_no_run_running(
    kstep_home: Path, tmp_path: Path
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    delays = random.Random(seed).sample(range(0, 2500), KILLS)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "KSTEP_ECHO_STEP_LOGS": "false",
    }
    checked: set[str] = set()

    for kill, delay in enumerate(delays, start=1):
        # A session of its own, so the kill also takes the isolated steps' processes.
        marker = tmp_path / f"started-{kill}"
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.churning_pipeline", str(marker)],
            env=environment,
            start_new_session=True,
        )
        # The delay counts from the end of the imports, which take long on a busy machine.
        wait_for_file(marker, timeout=120)
        time.sleep(delay / 1000)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

        where = f"after kill {kill} of {KILLS} at {delay} ms (random seed {seed})"
        engine = LocalEngine(Settings())
        client = Client(stores=engine.stores)
        try:
            unfinished = client.list_runs(status=["running", "pending"])
            assert unfinished == [], where
            for run in client.list_runs():
                steps = run.steps.values()
                assert not [s for s in steps if s.status in ("running", "pending")], where
            for version in client.list_artifact_versions():
                if version.id not in checked:
                    check_artifact(version, client)
                    checked.add(version.id)
        finally:
            engine.close()

    assert checked, "no artifact was ever stored; the kills came too early to test anything"
