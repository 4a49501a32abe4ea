"""Pipeline definitions and static compilation into a graph of step invocations."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from kstep import pipeline, step
from kstep._compile import InputList, OutputRef, Param
from kstep._errors import ParameterError, PipelineDefinitionError, StepCallError


@step
def load(rows: int = 3) -> list[int]:
    return list(range(rows))


@step
def split(values: list[int]) -> tuple[Annotated[list[int], "train"], Annotated[list[int], "test"]]:
    return values[:2], values[2:]


@step
def total(values: list[int], offset: int = 0) -> int:
    return sum(values) + offset


@step
def combine(parts: list[int]) -> int:
    return sum(parts)


@step
def notify() -> None:
    pass


def test_pipeline_compiles_step_calls_into_invocations_in_call_order() -> None:
    @pipeline
    def numbers(rows: int = 5) -> None:
        train, test = split(load(rows))
        total(train)
        total(test, offset=1)

    compiled = numbers.compile({"rows": 5})

    assert list(compiled.invocations) == ["load", "split", "total", "total_2"]
    invocations = compiled.invocations
    assert invocations["load"].inputs == {"rows": Param(5)}
    assert invocations["split"].inputs == {"values": OutputRef("load", "output")}
    assert invocations["total"].inputs == {"values": OutputRef("split", "train")}
    assert invocations["total_2"].inputs == {
        "values": OutputRef("split", "test"),
        "offset": Param(1),
    }
    assert invocations["total_2"].upstream() == ["split"]


def test_pipeline_numbers_repeated_invocations_of_a_step() -> None:
    @pipeline
    def repeated() -> None:
        for _ in range(4):
            load()

    assert list(repeated.compile().invocations) == ["load", "load_2", "load_3", "load_4"]


def test_pipeline_uses_an_explicit_invocation_id_and_skips_taken_ones() -> None:
    @pipeline
    def named() -> None:
        load(id="load_2")
        load()
        load()

    assert list(named.compile().invocations) == ["load_2", "load", "load_3"]


def test_pipeline_wires_a_list_of_outputs_as_one_input() -> None:
    @pipeline
    def fan_in() -> None:
        combine([total(load()), total(load()), 7])

    inputs = fan_in.compile().invocations["combine"].inputs

    assert inputs == {
        "parts": InputList((OutputRef("total", "output"), OutputRef("total_2", "output"), Param(7)))
    }


def test_pipeline_after_adds_ordering_edges_by_id_or_output() -> None:
    @pipeline
    def ordered() -> None:
        first = load()
        notify(id="announce")
        notify(after=[first, "announce"])

    invocations = ordered.compile().invocations

    assert invocations["notify"].after == ("load", "announce")
    assert invocations["notify"].upstream() == ["load", "announce"]


def test_pipeline_step_without_outputs_returns_none_while_compiling() -> None:
    seen: list[Any] = []

    @pipeline
    def quiet() -> None:
        seen.append(notify())

    quiet.compile()

    assert seen == [None]


def test_pipeline_rejects_after_naming_an_unknown_invocation() -> None:
    @pipeline
    def ordered() -> None:
        load()
        notify(after="lod")

    with pytest.raises(PipelineDefinitionError) as caught:
        ordered.compile()

    assert str(caught.value) == (
        "step 'notify' in pipeline 'ordered' has after='lod', which names no earlier "
        "invocation; known invocations: 'load'"
    )


def test_pipeline_rejects_a_step_call_missing_an_argument() -> None:
    @pipeline
    def typo() -> None:
        total(offset=1)

    with pytest.raises(StepCallError) as caught:
        typo.compile()

    assert str(caught.value) == (
        "step 'total' cannot be called this way: missing a required argument: 'values'; it "
        "accepts values, offset (plus the reserved id= and after=)"
    )


def test_pipeline_rejects_a_step_call_with_an_unexpected_keyword() -> None:
    @pipeline
    def typo() -> None:
        load(rows=1, colums=2)

    with pytest.raises(StepCallError) as caught:
        typo.compile()

    assert str(caught.value) == (
        "step 'load' cannot be called this way: got an unexpected keyword argument 'colums'; "
        "it accepts rows (plus the reserved id= and after=)"
    )


def test_pipeline_rejects_a_duplicate_invocation_id() -> None:
    @pipeline
    def twice() -> None:
        load(id="data")
        load(id="data")

    with pytest.raises(PipelineDefinitionError) as caught:
        twice.compile()

    assert str(caught.value) == (
        "pipeline 'twice' calls a step with id='data' twice; invocation ids must be unique "
        "within a run"
    )


def test_pipeline_rejects_an_invalid_invocation_id() -> None:
    @pipeline
    def bad_id() -> None:
        load(id="two words")

    with pytest.raises(StepCallError, match="step 'load' was called with id='two words'"):
        bad_id.compile()


def test_pipeline_rejects_a_step_literal_that_is_not_json() -> None:
    @pipeline
    def literal() -> None:
        total([1, 2], offset=object())

    with pytest.raises(ParameterError) as caught:
        literal.compile()

    assert str(caught.value).startswith(
        "input 'offset' of step 'total' is not a JSON value: got <object object at "
    )
    assert str(caught.value).endswith(
        "; JSON values: None, bool, int, float, str, and lists or dicts of them (str keys)"
    )


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": {1, 2}}, " at ['a']: got {1, 2}"),
        ([1, float("nan")], " at [1]: got nan"),
        ({"a": {1: "x"}}, " at ['a'] key 1: got 1"),
        ({2: "x"}, " at key 2: got 2"),
    ],
)
def test_pipeline_rejects_a_parameter_that_is_not_json(value: Any, where: str) -> None:
    @pipeline
    def configured(config: Any) -> None:
        load()

    with pytest.raises(ParameterError) as caught:
        configured(value)

    assert str(caught.value) == (
        f"parameter 'config' of pipeline 'configured' is not a JSON value{where}; JSON values: "
        "None, bool, int, float, str, and lists or dicts of them (str keys)"
    )


def test_pipeline_rejects_an_unknown_parameter() -> None:
    @pipeline
    def configured(rows: int = 1) -> None:
        load(rows)

    with pytest.raises(ParameterError) as caught:
        configured(colums=3)

    assert str(caught.value) == (
        "pipeline 'configured' cannot be called this way: got an unexpected keyword argument "
        "'colums'; it accepts rows"
    )


@pytest.mark.parametrize("use", [bool, list, len, lambda output: output.load()])
def test_pipeline_output_placeholder_cannot_be_used_as_a_value(use: Any) -> None:
    @pipeline
    def branching() -> None:
        use(load())

    with pytest.raises(PipelineDefinitionError) as caught:
        branching.compile()

    message = str(caught.value)
    assert message.startswith("pipeline 'branching' ")
    assert "<output 'output' of step 'load'> while compiling" in message
    assert message.endswith(
        "or use @pipeline(dynamic=True) to use values in the pipeline's function"
    )


def test_pipeline_without_step_calls_does_not_compile() -> None:
    @pipeline
    def empty() -> None:
        pass

    with pytest.raises(PipelineDefinitionError) as caught:
        empty.compile()

    assert str(caught.value) == (
        "pipeline 'empty' calls no steps; a pipeline needs at least one step"
    )


def test_pipeline_map_needs_a_dynamic_pipeline() -> None:
    @pipeline
    def mapping() -> None:
        total.map(values=load())

    with pytest.raises(Exception, match=r"\.map\(\) is only available inside a dynamic pipeline"):
        mapping.compile()


def test_pipeline_keeps_its_options() -> None:
    def hook() -> None:
        pass

    @pipeline(
        name="training",
        enable_cache=False,
        execution_mode="fail_fast",
        on_failure=hook,
        on_success=hook,
    )
    def train() -> None:
        load()

    assert (train.name, train.enable_cache, train.execution_mode) == (
        "training",
        False,
        "fail_fast",
    )
    assert train.on_failure is hook and train.on_success is hook


def test_pipeline_execution_mode_defaults_to_continue_on_failure() -> None:
    @pipeline
    def default() -> None:
        load()

    assert default.execution_mode == "continue_on_failure"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"execution_mode": "stop"},
            "pipeline 'train': execution_mode='stop' is invalid; accepted: "
            "'continue_on_failure', 'stop_on_failure', 'fail_fast'",
        ),
        (
            {"enable_cache": 1},
            "pipeline 'train': enable_cache=1 is invalid; expected True or False",
        ),
        ({"on_success": 42}, "pipeline 'train': on_success=42 is not callable"),
        (
            {"name": "a/b"},
            "pipeline name 'a/b' is invalid; pipeline names may use letters, digits, '_', '.', "
            "'-', starting with a letter or '_', at most 128",
        ),
        (
            {"retry": 2},
            "@pipeline got unknown option(s) ['retry']; accepted: name, enable_cache, "
            "execution_mode, on_failure, on_success, dynamic",
        ),
    ],
)
def test_pipeline_rejects_an_invalid_option(options: dict[str, Any], message: str) -> None:
    def train() -> None:
        load()

    with pytest.raises(PipelineDefinitionError) as caught:
        pipeline(**options)(train)

    assert str(caught.value) == message


def test_pipeline_rejects_variadic_parameters() -> None:
    def train(**options: Any) -> None:
        load()

    with pytest.raises(PipelineDefinitionError) as caught:
        pipeline(train)

    assert str(caught.value) == (
        "pipeline 'train' takes *options; pipeline parameters must be named"
    )
