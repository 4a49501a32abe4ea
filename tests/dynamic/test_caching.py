"""Caching across dynamic runs, and between static and dynamic runs of the same steps."""

from __future__ import annotations

from dynamic.steps import SideChannel, add, count, numbers, square, total
from kstep import pipeline


@pipeline(dynamic=True)
def cacheable(n: int) -> None:
    squares = square.map(x=numbers(n))
    total(squares)
    add(count(n), 1)
    square.map(x=[1, 2, 3])


def test_cache_reuses_every_step_of_a_second_identical_dynamic_run(
    side_channel: SideChannel,
) -> None:
    first = cacheable(3)
    executed = side_channel.counts()
    second = cacheable(3)

    assert second.status == "completed"
    assert {str(s.status) for s in first.steps.values()} == {"completed"}
    assert {str(s.status) for s in second.steps.values()} == {"cached"}
    assert list(second.steps) == list(first.steps)
    for invocation, step_run in second.steps.items():
        assert step_run.original_step_run_id == first.steps[invocation].id
        assert step_run.outputs == first.steps[invocation].outputs
    assert side_channel.counts() == executed
    assert second.steps["total"].outputs["output"].load() == 0 + 1 + 4


def test_cache_misses_only_where_inputs_changed(side_channel: SideChannel) -> None:
    cacheable(3)
    second = cacheable(4)

    statuses = {invocation: str(s.status) for invocation, s in second.steps.items()}
    assert statuses["numbers"] == "completed"
    assert statuses["count"] == "completed"
    assert statuses["add"] == "completed"
    assert statuses["total"] == "completed"
    # Items of a changed sequence count as changed inputs; literal items do not.
    assert [statuses[f"map:square:{i}"] for i in range(4)] == ["completed"] * 4
    assert [statuses[f"map:square_2:{i}"] for i in range(3)] == ["cached"] * 3
    assert second.steps["total"].outputs["output"].load() == 0 + 1 + 4 + 9


def test_cache_hits_do_not_depend_on_invocation_ids(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True)
    def ordered(reverse: bool) -> None:
        values = [3, 2, 1] if reverse else [1, 2, 3]
        for value in values:
            square(value)

    first = ordered(False)
    second = ordered(True)

    assert {str(s.status) for s in second.steps.values()} == {"cached"}
    assert second.steps["square"].original_step_run_id == first.steps["square_3"].id
    assert side_channel.counts() == {"square": 1, "square_2": 1, "square_3": 1}


def test_cache_is_shared_between_static_and_dynamic_runs() -> None:
    @pipeline
    def static_chain() -> None:
        square(count(7))

    @pipeline(dynamic=True)
    def dynamic_chain() -> None:
        square(count(7))

    static = static_chain()
    dynamic = dynamic_chain()
    static_again = static_chain()

    assert dynamic.mode == "dynamic"
    assert dynamic.steps["square"].status == "cached"
    assert dynamic.steps["square"].original_step_run_id == static.steps["square"].id
    assert static_again.steps["square"].original_step_run_id == static.steps["square"].id


def test_cache_is_off_for_a_pipeline_that_disables_it(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def uncached() -> None:
        square(3)

    uncached()
    second = uncached()

    assert second.steps["square"].status == "completed"
    assert side_channel.counts() == {"square": 2}


def test_cache_of_a_sync_call_is_used_within_the_same_run(side_channel: SideChannel) -> None:
    @pipeline(dynamic=True)
    def twice() -> None:
        square(3)
        square(3)

    run = twice()

    assert run.steps["square_2"].status == "cached"
    assert run.steps["square_2"].original_step_run_id == run.steps["square"].id
    assert side_channel.counts() == {"square": 1}
