"""Bad input to dynamic step calls: each gets an error that says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from dynamic.steps import add, blob, bounds, count, nothing, numbers, square
from kstep import (
    KstepError,
    MaterializerError,
    PipelineDefinitionError,
    StepCallError,
    StepDefinitionError,
    pipeline,
    step,
    unmapped,
)


def errors_of(*calls: Any) -> list[BaseException]:
    """Run a dynamic pipeline making each call, and return what each raised inside it."""
    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def calling() -> None:
        for call in calls:
            try:
                call()
            except KstepError as error:
                caught.append(error)
            else:
                raise AssertionError(f"{call} raised nothing")

    calling()
    return caught


def test_submit_on_a_pipeline_says_only_steps_can_be_submitted() -> None:
    @pipeline(dynamic=True)
    def inner() -> None:
        count(1)

    (error,) = errors_of(lambda: inner.submit())

    assert isinstance(error, PipelineDefinitionError)
    assert str(error) == (
        "<dynamic pipeline 'inner'> is a pipeline; only steps can be called with .submit(), "
        ".map() or .product() inside a dynamic pipeline"
    )
    with pytest.raises(PipelineDefinitionError, match="only steps can be called with"):
        inner.map(x=[1])


def test_submit_does_not_exist_on_a_plain_function() -> None:
    def plain(x: int) -> int:
        return x

    assert not hasattr(plain, "submit")
    with pytest.raises(AttributeError, match="'function' object has no attribute 'submit'"):
        plain.submit(1)  # type: ignore[attr-defined]


def test_submit_outside_a_dynamic_pipeline_is_refused() -> None:
    with pytest.raises(StepDefinitionError) as raised:
        square.submit(1)

    assert str(raised.value) == (
        "step 'square': .submit() is only available inside a dynamic pipeline "
        "(@pipeline(dynamic=True)); call the step directly in a static pipeline"
    )


def test_future_of_another_run_is_refused() -> None:
    kept: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def first() -> None:
        kept["future"] = count.submit(1)
        kept["artifact"] = count(2)

    first()
    (future_error, artifact_error, after_error, map_error) = errors_of(
        lambda: square(kept["future"]),
        lambda: square.submit(kept["artifact"]),
        lambda: square(3, after=kept["future"]),
        lambda: square.map(x=kept["future"]),
    )

    run_id = kept["future"]._state.run_id
    assert isinstance(future_error, StepCallError)
    assert str(future_error) == (
        f"input 'x' of step 'square' comes from another pipeline run ({run_id}); step outputs "
        "and futures can only be passed on within the run that produced them"
    )
    assert str(artifact_error).startswith("input 'x' of step 'square' comes from another")
    assert str(after_error).startswith("after= of step 'square' comes from another pipeline run")
    assert str(map_error).startswith("input 'x' of square.map() comes from another pipeline run")


def test_output_artifact_of_another_run_in_after_is_refused() -> None:
    kept: dict[str, Any] = {}
    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def first() -> None:
        kept["artifact"] = count(2)

    @pipeline(dynamic=True)
    def second() -> None:
        # This run has its own invocation 'count'; after= must not silently mean that one.
        count(3)
        try:
            square(3, after=kept["artifact"])
        except StepCallError as error:
            caught.append(error)

    first()
    run = second()

    assert [str(error) for error in caught] == [
        f"after= of step 'square' comes from another pipeline run ({kept['artifact'].run_id}); "
        "step outputs and futures can only be passed on within the run that produced them"
    ]
    assert "square" not in run.steps


def test_map_over_a_value_that_cannot_be_split_is_refused() -> None:
    literal, number, raw = errors_of(
        lambda: square.map(x=5),
        lambda: square.map(x=count(5)),
        lambda: square.map(x=blob()),
    )

    assert isinstance(literal, StepCallError)
    assert str(literal) == (
        "input 'x' of square.map() is 5, which cannot be split into items; accepted: a list or "
        "tuple, a step output (or a future of one) whose materializer can split it, or the "
        "results of another map"
    )
    assert isinstance(number, MaterializerError)
    assert str(number).startswith("input 'x' of square.map() cannot be split: artifact at ")
    assert str(number).endswith(
        "holds a int, not a sequence; only lists and tuples can be split into items"
    )
    assert isinstance(raw, MaterializerError)
    assert str(raw) == (
        "input 'x' of square.map() is artifact 'calling::blob::output' version 1, stored by "
        "kstep.materializers._builtin.BytesMaterializer, which cannot split it into items; map "
        "over a list, tuple, numpy array or data frame, or give the materializer item_count() "
        "and load_item()"
    )


def test_map_without_a_mapped_input_is_refused() -> None:
    (error,) = errors_of(lambda: add.map(a=unmapped(1), b=unmapped(2)))

    assert str(error) == (
        "add.map() got no input to map over; pass at least one sequence (wrap inputs that every "
        "invocation shares in unmapped(...))"
    )


def test_unmapped_outside_a_map_is_refused() -> None:
    (error,) = errors_of(lambda: square(unmapped(3)))

    assert str(error) == (
        "input 'x' of step 'square' is unmapped(3); unmapped() only applies to .map() and "
        ".product()"
    )


def test_invalid_runtime_is_refused_by_step_and_with_options() -> None:
    def work() -> int:
        return 1

    with pytest.raises(StepDefinitionError) as decorated:
        step(runtime="remote")(work)
    with pytest.raises(StepDefinitionError) as configured:
        square.with_options(runtime="gpu")

    assert str(decorated.value) == (
        "step 'work': runtime='remote' is invalid; accepted: 'inline', 'isolated'"
    )
    assert str(configured.value) == (
        "step 'square': runtime='gpu' is invalid; accepted: 'inline', 'isolated'"
    )


def test_with_options_refuses_an_unknown_option() -> None:
    with pytest.raises(StepDefinitionError) as raised:
        square.with_options(runtimes="isolated")

    assert str(raised.value) == (
        "step 'square': with_options() got unknown option(s) ['runtimes']; accepted: name, "
        "enable_cache, retry, runtime, on_failure, on_success, output_materializers, "
        "cache_expires_after, timeout, pod"
    )


def test_future_of_a_step_with_several_outputs_must_be_indexed() -> None:
    several, none = errors_of(
        lambda: square(bounds.submit(1)),
        lambda: square(nothing.submit()),
    )

    assert str(several).startswith("input 'x' of step 'square' is <StepFuture 'bounds' ")
    assert str(several).endswith(
        ">, whose step has 2 outputs ['low', 'high']; pass one of them, e.g. future[0] or "
        "future['low']"
    )
    assert "whose step has no outputs; use after= to wait for it" in str(none)


def test_after_naming_no_earlier_invocation_is_refused() -> None:
    unknown, wrong_kind = errors_of(
        lambda: square(2, after="nope"),
        lambda: square(2, after=3),
    )

    assert isinstance(unknown, StepCallError)
    assert str(unknown).startswith("step 'square' has after='nope', which names no earlier ")
    assert str(unknown).endswith("; known invocations: none yet")
    assert str(wrong_kind) == (
        "step 'square' has after=3; accepted: invocation ids, futures, output artifacts, map "
        "results, or a list of these"
    )


def test_step_called_with_wrong_arguments_names_what_it_accepts() -> None:
    (error,) = errors_of(lambda: add(1, 2, c=3))

    assert str(error) == (
        "step 'add' cannot be called this way: got an unexpected keyword argument 'c'; it "
        "accepts a, b (plus the reserved id= and after=)"
    )


def test_duplicate_invocation_id_is_refused() -> None:
    (error,) = errors_of(lambda: numbers(1, id="same") and numbers(2, id="same"))

    assert str(error) == (
        "pipeline 'calling' calls a step with id='same' twice; invocation ids must be unique "
        "within a run"
    )
