"""Rendering the Helm chart and reading what it renders, for the chart's tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kstep"
SCENARIOS = sorted(path.stem.removesuffix("-values") for path in (CHART / "ci").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
KUBECTL = Path(sys.executable).parent / "kubectl"

# Release name and namespace of every rendering the tests compare.
RELEASE = "kstep"
NAMESPACE = "kstep-system"


def values_file(scenario: str) -> Path:
    return CHART / "ci" / f"{scenario}-values.yaml"


def helm_template(
    helm: Path,
    *args: str,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart; `args` add values files and --set flags."""
    return subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        check=False,
    )


def render(helm: Path, *args: str, **options: str) -> str:
    """The chart's manifests as one YAML stream; fails the test if rendering fails."""
    result = helm_template(helm, *args, **options)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(manifests: str) -> list[dict[str, Any]]:
    """The objects of a YAML stream, without empty documents."""
    return [doc for doc in yaml.safe_load_all(manifests) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (and `name`) among `objects`."""
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} named {name}"
    return found[0]
