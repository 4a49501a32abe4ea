"""The container image, built from the Dockerfile with podman and checked by running it.

`hack/build-image.sh` does both: it builds on a local Debian base (no registry needed) and runs
every console script, the inline executor and real pipelines in a container with a read-only
root filesystem, as the image's non-root user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.plugin import require_component

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _missing_tool() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman)"
    if not os.environ.get("KSTEP_BASE_IMAGE") and shutil.which("debootstrap") is None:
        return "debootstrap is not installed and KSTEP_BASE_IMAGE names no base image"
    return None


@pytest.mark.timeout(1800)
def test_image_runs_entry_points_and_pipelines_read_only_as_non_root() -> None:
    missing = _missing_tool()
    if missing is not None:
        require_component(missing)

    result = subprocess.run(
        [str(ROOT / "hack" / "build-image.sh"), "--tag=localhost/kstep:test"],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-6000:]
    assert result.stdout.strip().splitlines()[-1] == "localhost/kstep:test"
    for check in (
        "ok: runs as uid/gid 10001 10001",
        "ok: the root filesystem is read-only",
        "ok: kstep --help",
        "ok: kstep-runner --help",
        "ok: kstep-operator --help",
        "ok: kstep-operator executor --help",
        "ok: kstep-orchestrator starts and asks for its run",
        "ok: kstep run quickstart.py:training completed",
        "ok: kstep run dynamic_tuning.py:tuning completed, with its isolated step",
    ):
        assert check in result.stderr
