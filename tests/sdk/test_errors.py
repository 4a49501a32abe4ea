"""Errors for bad input at run time: each names the culprit and says what is accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest

import kstep
from kstep import RunFailed, get_step_context, log_metadata, pipeline, step
from kstep._errors import ArtifactLoadError


def failed_step(body: Any, name: str = "faulty") -> Any:
    """Run a one-step pipeline whose step fails and return that step run."""

    @pipeline
    def failing() -> None:
        body()

    with pytest.raises(RunFailed) as caught:
        failing()
    return caught.value.run.steps[name]


def test_error_when_a_step_returns_too_few_outputs() -> None:
    @step
    def faulty() -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
        return 1  # type: ignore[return-value]

    step_run = failed_step(faulty)

    assert step_run.error_type == "kstep._errors.OutputError"
    assert step_run.error_message == (
        "step 'faulty' declares 2 outputs ['a', 'b'] but returned 1; return a tuple with one "
        "value per output"
    )


def test_error_when_a_step_returns_a_tuple_of_the_wrong_length() -> None:
    @step
    def faulty() -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
        return 1, 2, 3  # type: ignore[return-value]

    step_run = failed_step(faulty)

    assert step_run.error_message == (
        "step 'faulty' declares 2 outputs ['a', 'b'] but returned 3 values; return a tuple "
        "with one value per output"
    )


def test_error_when_a_step_without_outputs_returns_a_value() -> None:
    @step
    def faulty() -> None:
        return "surprise"  # type: ignore[return-value]

    step_run = failed_step(faulty)

    assert step_run.error_message == (
        "step 'faulty' declares no outputs (-> None) but returned 'surprise'; return nothing or "
        "declare an output"
    )


def test_error_of_a_failed_run_names_the_step_and_the_exception() -> None:
    @step
    def faulty() -> int:
        raise ZeroDivisionError("division by zero in the metric")

    step_run = failed_step(faulty)
    run = step_run.run

    assert isinstance(run, kstep.Run)
    assert run.message == (
        "step 'faulty' failed: ZeroDivisionError: division by zero in the metric"
    )
    assert step_run.error_type == "builtins.ZeroDivisionError"


def produced_version(value: Any) -> Any:
    @step(enable_cache=False)
    def produce() -> Any:
        return value

    @pipeline
    def producing() -> None:
        produce()

    return producing().steps["produce"].outputs["output"]


def test_error_when_an_artifact_is_corrupt() -> None:
    version = produced_version([1, 2])
    (Path(version.uri) / "data.json").write_text("[1, 2")

    with pytest.raises(ArtifactLoadError) as caught:
        version.load()

    assert str(caught.value) == (
        "artifact 'producing::produce::output' version 1 cannot be loaded: artifact at "
        f"{version.uri} holds invalid JSON: Expecting ',' delimiter: line 1 column 6 (char 5)"
    )


def test_error_when_an_artifact_file_is_missing() -> None:
    version = produced_version(b"raw")
    (Path(version.uri) / "data.bin").unlink()

    with pytest.raises(ArtifactLoadError) as caught:
        version.load()

    assert str(caught.value) == (
        "artifact 'producing::produce::output' version 1 cannot be loaded: artifact file "
        f"'data.bin' is missing from {version.uri}"
    )


def test_error_when_a_step_input_is_corrupt_names_the_input() -> None:
    @step
    def produce() -> list[int]:
        return [1, 2]

    @step(enable_cache=False)
    def consume(values: list[int]) -> int:
        return sum(values)

    @pipeline
    def flow() -> None:
        consume(produce())

    version = flow().steps["produce"].outputs["output"]
    (Path(version.uri) / "data.json").write_text("{not json")

    with pytest.raises(RunFailed) as caught:
        flow()

    steps = caught.value.run.steps
    assert steps["produce"].status == "cached"
    assert steps["consume"].error_type == "kstep._errors.ArtifactLoadError"
    assert steps["consume"].error_message.startswith(
        "input 'values' of step 'consume': artifact 'flow::produce::output' version 1 cannot be "
        "loaded: artifact at "
    )


def test_error_when_get_step_context_is_called_outside_a_step() -> None:
    with pytest.raises(kstep.KstepError) as caught:
        get_step_context()

    assert str(caught.value) == (
        "get_step_context() was called outside a step; it is only available while a step's "
        "body runs"
    )


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"model": object},
            "metadata 'model' of step 'faulty' is not a JSON value: got <class 'object'>; JSON "
            "values: None, bool, int, float, str, and lists or dicts of them (str keys)",
        ),
        (
            {3: "three"},
            "log_metadata() in step 'faulty' got the key 3; metadata keys must be strings",
        ),
    ],
)
def test_error_when_log_metadata_gets_what_it_cannot_store(
    metadata: dict[Any, Any], message: str
) -> None:
    @step
    def faulty() -> None:
        log_metadata(metadata)

    assert failed_step(faulty).error_message == message


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (kstep.StepDefinitionError, TypeError),
        (kstep.PipelineDefinitionError, ValueError),
        (kstep.StepCallError, TypeError),
        (kstep.ParameterError, ValueError),
        (kstep.MaterializerError, TypeError),
        (kstep.OutputError, ValueError),
        (kstep.ArtifactLoadError, RuntimeError),
        (kstep.NotFoundError, LookupError),
        (kstep.RunFailed, RuntimeError),
        (kstep.StepFailed, RuntimeError),
        (kstep.UpstreamFailed, RuntimeError),
    ],
)
def test_error_classes_subclass_kstep_error_and_the_matching_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, kstep.KstepError)
    assert issubclass(error, builtin)
