"""Inline steps run in the executor's workers: without the operator's credentials, and
each code version in its own process."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import Cluster, environment

pytestmark = pytest.mark.cluster


def test_inline_step_sees_none_of_the_operators_credentials(kstep_cluster: Cluster) -> None:
    name = kstep_cluster.submit(steps.inspect_environment)
    run = kstep_cluster.wait(name)
    assert run["status"]["phase"] == "completed", run["status"]

    recorded = kstep_cluster.client().get_run(run["status"]["runId"])
    seen: dict[str, Any] = recorded.steps["environment"].outputs["output"].load()

    variables: dict[str, str] = seen["variables"]
    operator_environment = kstep_cluster.processes.environment
    kubeconfig = operator_environment["KUBECONFIG"]
    assert "KUBECONFIG" not in variables
    assert not [k for k in variables if k.startswith("KUBERNETES_")]
    assert not [k for k in variables if k.startswith("KSTEP_OPERATOR_")]
    assert not [k for k, v in variables.items() if kubeconfig in v], variables
    # The operator's home holds a kubeconfig (~/.kube/config) too.
    assert variables.get("HOME") != operator_environment["HOME"]
    assert seen["kubernetes"] == []
    # What it needs, it has: the run's store settings.
    assert variables["KSTEP_METADATA_URL"] == kstep_cluster.store_env["KSTEP_METADATA_URL"]


_HELPER = 'VERSION = "{version}"\n'

_STEPS = textwrap.dedent(
    """
    import os

    from kstep import pipeline, step

    import versioned_helper


    @step
    def report_version(salt: str) -> dict:
        return {{"helper": versioned_helper.VERSION, "mine": "{version}", "pid": os.getpid()}}


    @pipeline
    def versioned(salt: str = "") -> None:
        report_version(salt)
    """
)


def _render_version(cluster: Cluster, root: Path, version: str, store: Any) -> dict[str, Any]:
    """Write version `version` of the same two modules under `root`, pack it and render a
    run of it (importing it here, as a user's machine would, then forgetting it)."""
    from kstep.cluster.code import pack_code

    root.mkdir()
    (root / "versioned_helper.py").write_text(_HELPER.format(version=version))
    (root / "versioned_steps.py").write_text(_STEPS.format(version=version))
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("versioned_steps")
        code = pack_code(root, store)
        return cluster.render(module.versioned, {"salt": version}, code=code, code_root=root)
    finally:
        sys.path.remove(str(root))
        for name in ("versioned_steps", "versioned_helper"):
            sys.modules.pop(name, None)


def test_runs_of_two_code_archives_each_import_their_own_version_of_a_module(
    kstep_cluster: Cluster, tmp_path: Path
) -> None:
    from kstep._settings import Settings
    from kstep.stores.artifacts import open_artifact_store

    with environment(kstep_cluster.store_env):
        store = open_artifact_store(Settings(home=str(tmp_path / "home")))
        first = _render_version(kstep_cluster, tmp_path / "one", "one", store)
        second = _render_version(kstep_cluster, tmp_path / "two", "two", store)
    assert first["spec"]["code"]["archive"] != second["spec"]["code"]["archive"]

    names = [kstep_cluster.create(first), kstep_cluster.create(second)]
    runs = [kstep_cluster.wait(name) for name in names]

    client = kstep_cluster.client()
    reported = []
    for run in runs:
        assert run["status"]["phase"] == "completed", run["status"]
        outputs = client.get_run(run["status"]["runId"]).steps["report_version"].outputs
        reported.append(outputs["output"].load())
    assert [(r["helper"], r["mine"]) for r in reported] == [("one", "one"), ("two", "two")]
    assert reported[0]["pid"] != reported[1]["pid"]
