"""Upstream edges and input lineage of dynamic step runs, and the logs of concurrent steps."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

from dynamic.steps import add, count, square, timed, total
from kstep import pipeline, step
from kstep.client import Client

logger = logging.getLogger(__name__)


def test_upstream_edges_come_from_data_and_after() -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def edges() -> None:
        one = count(1)
        squared = square.submit(one)
        waited = timed.submit(0, 0.0, after=[squared])
        two = count.submit(2, after="count")
        add(squared, count(3), after=[waited, one, two])
        timed(1, 0.0, after=squared.result())

    run = edges()

    steps = run.steps
    assert steps["count"].upstream == []
    assert steps["square"].upstream == ["count"]
    assert steps["square"].inputs == {"x": steps["count"].outputs["output"]}
    assert steps["timed"].upstream == ["square"]
    assert steps["timed"].inputs == {}
    assert steps["count_2"].upstream == ["count"]
    assert steps["add"].upstream == ["square", "count_3", "timed", "count", "count_2"]
    assert steps["add"].inputs == {
        "a": steps["square"].outputs["output"],
        "b": steps["count_3"].outputs["output"],
    }
    assert steps["timed_2"].upstream == ["square"]


def test_after_waits_for_a_step_without_data_between_them() -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def ordered() -> None:
        first = timed.submit(1, 0.3)
        timed.submit(2, 0.0, after=first)

    run = ordered()

    first, second = run.steps["timed"], run.steps["timed_2"]
    assert second.metadata["started"] >= first.metadata["finished"]


def test_map_results_arrive_as_a_list_with_one_input_edge_per_item(client: Client) -> None:
    @pipeline(dynamic=True)
    def gather() -> None:
        squares = square.map(x=[3, 1, 2])
        total(squares)
        total([count.submit(5), count(6), squares[0]])

    run = gather()

    values = run.steps["total"].inputs["values"]
    assert isinstance(values, list)
    assert [version.producer.invocation_id for version in values] == [  # type: ignore[union-attr]
        "map:square:0",
        "map:square:1",
        "map:square:2",
    ]
    assert [version.load() for version in values] == [9, 1, 4]
    assert run.steps["total"].upstream == ["map:square:0", "map:square:1", "map:square:2"]
    assert run.steps["total"].outputs["output"].load() == 14
    mixed = run.steps["total_2"].inputs["values"]
    assert [version.load() for version in mixed] == [5, 6, 9]  # type: ignore[union-attr]
    assert run.steps["total_2"].outputs["output"].load() == 20

    # The same edges, walked from the final artifact.
    final = run.steps["total"].outputs["output"]
    upstream = client.lineage(final, direction="upstream")
    assert sorted(edge.step_run.invocation_id for edge in upstream) == ["total"] * 3


@step
def chatty(tag: int) -> int:
    """Writes through print, stderr, logging and a thread of its own, interleaved with others."""

    def from_thread() -> None:
        for line in range(5):
            print(f"tag={tag} thread line={line}")
            time.sleep(0.005)

    helper = threading.Thread(target=from_thread)
    helper.start()
    for line in range(10):
        print(f"tag={tag} print line={line}")
        logger.warning("tag=%s logging line=%s", tag, line)
        time.sleep(0.005)
    sys.stderr.write(f"tag={tag} stderr\n")
    helper.join()
    return tag


def test_logs_of_concurrent_inline_steps_never_mix() -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def noisy() -> None:
        print("from the pipeline function")
        for future in [chatty.submit(tag) for tag in range(8)]:
            future.result()

    run = noisy()

    for tag, invocation in enumerate(["chatty", *[f"chatty_{i}" for i in range(2, 9)]]):
        log = run.steps[invocation].logs()
        tags = set(re.findall(r"tag=(\d+)", log))
        assert tags == {str(tag)}, f"{invocation} logged lines of {tags - {str(tag)}}"
        assert len(re.findall(r"print line=\d", log)) == 10
        assert len(re.findall(r"logging line=\d", log)) == 10
        assert len(re.findall(r"thread line=\d", log)) == 5
        assert log.count("stderr") == 1
        assert "from the pipeline function" not in log


def test_logs_of_a_step_started_in_a_later_run_are_still_captured() -> None:
    # Test runners and notebooks replace sys.stdout between runs; capture must survive that.
    logs: list[str] = []

    for tag in range(2):

        @pipeline(dynamic=True, enable_cache=False)
        def single() -> None:
            chatty(tag)  # noqa: B023 - the pipeline runs within this iteration

        run = single()
        logs.append(run.steps["chatty"].logs())

    assert [len(re.findall(r"print line=\d", log)) for log in logs] == [10, 10]
