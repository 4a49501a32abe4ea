"""A dynamic pipeline: its function runs at run time, so it can branch on step outputs.

kstep run examples/dynamic_tuning.py:tuning -p candidates='[0.01, 0.1, 1.0]'
"""

from __future__ import annotations

from typing import Annotated

from kstep import pipeline, step, unmapped


@step
def make_data(size: int) -> list[float]:
    """A toy signal."""
    return [float(i % 7) for i in range(size)]


@step
def score(data: list[float], rate: float) -> Annotated[float, "score"]:
    """A toy objective with its best value near rate = 0.1."""
    mean = sum(data) / len(data)
    return abs(mean * rate - 0.3)


@step(runtime="isolated")
def refine(rate: float) -> float:
    """Refine the best candidate in its own process."""
    return rate * 1.05


@pipeline(dynamic=True)
def tuning(candidates: list[float] = [0.01, 0.1, 1.0], size: int = 1000) -> None:  # noqa: B006
    """Score every candidate in parallel, then refine the best one if it is good enough."""
    data = make_data(size)
    scores = score.map(data=unmapped(data), rate=candidates)
    values = scores.load()
    best = candidates[values.index(min(values))]
    if min(values) < 1.0:
        refine(best)


if __name__ == "__main__":
    print(tuning().status)
