"""A pipeline process for the kill tests: it runs a pipeline again and again until killed.

Run as `python -m engine.churning_pipeline MARKER`; it creates the file MARKER once its
imports are done, then runs. Every run stores a large array, small JSON values and a value
from an isolated step, so a kill lands while files are written, rows are inserted, step
processes run or the schema is created. Every value is a function of the producing step's
parameters, so a test can tell a torn artifact from a whole one.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

from kstep import pipeline, step

ARRAY_SIZE = 1_000_000


@step(enable_cache=False)
def array(seed: int, size: int) -> np.ndarray:
    return np.full(size, seed, dtype=np.int64)


@step(enable_cache=False)
def listing(seed: int, length: int) -> list[int]:
    return [seed] * length


@step
def constant(seed: int) -> dict[str, int]:
    return {"seed": seed}


@step(enable_cache=False)
def total(values: np.ndarray) -> int:
    return int(values.sum())


@step(runtime="isolated", enable_cache=False)
def doubled(values: list[int]) -> list[int]:
    return [2 * value for value in values]


@pipeline
def churn(seed: int) -> None:
    total(array(seed, ARRAY_SIZE))
    doubled(listing(seed, 1000))
    constant(seed % 3)


def main() -> None:
    Path(sys.argv[1]).touch()
    for seed in itertools.count(1):
        churn(seed)


if __name__ == "__main__":
    main()
