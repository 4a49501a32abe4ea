"""A static fan-out/fan-in pipeline: score shards of a data set in parallel, then combine.

The number of shards is a parameter, so the graph is known when the pipeline compiles: one
`score` invocation per shard (`score`, `score_2`, ...), all consuming the same `make_data`
output, and one `combine` invocation consuming all their outputs as a list. The last shard is
scored in its own pod with more memory, through `with_options`.

    kstep run examples/fan_out.py:fan_out -p shards=4
"""

from __future__ import annotations

from typing import Annotated

from kstep import Retry, pipeline, step


@step
def make_data(size: int) -> Annotated[list[float], "data"]:
    """A toy data set."""
    return [float(i % 11) for i in range(size)]


@step(retry=Retry(max_retries=1, delay=2.0, backoff=2.0))
def score(data: list[float], shard: int, shards: int) -> Annotated[float, "partial"]:
    """The sum of squares of one shard (every `shards`-th value, from `shard`)."""
    return sum(value * value for value in data[shard::shards])


@step(enable_cache=False)
def combine(partials: list[float]) -> Annotated[float, "total"]:
    """Add the shards' results up."""
    return sum(partials)


@step
def report(total: float) -> None:
    """Print the result."""
    print(f"sum of squares: {total}")


heavy_score = score.with_options(
    runtime="isolated",
    timeout=600,
    pod={"resources": {"requests": {"cpu": "1", "memory": "2Gi"}}},
)


@pipeline
def fan_out(size: int = 1000, shards: int = 3) -> None:
    """Score every shard in parallel, the last one in its own pod, then combine."""
    data = make_data(size)
    partials = [score(data, shard, shards) for shard in range(shards - 1)]
    partials.append(heavy_score(data, shards - 1, shards, id="score_heavy"))
    total = combine(partials)
    report(total, after=[data])


if __name__ == "__main__":
    run = fan_out()
    print(run.name, run.status, run.steps["combine"].outputs["total"].load())
