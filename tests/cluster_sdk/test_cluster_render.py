"""Rendering pipelines into PipelineRun manifests.

The golden files in `golden/` are the rendered examples; after an intended change, regenerate
them with `KSTEP_UPDATE_GOLDEN=1 pytest tests/cluster_sdk/test_cluster_render.py` and review
the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from cluster_sdk_support import EXAMPLES, HERE, REPOSITORY

from kstep import ParameterError, PipelineDefinitionError, pipeline, step
from kstep.cluster.render import render_pipeline_run, to_yaml
from kstep.cluster.specs import CodeSpec, PipelineRunSpec
from kstep.runner._references import import_reference

# Read at import: the autouse fixture clears KSTEP_* variables before each test runs.
UPDATE_GOLDEN = os.environ.get("KSTEP_UPDATE_GOLDEN") == "1"

GOLDEN = {
    "quickstart-training.yaml": ("quickstart.py:training", {"rows": 200}, "training-golden"),
    "fan_out-fan_out.yaml": ("fan_out.py:fan_out", {"shards": 4}, "fan-out-golden"),
}


def load_example(reference: str) -> Any:
    return import_reference(f"{EXAMPLES}/{reference}")


# ------------------------------------------------------------------ steps and pipelines


@step
def numbers(count: int) -> Annotated[list[int], "values"]:
    return list(range(count))


@step
def total(values: list[int], scale: float | None) -> int:
    return sum(values) * int(scale or 1)


@step(timeout=1.5, pod={"nodeSelector": {"pool": "gpu"}})
def slow(value: int) -> int:
    return value


@pipeline
def with_none(scale: float | None = None) -> None:
    total(numbers(3), scale)


@pipeline
def timed() -> None:
    slow(1)


@pipeline
def nested() -> None:
    values = numbers(2)
    total([values, [values]], 1.0)


@pipeline
def local_step() -> None:
    @step
    def inner() -> int:
        return 1

    inner()


def plain(value: int) -> int:
    return value


renamed = step(plain)


@pipeline
def decorated_elsewhere() -> None:
    renamed(1)


@pipeline(dynamic=True)
def dynamic(count: int = 2) -> None:
    total(numbers(count), 1.0)


# ------------------------------------------------------------------ golden files


@pytest.mark.parametrize("golden", sorted(GOLDEN))
def test_render_matches_golden_file(golden: str) -> None:
    reference, parameters, name = GOLDEN[golden]
    manifest = render_pipeline_run(load_example(reference), parameters, name=name)
    text = to_yaml(manifest)

    path = HERE / "golden" / golden
    if UPDATE_GOLDEN:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), (
        f"{golden} differs from the rendered manifest; if the change is intended, run "
        "KSTEP_UPDATE_GOLDEN=1 pytest tests/cluster_sdk/test_cluster_render.py"
    )


def test_render_golden_files_validate_against_the_spec_model() -> None:
    for golden in GOLDEN:
        manifest = yaml.safe_load((HERE / "golden" / golden).read_text(encoding="utf-8"))

        PipelineRunSpec.model_validate(manifest["spec"])


# ------------------------------------------------------------------ structure


def test_render_keys_definitions_by_step_name_and_options_hash_when_with_options_differs() -> None:
    manifest = render_pipeline_run(load_example("fan_out.py:fan_out"), {"shards": 3}, name="f")
    spec = manifest["spec"]

    keys = [key for key in spec["definitions"] if key.startswith("score")]
    assert keys[0] == "score"
    assert re.fullmatch(r"score-[0-9a-f]{8}", keys[1])
    by_id = {item["id"]: item["definition"] for item in spec["steps"]}
    assert by_id["score"] == by_id["score_2"] == "score"
    assert by_id["score_heavy"] == keys[1]
    heavy = spec["definitions"][keys[1]]
    assert heavy["runtime"] == "isolated"
    assert heavy["timeoutSeconds"] == 600
    assert heavy["pod"] == {"resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}
    assert heavy["retry"] == {"maxRetries": 1, "delaySeconds": 2.0, "backoff": 2.0}


def test_render_wires_outputs_lists_and_after_edges() -> None:
    manifest = render_pipeline_run(load_example("fan_out.py:fan_out"), {"shards": 3}, name="f")
    steps = {item["id"]: item for item in manifest["spec"]["steps"]}

    assert steps["score"]["inputs"] == {
        "data": {"output": {"step": "make_data", "output": "data"}},
        "shard": {"param": 0},
        "shards": {"param": 3},
    }
    assert steps["combine"]["inputs"]["partials"] == {
        "list": [
            {"output": {"step": "score", "output": "partial"}},
            {"output": {"step": "score_2", "output": "partial"}},
            {"output": {"step": "score_heavy", "output": "partial"}},
        ]
    }
    assert steps["report"]["after"] == ["make_data"]
    assert "after" not in steps["combine"]


def test_render_writes_script_references_relative_to_the_code_root() -> None:
    training = load_example("quickstart.py:training")

    default = render_pipeline_run(training, name="t")["spec"]["definitions"]["fit"]
    from_repository = render_pipeline_run(training, name="t", code_root=REPOSITORY)

    assert default["function"] == "quickstart:fit"
    assert from_repository["spec"]["definitions"]["fit"]["function"] == "examples.quickstart:fit"


def test_render_keeps_module_references_of_imported_steps() -> None:
    manifest = render_pipeline_run(with_none, name="n")

    assert manifest["spec"]["definitions"]["numbers"]["function"] == ("test_cluster_render:numbers")


def test_render_fills_parameter_defaults_and_keeps_a_literal_none() -> None:
    spec = render_pipeline_run(with_none, name="n")["spec"]

    assert spec["parameters"] == {"scale": None}
    assert spec["steps"][1]["inputs"]["scale"] == {"param": None}


def test_render_rounds_the_timeout_up_to_whole_seconds() -> None:
    definition = render_pipeline_run(timed, name="t")["spec"]["definitions"]["slow"]

    assert definition["timeoutSeconds"] == 2
    assert definition["pod"] == {"nodeSelector": {"pool": "gpu"}}
    assert definition["options"]["timeout"] == 1.5


def test_render_records_outputs_and_options_the_runner_needs() -> None:
    definition = render_pipeline_run(with_none, name="n")["spec"]["definitions"]["numbers"]

    assert definition["outputs"] == {"values": ""}
    assert definition["options"]["name"] == "numbers"
    assert definition["options"]["retry"] == {"max_retries": 0, "delay": 0.0, "backoff": 1.0}
    assert re.fullmatch(r"[0-9a-f]{64}", definition["sourceHash"])


def test_render_writes_no_null_values_outside_parameters() -> None:
    manifest = render_pipeline_run(load_example("fan_out.py:fan_out"), name="f")

    def nulls(value: Any, path: str) -> list[str]:
        if isinstance(value, dict):
            return [p for key, item in value.items() for p in nulls(item, f"{path}.{key}")]
        if isinstance(value, list):
            return [p for index, item in enumerate(value) for p in nulls(item, f"{path}[{index}]")]
        return [path] if value is None else []

    # Client-side `kubectl apply` drops null values; nothing the operator needs may be one.
    assert nulls(manifest, "") == []


def test_render_dynamic_pipeline_has_an_entrypoint_and_no_steps() -> None:
    manifest = render_pipeline_run(dynamic, {"count": 5}, name="d")
    spec = manifest["spec"]

    assert spec["mode"] == "dynamic"
    assert spec["entrypoint"] == "test_cluster_render:dynamic"
    assert spec["parameters"] == {"count": 5}
    assert spec["executionMode"] == "stop_on_failure"
    assert "steps" not in spec and "definitions" not in spec


def test_render_metadata_has_a_dns_name_a_pipeline_label_and_the_namespace() -> None:
    manifest = render_pipeline_run(
        load_example("quickstart.py:training"), namespace="ml", labels={"team": "a"}
    )
    metadata = manifest["metadata"]

    assert manifest["apiVersion"] == "kstep.dev/v1alpha1"
    assert manifest["kind"] == "PipelineRun"
    assert re.fullmatch(r"training-\d{8}-\d{6}-[0-9a-f]{6}", metadata["name"])
    assert metadata["namespace"] == "ml"
    assert metadata["labels"] == {"kstep.dev/pipeline": "training", "team": "a"}


def test_render_puts_code_and_run_options_in_the_spec() -> None:
    code = CodeSpec(image="kstep:dev", archive="s3://b/code/x.tar.gz", archive_sha256="a" * 64)

    spec = render_pipeline_run(
        load_example("quickstart.py:training"),
        name="t",
        code=code,
        parallelism=4,
        timeout_seconds=3600,
        ttl_seconds_after_finished=60,
        service_account_name="runner",
        store_secret="stores",
    )["spec"]

    assert spec["code"] == {
        "image": "kstep:dev",
        "archive": "s3://b/code/x.tar.gz",
        "archiveSha256": "a" * 64,
    }
    assert (spec["parallelism"], spec["timeoutSeconds"]) == (4, 3600)
    assert (spec["ttlSecondsAfterFinished"], spec["serviceAccountName"]) == (60, "runner")
    assert spec["storeSecret"] == "stores"


def test_to_yaml_keeps_the_rendered_order_and_round_trips() -> None:
    manifest = render_pipeline_run(load_example("quickstart.py:training"), name="t")

    text = to_yaml(manifest)

    assert text.startswith("apiVersion: kstep.dev/v1alpha1\nkind: PipelineRun\n")
    assert yaml.safe_load(text) == manifest


# ------------------------------------------------------------------ errors


def test_render_rejects_a_step_defined_inside_a_function() -> None:
    with pytest.raises(PipelineDefinitionError) as caught:
        render_pipeline_run(local_step, name="l")

    assert str(caught.value) == (
        "pipeline 'local_step' cannot run on a cluster: step 'inner' is defined inside a "
        "function ('local_step.<locals>.inner'); a step that runs in another process must be "
        "defined at module level"
    )


def test_render_rejects_a_step_its_module_does_not_hold_under_its_name() -> None:
    with pytest.raises(PipelineDefinitionError, match="step 'plain' is not importable as "):
        render_pipeline_run(decorated_elsewhere, name="d")


def test_render_rejects_parameters_that_are_not_json() -> None:
    with pytest.raises(ParameterError) as caught:
        render_pipeline_run(with_none, {"scale": {1, 2}}, name="n")

    assert "parameter 'scale' of pipeline 'with_none' is not a JSON value" in str(caught.value)


def test_render_rejects_an_unknown_parameter() -> None:
    with pytest.raises(ParameterError, match="pipeline 'with_none' cannot be called this way"):
        render_pipeline_run(with_none, {"rows": 3}, name="n")


@pytest.mark.parametrize("name", ["Training", "-x", "a_b", "x" * 254])
def test_render_rejects_a_run_name_kubernetes_refuses(name: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"run name .* is invalid; a PipelineRun"):
        render_pipeline_run(with_none, name=name)


def test_render_rejects_values_the_spec_model_refuses() -> None:
    with pytest.raises(PipelineDefinitionError) as caught:
        render_pipeline_run(with_none, name="n", parallelism=0)

    assert str(caught.value) == (
        "pipeline 'with_none' renders an invalid PipelineRun: spec.parallelism: Input should "
        "be greater than or equal to 1 (got 0)"
    )


def test_render_rejects_a_script_outside_the_code_root() -> None:
    with pytest.raises(PipelineDefinitionError, match="outside the code root"):
        render_pipeline_run(load_example("quickstart.py:training"), name="t", code_root=HERE)


def test_render_rejects_a_module_outside_a_packed_code_root() -> None:
    code = CodeSpec(archive="s3://b/code/x.tar.gz", archive_sha256="a" * 64)

    with pytest.raises(PipelineDefinitionError) as caught:
        render_pipeline_run(with_none, name="n", code=code, code_root=EXAMPLES)

    assert "module 'test_cluster_render'" in str(caught.value)
    assert "neither in the packed code root" in str(caught.value)


def test_render_rejects_a_script_whose_path_is_no_module_name(tmp_path: Path) -> None:
    directory = tmp_path / "my-steps"
    directory.mkdir()
    script = directory / "train.py"
    script.write_text(
        "from kstep import pipeline, step\n\n"
        "@step\ndef one() -> int:\n    return 1\n\n"
        "@pipeline\ndef train():\n    one()\n",
        encoding="utf-8",
    )
    train = import_reference(f"{script}:train")

    with pytest.raises(PipelineDefinitionError, match=r"'my-steps\.train' is not a module name"):
        render_pipeline_run(train, name="t", code_root=tmp_path)


def test_render_rejects_nested_lists_of_step_outputs() -> None:
    with pytest.raises(PipelineDefinitionError, match="nests a list of step outputs"):
        render_pipeline_run(nested, name="n")
