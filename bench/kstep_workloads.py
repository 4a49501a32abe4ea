"""kstep's side of the benchmark workloads: one workload per process, one RESULT line.

Run by `bench/run.py` with a fresh `KSTEP_HOME`; runnable alone for profiling, e.g.
`KSTEP_HOME=$(mktemp -d) python bench/kstep_workloads.py W1 --calls 5`.
"""

from __future__ import annotations

import numpy as np
from _worker import (
    CHAIN_LENGTH,
    FAN_OUT,
    MAP_ITEMS,
    SCALE_ITEMS,
    SUBMITS,
    big_array_protocol,
    emit,
    now,
    parse_args,
    resident_bytes,
    time_calls,
    unique_start,
)

from kstep import Client, pipeline, step


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


@pipeline(dynamic=True, enable_cache=False)
def dynamic_map(n: int = MAP_ITEMS) -> None:
    total(increment.map(x=items(n)))


# The scale run maps over a plain list: 10,000 items need no producing step to be split.
@pipeline(dynamic=True, enable_cache=False)
def dynamic_scale(n: int = SCALE_ITEMS) -> None:
    total(increment.map(x=list(range(n))))


def main() -> None:
    args = parse_args()
    if args.workload == "W1":
        runs = []
        calls = time_calls(lambda _: runs.append(chain()), args.calls)
        last = runs[-1].steps[f"increment_{CHAIN_LENGTH}"].outputs["output"].load()
        assert last == CHAIN_LENGTH, last
        emit(calls_s=calls, steps=len(runs[-1].steps))
    elif args.workload == "W2":
        runs = []
        calls = time_calls(lambda _: runs.append(fan_out()), args.calls)
        assert runs[-1].steps["total"].outputs["output"].load() == sum(range(FAN_OUT))
        emit(calls_s=calls, steps=len(runs[-1].steps))
    elif args.workload == "W3":
        start = unique_start()
        runs = []
        calls = time_calls(lambda _: runs.append(cached_chain(start=start)), args.calls)
        cached = [sum(s.status == "cached" for s in run.steps.values()) for run in runs]
        assert cached[0] == 0 and all(n == CHAIN_LENGTH for n in cached[1:]), cached
        emit(calls_s=calls, cached_steps=cached)
    elif args.workload == "W4":

        def run_pipeline(n_items: int) -> float:
            run = big_array(n_items=n_items)
            return float(run.steps["array_sum"].outputs["output"].load())

        root = Client().stores.artifacts.root
        emit(**big_array_protocol(run_pipeline, root, args.mib, args.pairs))
    elif args.workload == "W5":
        runs = []
        calls = time_calls(lambda _: runs.append(dynamic_submits()), args.calls)
        assert runs[-1].steps["total"].outputs["output"].load() == sum(range(SUBMITS))
        emit(calls_s=calls, steps=len(runs[-1].steps))
    elif args.workload == "W6":
        runs = []
        calls = time_calls(lambda _: runs.append(dynamic_map()), args.calls)
        assert runs[-1].steps["total"].outputs["output"].load() == sum(range(1, MAP_ITEMS + 1))
        emit(calls_s=calls, steps=len(runs[-1].steps))
    elif args.workload == "W7":
        # One run per process, so the process's peak is this run's (plus imports).
        before = resident_bytes("VmRSS")
        start = now()
        run = dynamic_scale()
        seconds = now() - start
        peak = resident_bytes()
        assert run.steps["total"].outputs["output"].load() == sum(range(1, SCALE_ITEMS + 1))
        emit(run_s=seconds, peak_rss_bytes=peak, rss_before_bytes=before, steps=len(run.steps))
    else:
        raise SystemExit(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
