"""Steps and pipelines the operator tests run on the test control plane.

Job pods and inline workers import this module by name (PYTHONPATH names this folder), as
they would import a user's code baked into the image. Every step body appends a line to the
side-channel file in `KSTEP_TEST_SIDE_CHANNEL` (when set), so a test can count executions.
"""

from __future__ import annotations

import os
import time
from typing import Annotated

from kstep import Retry, get_step_context, pipeline, step


def mark(event: str) -> None:
    """Record that a step body did something, in the test's side channel."""
    path = os.environ.get("KSTEP_TEST_SIDE_CHANNEL")
    if not path:
        return
    context = get_step_context()
    with open(path, "a", encoding="utf-8") as channel:
        channel.write(f"{context.run_name} {context.invocation_id} {event}\n")


@step
def seed(n: int, salt: str = "") -> int:
    """`n`; `salt` keeps runs of different tests from sharing cache hits."""
    mark("start")
    print(f"seeding {n}")
    mark("end")
    return n


@step
def square(x: int) -> int:
    mark("start")
    mark("end")
    return x * x


@step(runtime="isolated")
def cube(x: int) -> int:
    mark("start")
    print(f"cubing {x} in pid {os.getpid()}")
    mark("end")
    return x * x * x


@step
def total(values: list[int]) -> Annotated[int, "total"]:
    mark("start")
    mark("end")
    return sum(values)


@step(runtime="isolated")
def nap(seconds: float) -> float:
    mark("start")
    time.sleep(seconds)
    mark("end")
    return seconds


@step(retry=Retry(max_retries=2, delay=0.2))
def flaky(fail_times: int) -> int:
    mark("start")
    attempt = get_step_context().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    mark("end")
    return attempt


@step(runtime="isolated", retry=Retry(max_retries=1, delay=0.1))
def broken(x: int) -> int:
    mark("start")
    raise ValueError(f"broken step got {x}")


@pipeline
def fan(n: int = 3, salt: str = "") -> None:
    """seed(i) -> (square, cube) for i in 1..n -> total."""
    outputs = []
    for i in range(1, n + 1):
        value = seed(i, salt)
        outputs.append(square(value))
        outputs.append(cube(value))
    total(outputs)


@pipeline
def retried(fail_times: int = 2) -> None:
    flaky(fail_times)


@pipeline
def branches(salt: str = "") -> None:
    """One branch fails (its dependant is skipped); the independent one completes."""
    bad = broken(1)
    square(bad)
    good = seed(5, salt)
    square(good)


@pipeline
def sleepy(seconds: float = 30.0) -> None:
    first = nap(seconds)
    square(first)


@pipeline
def chain(length: int = 5, salt: str = "") -> None:
    value = seed(1, salt)
    for _ in range(length - 1):
        value = square(value)


@pipeline(dynamic=True)
def dynamic_fan(n: int = 3, salt: str = "") -> None:
    """Inline squares by map, isolated cubes by submit; totals of both."""
    count = seed(n, salt).load()
    squares = square.map(x=list(range(1, count + 1)))
    cubes = [cube.submit(i) for i in range(1, count + 1)]
    total(squares)
    total(cubes)


@pipeline(dynamic=True)
def dynamic_branch(threshold: int = 2, salt: str = "") -> None:
    """Branches on a loaded value: only the taken branch's step runs."""
    value = seed(3, salt).load()
    if value > threshold:
        cube(value)
    else:
        square(value)


@step
def slow_add(x: int, pause: float = 0.3) -> int:
    mark("start")
    time.sleep(pause)
    mark("end")
    return x + 1


@pipeline(dynamic=True)
def dynamic_restartable(n: int = 4, salt: str = "") -> None:
    """A chain of slow inline steps, then isolated naps: long enough to be interrupted."""
    value = seed(n, salt)
    for _ in range(n):
        value = slow_add(value)
    naps = [nap.submit(0.2 * (i + 1)) for i in range(2)]
    square(value, after=naps)
