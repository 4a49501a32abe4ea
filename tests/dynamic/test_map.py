"""`.map()`, `.product()`, `unmapped()`, `unpack()` and `chunk()`."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from dynamic.steps import SideChannel, add, bounds, count, numbers, square, timed, total
from kstep import (
    KstepError,
    MapResultsFuture,
    OutputArtifact,
    StepFuture,
    pipeline,
    step,
    unmapped,
)
from kstep.client import Run
from kstep.materializers._builtin import JsonMaterializer


def producers(run: Run, invocation: str, name: str) -> list[str]:
    """Invocation ids of the step runs that produced each item of a list input, in order."""
    versions = run.steps[invocation].inputs[name]
    assert isinstance(versions, list)
    return [version.producer.invocation_id for version in versions]  # type: ignore[union-attr]


def test_map_then_reduce_never_loads_in_the_pipeline_function(
    monkeypatch: pytest.MonkeyPatch, side_channel: SideChannel
) -> None:
    loads_here: list[str] = []
    original_load = JsonMaterializer.load
    pipeline_thread = threading.get_ident()

    def spying_load(self: JsonMaterializer, data_type: type) -> Any:
        if threading.get_ident() == pipeline_thread:
            loads_here.append(self.uri)
        return original_load(self, data_type)

    monkeypatch.setattr(JsonMaterializer, "load", spying_load)
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def map_reduce(n: int) -> None:
        squares = square.map(x=numbers(n))
        seen["squares"] = squares
        seen["total"] = total(squares)

    run = map_reduce(5)

    assert loads_here == []
    assert isinstance(seen["squares"], MapResultsFuture)
    assert isinstance(seen["total"], OutputArtifact)
    assert run.steps["total"].outputs["output"].load() == 0 + 1 + 4 + 9 + 16
    assert producers(run, "total", "values") == [f"map:square:{i}" for i in range(5)]
    assert [run.steps[f"map:square:{i}"].outputs["output"].load() for i in range(5)] == [
        0,
        1,
        4,
        9,
        16,
    ]
    assert side_channel.counts() == {
        "numbers": 1,
        **{f"map:square:{i}": 1 for i in range(5)},
        "total": 1,
    }


def test_map_splits_a_plain_list_a_future_and_another_map() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def sources() -> None:
        seen["list"] = square.map(x=[1, 2, 3]).load()
        seen["tuple"] = square.map(x=(4, 5)).load()
        seen["future"] = square.map(x=numbers.submit(3)).load()
        seen["map"] = square.map(x=square.map(x=[2, 3])).load()

    run = sources()

    assert seen == {"list": [1, 4, 9], "tuple": [16, 25], "future": [0, 1, 4], "map": [16, 81]}
    # Each map of the same step gets its own prefix, so ids stay unique and stable.
    assert "map:square:2" in run.steps
    assert "map:square_2:1" in run.steps
    assert "map:square_3:2" in run.steps
    assert run.steps["map:square_5:1"].upstream == ["map:square_4:1"]


def test_map_splits_a_numpy_array_output() -> None:
    @step
    def matrix() -> np.ndarray:
        return np.arange(6).reshape(3, 2)

    @step
    def row_sum(row: np.ndarray) -> int:
        return int(row.sum())

    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def rows() -> None:
        seen["sums"] = row_sum.map(row=matrix()).load()

    rows()

    assert seen["sums"] == [1, 5, 9]


def test_map_results_future_gives_items_in_order() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def results() -> None:
        squares = square.map(x=[3, 1, 2])
        seen["len"] = len(squares)
        seen["first"] = squares[0]
        seen["iterated"] = list(squares)
        seen["wait"] = squares.wait()
        seen["done"] = squares.done()
        seen["result"] = squares.result()
        seen["load"] = squares.load()

    results()

    assert seen["len"] == 3
    assert isinstance(seen["first"], StepFuture)
    assert [future.invocation_id for future in seen["iterated"]] == [
        "map:square:0",
        "map:square:1",
        "map:square:2",
    ]
    assert seen["wait"] is True
    assert seen["done"] is True
    assert all(isinstance(artifact, OutputArtifact) for artifact in seen["result"])
    assert seen["load"] == [9, 1, 4]


def test_map_with_unequal_lengths_names_the_inputs_and_their_lengths() -> None:
    errors: list[BaseException] = []

    @pipeline(dynamic=True)
    def unequal() -> None:
        try:
            add.map(a=[1, 2], b=[1, 2, 3])
        except KstepError as error:
            errors.append(error)

    run = unequal()

    assert str(errors[0]) == (
        "add.map() zips its inputs, which need equal lengths: 'a' has 2, 'b' has 3 items; use "
        ".product() for every combination, or unmapped(...) for inputs shared by every "
        "invocation"
    )
    assert isinstance(errors[0], TypeError)
    assert run.steps == {}


def test_product_runs_every_combination_in_row_major_order() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def combinations() -> None:
        sums = add.product(a=[1, 2], b=[10, 20, 30])
        seen["sums"] = sums.load()
        seen["ids"] = [future.invocation_id for future in sums]

    run = combinations()

    assert seen["sums"] == [11, 21, 31, 12, 22, 32]
    assert seen["ids"] == [f"map:add:{i}" for i in range(6)]
    assert [run.steps[f"map:add:{i}"].parameters for i in range(3)] == [
        {"a": 1, "b": 10},
        {"a": 1, "b": 20},
        {"a": 1, "b": 30},
    ]


def test_product_of_a_step_output_and_a_list() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def mixed() -> None:
        seen["sums"] = add.product(a=numbers(2), b=[100, 200]).load()

    mixed()

    assert seen["sums"] == [100, 200, 101, 201]


def test_unmapped_passes_a_value_whole_to_every_invocation() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def shared() -> None:
        seen["literal"] = add.map(a=[1, 2, 3], b=unmapped(100)).load()
        seen["artifact"] = add.map(a=numbers(3), b=unmapped(count(10))).load()

    run = shared()

    assert seen["literal"] == [101, 102, 103]
    assert seen["artifact"] == [10, 11, 12]
    count_output = run.steps["count"].outputs["output"]
    assert all(run.steps[f"map:add_2:{i}"].inputs["b"] == count_output for i in range(3))
    assert [run.steps[f"map:add_2:{i}"].inputs["a"].id for i in range(3)] == [
        run.steps["numbers"].outputs["output"].id
    ] * 3


def test_unpack_gives_one_list_per_output_of_a_mapped_step() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def two_outputs() -> None:
        lows, highs = bounds.map(x=[5, 6, 7]).unpack()
        seen["lows"] = total(lows).load()
        seen["highs"] = total(highs).load()
        seen["high_values"] = [future.load() for future in highs]

    run = two_outputs()

    assert seen["lows"] == 4 + 5 + 6
    assert seen["highs"] == 6 + 7 + 8
    assert seen["high_values"] == [6, 7, 8]
    inputs = run.steps["total"].inputs["values"]
    assert isinstance(inputs, list)
    assert [version.name for version in inputs] == ["low"] * 3


def test_unpack_refuses_a_step_with_one_output() -> None:
    errors: list[BaseException] = []

    @pipeline(dynamic=True)
    def one_output() -> None:
        try:
            square.map(x=[1]).unpack()
        except KstepError as error:
            errors.append(error)

    one_output()

    assert str(errors[0]) == (
        "unpack() splits results by output, but the mapped step has 1 output(s); iterate over "
        "the results instead"
    )


def test_chunk_passes_one_item_of_a_sequence_output_on() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True)
    def chunks() -> None:
        sequence = numbers(6)
        seen["from_artifact"] = square(sequence.chunk(3)).load()
        seen["from_future"] = square.submit(numbers.submit(9).chunk(8)).load()

    run = chunks()

    assert seen == {"from_artifact": 9, "from_future": 64}
    assert run.steps["square"].inputs["x"] == run.steps["numbers"].outputs["output"]
    edges = run._client.stores.metadata.inputs_of(run.steps["square"].id)
    assert [(edge.name, edge.item) for edge, _ in edges] == [("x", 3)]
    assert run.steps["square_2"].upstream == ["numbers_2"]


def test_chunk_refuses_an_index_that_is_not_an_int() -> None:
    errors: list[BaseException] = []

    @pipeline(dynamic=True)
    def bad_chunk() -> None:
        try:
            numbers(3).chunk("1")  # type: ignore[arg-type]
        except KstepError as error:
            errors.append(error)

    bad_chunk()

    assert str(errors[0]) == "chunk() takes an int index; got '1'"


def test_map_results_wait_gives_up_after_the_timeout_for_all_items() -> None:
    seen: dict[str, Any] = {}

    @pipeline(dynamic=True, enable_cache=False)
    def chained() -> None:
        first = timed.submit(1, 0.3)
        second = timed.submit(2, 0.3, after=first)
        third = timed.submit(3, 0.3, after=second)
        results = MapResultsFuture([first, second, third], timed.output_names)
        started = time.perf_counter()
        seen["waited"] = results.wait(0.4)
        seen["elapsed"] = time.perf_counter() - started
        results.wait()

    chained()

    # The timeout bounds the whole wait, not the wait for each item.
    assert seen["waited"] is False
    assert seen["elapsed"] < 0.8
