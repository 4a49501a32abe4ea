"""Steps and pipelines of the operator benchmarks (`bench/cluster_operator.py`).

The operator's inline workers and the step pods import this module by name: the benchmark
puts this folder (not all of `bench/`) on their PYTHONPATH, as an image would carry a user's
code.
"""

from __future__ import annotations

from kstep import pipeline, step


@step
def inc(x: int) -> int:
    return x + 1


@step(runtime="isolated")
def inc_isolated(x: int) -> int:
    return x + 1


@step
def total(values: list[int]) -> int:
    return sum(values)


@pipeline(enable_cache=False)
def inline_chain(length: int = 20, start: int = 0) -> None:
    """`length` inline steps, each taking the previous one's output."""
    value = inc(start)
    for _ in range(length - 1):
        value = inc(value)


@pipeline(enable_cache=False)
def isolated_chain(length: int = 4, start: int = 0) -> None:
    """`length` isolated steps (one Job each), each taking the previous one's output."""
    value = inc_isolated(start)
    for _ in range(length - 1):
        value = inc_isolated(value)


@pipeline(enable_cache=False)
def wide(width: int = 1999) -> None:
    """`width` independent inline steps and one that sums all their outputs."""
    total([inc(i) for i in range(width)])
