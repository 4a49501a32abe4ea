"""Prefect's side of the benchmark workloads (flows of tasks, the embedded default).

Run by `bench/run.py` with a fresh `PREFECT_HOME` and no `PREFECT_API_URL`, so the first
flow call starts Prefect's ephemeral API server on a fresh SQLite database, as it does for
a new user. Analytics are off. Tasks run in the flow's process; `.submit` uses Prefect's
default thread pool task runner.
"""

from __future__ import annotations

import os

import numpy as np
from _worker import (
    CHAIN_LENGTH,
    FAN_OUT,
    SUBMITS,
    big_array_protocol,
    emit,
    parse_args,
    time_calls,
    unique_start,
)
from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

EXECUTED: list[str] = []


@task(cache_policy=NO_CACHE, persist_result=False)
def increment(x: int) -> int:
    return x + 1


@flow
def chain(start: int = 0) -> int:
    x = start
    for _ in range(CHAIN_LENGTH):
        x = increment(x)
    return x


@task(cache_policy=NO_CACHE, persist_result=False)
def index_of(i: int) -> int:
    return i


@task(cache_policy=NO_CACHE, persist_result=False)
def total(values: list[int]) -> int:
    return sum(values)


@flow
def fan_out() -> int:
    return total([index_of.submit(i) for i in range(FAN_OUT)])


# Prefect has no separate dynamic mode: every flow runs its function at run time, so W5 is
# W2's flow, with the size of W5.
@flow
def dynamic_submits() -> int:
    return total([index_of.submit(i) for i in range(SUBMITS)])


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def increment_cached(x: int) -> int:
    EXECUTED.append("increment_cached")
    return x + 1


@flow
def cached_chain(start: int = 0) -> int:
    x = start
    for _ in range(CHAIN_LENGTH):
        x = increment_cached(x)
    return x


# The array is persisted, as an artifact is in kstep and ZenML; the consumer receives the
# producer's in-memory value, which is how Prefect passes data between tasks of a flow.
@task(cache_policy=NO_CACHE, persist_result=True)
def make_array(n_items: int) -> np.ndarray:
    return np.arange(n_items, dtype=np.float64)


@task(cache_policy=NO_CACHE, persist_result=False)
def array_sum(array: np.ndarray) -> float:
    return float(array.sum())


@flow
def big_array(n_items: int = 1) -> float:
    return array_sum(make_array(n_items))


def main() -> None:
    args = parse_args()
    if args.workload == "W1":
        results = []
        calls = time_calls(lambda _: results.append(chain()), args.calls)
        assert results[-1] == CHAIN_LENGTH, results
        emit(calls_s=calls)
    elif args.workload == "W2":
        results = []
        calls = time_calls(lambda _: results.append(fan_out()), args.calls)
        assert results[-1] == sum(range(FAN_OUT)), results
        emit(calls_s=calls)
    elif args.workload == "W3":
        start = unique_start()
        executed = []

        def call(_: int) -> None:
            before = len(EXECUTED)
            assert cached_chain(start=start) == start + CHAIN_LENGTH
            executed.append(len(EXECUTED) - before)

        calls = time_calls(call, args.calls)
        cached = [CHAIN_LENGTH - n for n in executed]
        assert cached[0] == 0 and all(n == CHAIN_LENGTH for n in cached[1:]), cached
        emit(calls_s=calls, cached_steps=cached)
    elif args.workload == "W4":
        directory = os.environ["PREFECT_LOCAL_STORAGE_PATH"]
        os.makedirs(directory, exist_ok=True)
        emit(**big_array_protocol(big_array, directory, args.mib, args.pairs))
    elif args.workload == "W5":
        results = []
        calls = time_calls(lambda _: results.append(dynamic_submits()), args.calls)
        assert results[-1] == sum(range(SUBMITS)), results
        emit(calls_s=calls)
    else:
        raise SystemExit(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
