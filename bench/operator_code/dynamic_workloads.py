"""Dynamic pipelines of the cluster benchmark (`bench/cluster_dynamic.py`).

The orchestrator pod, the step pods and the inline workers import this module by name from
this folder, which the benchmark puts on their PYTHONPATH as an image would carry a user's
code. Each pipeline times itself inside the orchestrator and prints one `KSTEP-BENCH` line
of JSON, which lands in the run's log: the orchestrator's own view, without its pod's start.
"""

from __future__ import annotations

import json
import time
from typing import Any

from operator_workloads import inc, inc_isolated, total

from kstep import pipeline, step

MARK = "KSTEP-BENCH "


class _Clock:
    """Wall, monotonic and process CPU time (every thread of the orchestrator) from now."""

    def __init__(self) -> None:
        self.wall = time.time()
        self.began = time.perf_counter()
        self.cpu = time.process_time()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter() - self.began

    def report(self, **facts: Any) -> None:
        facts.update(
            function_start_wall=self.wall,
            function_s=time.perf_counter() - self.began,
            function_cpu_s=time.process_time() - self.cpu,
            marks=self.marks,
        )
        print(MARK + json.dumps(facts), flush=True)


@pipeline(dynamic=True, enable_cache=False)
def isolated_fan(width: int = 100, start: int = 0) -> None:
    """`width` isolated steps submitted in a loop (one Job each), then an inline sum."""
    clock = _Clock()
    futures = [inc_isolated.submit(start + i) for i in range(width)]
    clock.mark("submitted")
    total(futures)
    clock.report(width=width)


@pipeline(dynamic=True, enable_cache=False)
def inline_chain(length: int = 1000, start: int = 0) -> None:
    """`length` synchronous inline calls, each taking the previous one's output."""
    clock = _Clock()
    value = inc(start)
    for _ in range(length - 1):
        value = inc(value)
    clock.report(length=length)


@pipeline(dynamic=True, enable_cache=False)
def inline_fan(width: int = 1000, start: int = 0) -> None:
    """`width` inline calls submitted at once, each awaited (no reduce: its 1,000 inputs
    would be loaded one by one and would measure the artifact store)."""
    clock = _Clock()
    futures = [inc.submit(start + i) for i in range(width)]
    clock.mark("submitted")
    for future in futures:
        future.result()
    clock.report(width=width)


@step
def grow(data: bytes) -> bytes:
    """A new 4 KiB value from the previous one: over the size kept in a metadata row, so
    every output is an S3 object."""
    return bytes((byte + 1) % 256 for byte in data)


@step
def blob(start: int) -> bytes:
    """4 KiB to start `inline_chain_objects` from."""
    return bytes([start % 256]) * 4096


@pipeline(dynamic=True, enable_cache=False)
def inline_chain_objects(length: int = 1000, start: int = 0) -> None:
    """`length` synchronous inline calls like `inline_chain`, each output an S3 object."""
    clock = _Clock()
    value = blob(start)
    for _ in range(length - 1):
        value = grow(value)
    clock.report(length=length)
