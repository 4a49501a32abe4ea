"""Bad input: the API server rejects what the schema forbids; the operator fails the rest.

A manifest the CRD schema rejects never reaches the operator: `kubectl` prints the API
server's message. A manifest that passes the schema but cannot run (an unknown upstream step,
a cycle, a function that does not import, a missing Secret) ends as a failed PipelineRun
whose reason and message name the culprit, at once and without a reconcile error.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import operator_steps as steps
import pytest
from operator_harness import Cluster

pytestmark = pytest.mark.cluster

Edit = Callable[[dict[str, Any]], None]


def _chain(cluster: Cluster, edit: Edit) -> dict[str, Any]:
    """A valid three-step chain (seed -> square -> square_2), then `edit`ed."""
    manifest = cluster.render(steps.chain, {"length": 3, "salt": "bad-input"})
    edited = copy.deepcopy(manifest)
    edit(edited["spec"])
    return edited


def _step(spec: dict[str, Any], invocation_id: str) -> dict[str, Any]:
    return next(s for s in spec["steps"] if s["id"] == invocation_id)


def _assert_fails_cleanly(cluster: Cluster, name: str) -> dict[str, Any]:
    """The run failed without a StepRun, and no reconcile failed in a retry's period."""
    run = cluster.wait(name, timeout=60)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert cluster.metric("kstep_reconcile_errors_total", kind="run") == 0
        time.sleep(0.25)
    assert cluster.step_runs(name) == {}
    assert cluster.run(name)["metadata"]["resourceVersion"] == run["metadata"]["resourceVersion"]
    assert "Traceback" not in cluster.processes.log_text()
    return run


def _reason_and_message(run: dict[str, Any]) -> tuple[str, str]:
    condition = run["status"]["conditions"][0]
    assert (condition["type"], condition["status"]) == ("Succeeded", "False")
    assert condition["message"] == run["status"]["message"]
    return str(condition["reason"]), str(run["status"]["message"])


def _remove_seed(spec: dict[str, Any]) -> None:
    spec["steps"] = [s for s in spec["steps"] if s["id"] != "seed"]


def _close_a_cycle(spec: dict[str, Any]) -> None:
    _step(spec, "seed")["after"] = ["square_2"]


def _misname_the_function(spec: dict[str, Any]) -> None:
    spec["definitions"]["square"]["function"] = "operator_steps:no_such_step"


def _misname_the_module(spec: dict[str, Any]) -> None:
    spec["definitions"]["seed"]["function"] = "no_such_module:seed"


def _name_a_missing_secret(spec: dict[str, Any]) -> None:
    spec["storeSecret"] = "no-such-secret"


def _use_an_unknown_output(spec: dict[str, Any]) -> None:
    _step(spec, "square")["inputs"]["x"]["output"]["output"] = "nothing"


def _misname_a_definition(spec: dict[str, Any]) -> None:
    _step(spec, "square_2")["definition"] = "cube"


@pytest.mark.parametrize(
    ("edit", "reason", "fragments"),
    [
        pytest.param(
            _remove_seed,
            "UnknownUpstream",
            ["step 'square' takes an input from step 'seed', which is not in spec.steps"],
            id="unknown-upstream-step",
        ),
        pytest.param(
            _close_a_cycle,
            "Cycle",
            ["'seed'", "'square'", "'square_2'", "form a cycle"],
            id="cycle",
        ),
        pytest.param(
            _misname_the_function,
            "UnknownFunction",
            [
                "step definition 'square' refers to 'operator_steps:no_such_step', which cannot "
                "be imported from the run's code",
            ],
            id="unknown-function",
        ),
        pytest.param(
            _misname_the_module,
            "UnknownFunction",
            ["step definition 'seed' refers to 'no_such_module:seed'", "no_such_module"],
            id="unknown-module",
        ),
        pytest.param(
            _name_a_missing_secret,
            "SecretNotFound",
            ["'no-such-secret'", "does not exist"],
            id="missing-secret",
        ),
        pytest.param(
            _use_an_unknown_output,
            "UnknownOutput",
            ["step 'square' takes output 'nothing' of step 'seed'"],
            id="unknown-output",
        ),
        pytest.param(
            _misname_a_definition,
            "UnknownDefinition",
            ["step 'square_2' names the definition 'cube'"],
            id="unknown-definition",
        ),
    ],
)
def test_invalid_run_fails_with_a_reason_naming_the_culprit(
    shared_cluster: Cluster, edit: Edit, reason: str, fragments: list[str]
) -> None:
    name = shared_cluster.create(_chain(shared_cluster, edit))

    run = _assert_fails_cleanly(shared_cluster, name)

    assert run["status"]["phase"] == "failed"
    found_reason, message = _reason_and_message(run)
    assert found_reason == reason, message
    for fragment in fragments:
        assert fragment in message, message


def test_run_of_a_missing_code_archive_fails_with_a_reason_naming_the_archive(
    shared_cluster: Cluster,
) -> None:
    sha256 = "0" * 64
    archive = f"{shared_cluster.store_env['KSTEP_ARTIFACT_ROOT']}/code/{sha256}.tar.gz"

    def name_a_missing_archive(spec: dict[str, Any]) -> None:
        spec["code"] = {"archive": archive, "archiveSha256": sha256}

    name = shared_cluster.create(_chain(shared_cluster, name_a_missing_archive))

    run = _assert_fails_cleanly(shared_cluster, name)

    reason, message = _reason_and_message(run)
    assert reason == "InvalidCodeArchive", message
    assert f"the run's code archive {archive!r} cannot be loaded" in message, message
    assert "does not exist" in message, message


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        pytest.param(
            lambda spec: spec.update(parallelism=0),
            ["spec.parallelism", "should be greater than or equal to 1"],
            id="out-of-bounds",
        ),
        pytest.param(
            lambda spec: spec.update(surprise=True),
            ['unknown field "spec.surprise"'],
            id="unknown-field",
        ),
        pytest.param(
            lambda spec: _step(spec, "square").update(id="no spaces allowed"),
            ["spec.steps[1].id", "should match"],
            id="bad-invocation-id",
        ),
        pytest.param(
            lambda spec: spec.update(executionMode="sometimes"),
            ["spec.executionMode", 'Unsupported value: "sometimes"'],
            id="bad-enum",
        ),
    ],
)
def test_manifest_the_schema_rejects_gets_the_api_servers_message(
    shared_cluster: Cluster, edit: Edit, fragments: list[str]
) -> None:
    manifest = _chain(shared_cluster, edit)

    applied = shared_cluster.apply_yaml(manifest)

    assert applied.returncode != 0
    for fragment in fragments:
        assert fragment in applied.stderr, applied.stderr
    missing = shared_cluster.kubectl(
        "get", "pipelinerun", "-n", shared_cluster.namespace, manifest["metadata"]["name"]
    )
    assert "NotFound" in missing.stderr
