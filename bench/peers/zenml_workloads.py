"""ZenML's side of the benchmark workloads (local orchestrator, default stack).

Run by `bench/run.py` from a scratch directory that holds a copy of this file: ZenML only
runs pipelines whose source lies under its source root, which `Client.initialize` (what
`zenml init` does) makes the scratch directory. The harness also sets `ZENML_CONFIG_PATH`
to the scratch directory and turns analytics off.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from _worker import (
    CHAIN_LENGTH,
    FAN_OUT,
    MAP_ITEMS,
    SUBMITS,
    big_array_protocol,
    emit,
    now,
    parse_args,
    time_calls,
    unique_start,
)
from zenml import pipeline, step
from zenml.client import Client


@step(enable_cache=False)
def increment(x: int) -> int:
    return x + 1


@pipeline(enable_cache=False)
def chain(start: int = 0) -> None:
    x = start
    for _ in range(CHAIN_LENGTH):
        x = increment(x)


@step(enable_cache=False)
def index_of(i: int) -> int:
    return i


@step(enable_cache=False)
def total(values: list[int]) -> int:
    return sum(values)


@pipeline(enable_cache=False)
def fan_out() -> None:
    total([index_of(i) for i in range(FAN_OUT)])


@step
def increment_cached(x: int) -> int:
    return x + 1


@pipeline(enable_cache=True)
def cached_chain(start: int = 0) -> None:
    x = start
    for _ in range(CHAIN_LENGTH):
        x = increment_cached(x)


@step(enable_cache=False)
def make_array(n_items: int) -> np.ndarray:
    return np.arange(n_items, dtype=np.float64)


@step(enable_cache=False)
def array_sum(array: np.ndarray) -> float:
    return float(array.sum())


@pipeline(enable_cache=False)
def big_array(n_items: int = 1) -> None:
    array_sum(make_array(n_items))


@pipeline(dynamic=True, enable_cache=False)
def dynamic_submits() -> None:
    total([index_of.submit(i) for i in range(SUBMITS)])


@step(enable_cache=False)
def items(n: int) -> list[int]:
    return list(range(n))


# ZenML maps only over step outputs (a plain list would reach every invocation whole), so
# the items come from a step, as they do in kstep's W6.
@pipeline(dynamic=True, enable_cache=False)
def dynamic_map(n: int = MAP_ITEMS) -> None:
    total(increment.map(x=items(n)))


def output_of(run_id: object, invocation: str) -> object:
    run = Client().get_pipeline_run(run_id)
    return run.steps[invocation].outputs["output"][0].load()


def main() -> None:
    args = parse_args()
    if not os.path.isdir(os.path.join(os.getcwd(), ".zen")):
        Client.initialize(root=pathlib.Path.cwd())

    if args.workload == "W1":
        runs = []
        calls = time_calls(lambda _: runs.append(chain()), args.calls)
        assert output_of(runs[-1].id, f"increment_{CHAIN_LENGTH}") == CHAIN_LENGTH
        emit(calls_s=calls)
    elif args.workload == "W2":
        runs = []
        calls = time_calls(lambda _: runs.append(fan_out()), args.calls)
        assert output_of(runs[-1].id, "total") == sum(range(FAN_OUT))
        emit(calls_s=calls)
    elif args.workload == "W3":
        start = unique_start()
        runs = []
        calls = time_calls(lambda _: runs.append(cached_chain(start=start)), args.calls)
        cached = []
        for run in runs:
            steps = Client().get_pipeline_run(run.id).steps.values()
            cached.append(sum(str(s.status) == "cached" for s in steps))
        assert cached[0] == 0 and all(n == CHAIN_LENGTH for n in cached[1:]), cached
        emit(calls_s=calls, cached_steps=cached)
    elif args.workload == "W4":

        def run_pipeline(n_items: int) -> float:
            run = big_array(n_items=n_items)
            return float(output_of(run.id, "array_sum"))

        root = Client().active_stack.artifact_store.path
        emit(**big_array_protocol(run_pipeline, root, args.mib, args.pairs))
    elif args.workload == "W5":
        runs = []
        calls = time_calls(lambda _: runs.append(dynamic_submits()), args.calls)
        assert output_of(runs[-1].id, "total") == sum(range(SUBMITS))
        emit(calls_s=calls)
    elif args.workload == "W6":
        runs = []
        start = now()
        try:
            calls = time_calls(lambda _: runs.append(dynamic_map()), args.calls)
        except Exception as error:  # a failed run is a result too: say after how long
            emit(error=f"run {len(runs) + 1} failed after {now() - start:.0f} s: {error!r}")
            return
        assert output_of(runs[-1].id, "total") == sum(range(1, MAP_ITEMS + 1))
        emit(calls_s=calls)
    else:
        raise SystemExit(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
