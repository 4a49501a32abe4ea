"""What every benchmark worker process shares, whichever tool it measures.

A worker runs one workload of one tool in a fresh process and prints one line,
`RESULT <json>`, that the harness parses. This module needs only the standard library and
numpy, because it is imported inside each peer's own virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

CHAIN_LENGTH = 20
FAN_OUT = 50
# W5 to W7, dynamic pipelines: submitted steps, mapped items, invocations of the scale run.
SUBMITS = 50
MAP_ITEMS = 1000
SCALE_ITEMS = 10_000
MIB = 1024 * 1024

now = time.perf_counter


def parse_args() -> argparse.Namespace:
    """The options the harness passes to every worker."""
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("--calls", type=int, default=3, help="pipeline calls in this process")
    parser.add_argument("--mib", type=int, default=100, help="W4 array size")
    parser.add_argument("--pairs", type=int, default=2, help="W4 small/big pipeline pairs")
    return parser.parse_args()


def emit(**fields: Any) -> None:
    """Print the worker's one machine-readable line."""
    print("RESULT " + json.dumps(fields), flush=True)


def time_calls(call: Callable[[int], Any], calls: int) -> list[float]:
    """Seconds of each of `calls` pipeline calls, the first one cold in this process."""
    seconds = []
    for index in range(calls):
        start = now()
        call(index)
        seconds.append(now() - start)
    return seconds


def resident_bytes(field: str = "VmHWM") -> int:
    """This process's peak (VmHWM) or current (VmRSS) resident memory, in bytes.

    Falls back to `ru_maxrss` (KiB on Linux), a peak, where /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def unique_start() -> int:
    """A start value no earlier process used, so a first cached-workload call always misses."""
    return time.time_ns() % 1_000_000_007


# ------------------------------------------------------------------ W4


def raw_roundtrip(directory: str, n_items: int, repeats: int = 3) -> dict[str, list[float]]:
    """Time create, np.save, np.load and sum of the array, the work a W4 pipeline does.

    One untimed round first: on these VMs the first writes of fresh memory and of a fresh
    file are much slower than later ones, and the pipeline side is measured warm too.
    """
    import numpy as np

    path = os.path.join(directory, "raw-roundtrip.npy")
    timings: dict[str, list[float]] = {"create": [], "save": [], "load": [], "sum": []}
    for round_index in range(repeats + 1):
        t0 = now()
        array = np.arange(n_items, dtype=np.float64)
        t1 = now()
        np.save(path, array)
        t2 = now()
        loaded = np.load(path)
        t3 = now()
        total = float(loaded.sum())
        t4 = now()
        assert total == n_items * (n_items - 1) / 2
        del array, loaded
        os.unlink(path)
        if round_index == 0:
            continue
        timings["create"].append(t1 - t0)
        timings["save"].append(t2 - t1)
        timings["load"].append(t3 - t2)
        timings["sum"].append(t4 - t3)
    return timings


def drop_big_files(root: str, min_bytes: int = MIB) -> int:
    """Delete files of at least `min_bytes` under `root`; return how many."""
    dropped = 0
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.getsize(path) >= min_bytes:
                os.unlink(path)
                dropped += 1
    return dropped


def big_array_protocol(
    run_pipeline: Callable[[int], float], store_root: str, mib: int, pairs: int
) -> dict[str, Any]:
    """Run the W4 pipeline warm with a 1-item and a `mib` array, alternating, then raw numpy.

    `run_pipeline(n_items)` runs producer -> consumer and returns the consumer's sum.
    After each run, untimed, the big files under `store_root` are deleted, as the raw
    baseline deletes its file: on these VMs page-cache pages that were never touched before
    are several times slower to write than recycled ones, and keeping every 100 MiB artifact
    would make each pipeline run, but not the raw baseline, pay that.
    """
    n_items = mib * MIB // 8

    def timed(n: int) -> float:
        start = now()
        total = run_pipeline(n)
        seconds = now() - start
        assert total == n * (n - 1) / 2, (total, n)
        drop_big_files(store_root)
        return seconds

    # Untimed warm-up with both sizes: the first run pays one-off costs, and the first
    # 100 MiB written in a process lands on fresh memory.
    warmup = [timed(1), timed(n_items)]
    small: list[float] = []
    big: list[float] = []
    for _ in range(pairs):
        small.append(timed(1))
        big.append(timed(n_items))
    return {
        "bytes": n_items * 8,
        "warmup_s": warmup,
        "small_s": small,
        "big_s": big,
        "raw": raw_roundtrip(store_root, n_items),
    }


def median(values: list[float]) -> float:
    """The median (a thin alias, so workers need no statistics import of their own)."""
    return statistics.median(values)
