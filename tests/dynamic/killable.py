"""Dynamic pipelines that tests run in a process of their own, and kill with SIGKILL.

    python killable.py start PIPELINE    run `killable` or `outliving`
    python killable.py resume RUN        resume RUN with Client().resume_run

The directory above this one (`tests`) must be on PYTHONPATH, for `dynamic.steps`. Every step
body notes its start and end in the side channel the test names (see `dynamic.steps`).
"""

from __future__ import annotations

import os
import sys
import time

from dynamic.steps import isolated_sleep, note
from kstep import pipeline, step, unmapped

# Set to "reversed" to make `killable` call its squares in the opposite order.
ORDER_ENV = "DYNAMIC_TESTS_ORDER"


@step
def slow_square(x: int) -> int:
    note("start")
    time.sleep(0.3)
    note("end")
    return x * x


@step
def slow_add(a: int, b: int) -> int:
    note("start")
    time.sleep(0.3)
    note("end")
    return a + b


@step
def slow_total(values: list[int]) -> int:
    note("start")
    time.sleep(0.1)
    note("end")
    return sum(values)


@pipeline(dynamic=True, enable_cache=False)
def killable(n: int = 10) -> None:
    """Synchronous calls, then a map, then a reduce: sum(i * i + 1 for i in range(n))."""
    order = list(range(n))
    if os.environ.get(ORDER_ENV) == "reversed":
        order.reverse()
    squares = {i: slow_square(i) for i in order}
    sums = slow_add.map(a=[squares[i] for i in range(n)], b=unmapped(1))
    slow_total(sums)


@pipeline(dynamic=True, enable_cache=False)
def outliving(seconds: float = 1.0) -> None:
    """An isolated step whose process outlives a killed pipeline process."""
    isolated_sleep(seconds)
    slow_square(3)


def main(arguments: list[str]) -> None:
    command, target = arguments
    if command == "start":
        {"killable": killable, "outliving": outliving}[target]()
    else:
        from kstep import Client

        Client().resume_run(target)


if __name__ == "__main__":
    main(sys.argv[1:])
