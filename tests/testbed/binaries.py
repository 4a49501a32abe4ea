"""Where the test bed finds the binaries of its control plane.

``hack/testbed-versions.env`` pins the versions, and ``hack/testbed-binaries.sh`` builds the
binaries into a cache directory named after them; both sides compute that name the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "testbed-versions.env"

# What the control plane needs; helm and etcdctl are built too, for tests that use them.
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of the versions file, skipping comments and blank lines."""
    versions: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        versions[key] = value
    return versions


def default_bin_dir(versions: dict[str, str] | None = None) -> Path:
    """Return the cache directory that ``hack/testbed-binaries.sh`` builds into."""
    versions = versions if versions is not None else read_versions()
    cache = Path(os.environ.get("KSTEP_TESTBED_CACHE") or Path.home() / ".cache/kstep/testbed")
    return cache / (
        f"bin-k8s{versions['KSTEP_K8S_VERSION']}"
        f"-etcd{versions['KSTEP_ETCD_VERSION']}"
        f"-helm{versions['KSTEP_HELM_VERSION']}"
    )


def bin_dir() -> Path:
    """Return ``KSTEP_TESTBED_BIN`` if set, else the default cache directory."""
    override = os.environ.get("KSTEP_TESTBED_BIN")
    return Path(override) if override else default_bin_dir()


def missing_binaries(directory: Path, names: tuple[str, ...] = CONTROL_PLANE_BINARIES) -> list[str]:
    """Return which of ``names`` are not executable files in ``directory``."""
    return [name for name in names if not os.access(directory / name, os.X_OK)]
