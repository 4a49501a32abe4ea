"""Steps and pipelines the operator tests run on the test control plane.

Job pods and inline workers import this module by name (PYTHONPATH names this folder), as
they would import a user's code baked into the image. Every step body appends a line to the
side-channel file in `KSTEP_TEST_SIDE_CHANNEL` (when set), so a test can count executions.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from kstep import Retry, get_step_context, pipeline, step, unmapped


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
    print(f"napping {seconds} s", flush=True)
    time.sleep(seconds)
    mark("end")
    return seconds


@step(runtime="isolated", retry=Retry(max_retries=1, delay=0.1))
def nap_once(seconds: float) -> float:
    """Sleeps `seconds` in its first attempt only, so that its retry ends at once."""
    mark("start")
    if get_step_context().attempt == 1:
        time.sleep(seconds)
    mark("end")
    return seconds


@step
def environment() -> dict[str, Any]:
    """The environment an inline step sees, and which Kubernetes credentials it finds."""
    from kubernetes import config

    mark("start")
    found = []
    for name, load in (
        ("in-cluster", config.load_incluster_config),
        ("kubeconfig", config.load_kube_config),
    ):
        try:
            load()
            found.append(name)
        except config.ConfigException:
            pass
    mark("end")
    return {"variables": dict(os.environ), "kubernetes": found}


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


@pipeline(enable_cache=False)
def nap_beside_a_branch(seconds: float = 30.0) -> None:
    """A long isolated nap and its dependant, beside an independent short branch."""
    square(nap(seconds))
    square(seed(2))


@pipeline(enable_cache=False, execution_mode="fail_fast")
def two_naps(seconds: float = 30.0) -> None:
    """Two long isolated naps side by side; a failure of one stops the other."""
    square(nap(seconds))
    square(nap(seconds))


@pipeline(enable_cache=False)
def nap_retried(seconds: float = 30.0) -> None:
    square(nap_once(seconds))


@pipeline(enable_cache=False)
def inspect_environment() -> None:
    environment()


@pipeline(enable_cache=False)
def mixed(n: int = 1) -> None:
    """Inline and isolated steps, with a fan-out and a fan-in."""
    value = seed(n)
    total([cube(value), square(value)])


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


@step
def numbers(n: int) -> list[int]:
    mark("start")
    mark("end")
    return list(range(1, n + 1))


@step
def pair(x: int) -> tuple[Annotated[int, "low"], Annotated[int, "high"]]:
    mark("start")
    mark("end")
    return x - 1, x + 1


@step
def add(a: int, b: int) -> int:
    mark("start")
    mark("end")
    return a + b


@pipeline(dynamic=True)
def dynamic_scenarios(salt: str = "") -> None:
    """Every dynamic feature, with inline and isolated steps mixed."""
    count = seed(3, salt).load()
    looped = [square(i) for i in range(count)]  # loop of sync calls
    mapped = square.map(x=numbers(count))  # map over a step output
    reduced = total(mapped)  # reduce, never loaded here
    cubes = [cube.submit(i) for i in range(count)]  # isolated futures
    grid = add.product(a=[1, 2], b=[10, 20])  # product
    shifted = add.map(a=[1, 2, 3], b=unmapped(100))  # unmapped
    lows, highs = pair.map(x=[5, 6]).unpack()  # unpack
    middle = square(numbers(count).chunk(1))  # chunk
    isolated_square = square.with_options(runtime="isolated")  # per-call options
    total([*looped, reduced, *cubes, isolated_square(4)])
    total(grid)
    total(shifted)
    total(lows)
    total(highs)
    if reduced.load() > 10:  # branching
        cube(middle)
    else:
        square(middle)


@pipeline(dynamic=True)
def dynamic_long_nap(seconds: float = 60.0, salt: str = "") -> None:
    """Waits on an isolated step a test interrupts."""
    seed(1, salt)
    nap.submit(seconds).result()


@step
def fatal(salt: str = "") -> int:
    """Ends the whole process it runs in, as an out-of-memory kill would."""
    os._exit(9)


@pipeline(dynamic=True)
def dynamic_dying_in_a_step(salt: str = "") -> None:
    """Its orchestrator dies inside an inline step, every time it runs it."""
    seed(1, salt)
    fatal(salt)


@pipeline(dynamic=True)
def dynamic_crashing(salt: str = "") -> None:
    """Its orchestrator process dies every time, as on a node that keeps failing."""
    seed(1, salt)
    os._exit(9)
