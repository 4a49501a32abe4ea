"""A dynamic run of many invocations, measured in a process of its own.

    python scale.py N    maps one step over N items and sums the results; prints JSON

The measurement is the process's peak resident memory (`ru_maxrss`) and the run's wall time.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from kstep import pipeline, step


@step
def increment(x: int) -> int:
    return x + 1


@step
def total(values: list[int]) -> int:
    return sum(values)


@pipeline(dynamic=True, enable_cache=False)
def many(n: int) -> None:
    total(increment.map(x=list(range(n))))


def main(n: int) -> None:
    started = time.perf_counter()
    run = many(n)
    elapsed = time.perf_counter() - started
    # Kilobytes on Linux.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "status": str(run.status),
                "invocations": len(run.steps),
                "total": run.steps["total"].outputs["output"].load(),
                "seconds": round(elapsed, 2),
                "peak_rss_mb": round(peak / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
