"""Fixtures of the cluster SDK tests: rendering, code archives, the runner, submission.

Every test gets its own `KSTEP_HOME`. The tests marked `cluster` use the test bed's
`control_plane`, `namespace` and `s3` fixtures (tests/testbed/plugin.py), which skip them,
naming what is missing, when the control plane's binaries are not built.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_sdk_support import CRDS, kubectl

from kstep.engine import LocalEngine


@pytest.fixture(autouse=True)
def kstep_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh KSTEP_HOME for the test; other KSTEP_* settings unset."""
    for name in [name for name in os.environ if name.startswith("KSTEP_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "kstep-home"
    monkeypatch.setenv("KSTEP_HOME", str(home))
    LocalEngine.reset_default()
    yield home
    LocalEngine.reset_default()


@pytest.fixture(scope="session")
def kstep_crds(control_plane: Any) -> Any:
    """The control plane with kstep's CRDs applied and established."""
    kubeconfig = control_plane.admin_kubeconfig
    applied = kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert applied.returncode == 0, applied.stderr
    for name in ("pipelineruns.kstep.dev", "stepruns.kstep.dev"):
        ready = kubectl(
            kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}"
        )
        assert ready.returncode == 0, ready.stderr
    return control_plane
