"""A small training pipeline: load rows, split them, fit a line, evaluate it.

Run it on the embedded default (SQLite and a local directory under ~/.kstep):

    kstep run examples/quickstart.py:training -p rows=200
"""

from __future__ import annotations

import logging
import random
from typing import Annotated

from kstep import Retry, log_metadata, pipeline, step

logger = logging.getLogger(__name__)


@step
def load_rows(rows: int, seed: int) -> list[list[float]]:
    """Noisy points around y = 3x + 1."""
    generator = random.Random(seed)
    points = []
    for _ in range(rows):
        x = generator.uniform(0, 10)
        points.append([x, 3 * x + 1 + generator.gauss(0, 0.5)])
    logger.info("Loaded %d rows.", rows)
    return points


@step
def split(
    points: list[list[float]], test_share: float
) -> tuple[Annotated[list[list[float]], "train_set"], Annotated[list[list[float]], "test_set"]]:
    """Hold out the last share of the points for evaluation."""
    cut = int(len(points) * (1 - test_share))
    return points[:cut], points[cut:]


@step(retry=Retry(max_retries=2, delay=0.5))
def fit(train_set: list[list[float]]) -> Annotated[dict[str, float], "model"]:
    """Least squares fit of a line."""
    n = len(train_set)
    mean_x = sum(p[0] for p in train_set) / n
    mean_y = sum(p[1] for p in train_set) / n
    covariance = sum((p[0] - mean_x) * (p[1] - mean_y) for p in train_set)
    variance = sum((p[0] - mean_x) ** 2 for p in train_set)
    slope = covariance / variance
    print(f"fitted slope {slope:.3f}")
    return {"slope": slope, "intercept": mean_y - slope * mean_x}


@step
def evaluate(model: dict[str, float], test_set: list[list[float]]) -> Annotated[float, "mse"]:
    """Mean squared error on the held-out points."""
    errors = [(model["slope"] * x + model["intercept"] - y) ** 2 for x, y in test_set]
    mse = sum(errors) / len(errors)
    log_metadata({"mse": mse, "test_rows": len(test_set)})
    return mse


@pipeline
def training(rows: int = 100, seed: int = 7, test_share: float = 0.2) -> None:
    """Load, split, fit, evaluate."""
    points = load_rows(rows, seed)
    train_set, test_set = split(points, test_share)
    model = fit(train_set)
    evaluate(model, test_set)


if __name__ == "__main__":
    run = training()
    print(run.name, run.status, run.steps["evaluate"].outputs["mse"].load())
