"""The benchmark workloads: how each is run, what it measures and kstep's target for it.

A workload turns one worker's RESULT line into named per-sample metrics. The harness takes
medians of those across samples; the headline metric goes into the results table and is
checked against kstep's target. Adding a workload means adding one `Workload` here and its
branch in each worker script.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _worker import CHAIN_LENGTH, FAN_OUT

Metrics = dict[str, float]


@dataclass(frozen=True)
class Target:
    """kstep's goal for a headline metric."""

    value: float
    lower_is_better: bool = True

    def met(self, measured: float) -> bool:
        return measured <= self.value if self.lower_is_better else measured >= self.value

    def describe(self, unit: str) -> str:
        return f"{'≤' if self.lower_is_better else '≥'} {self.value:g} {unit}"


@dataclass(frozen=True)
class Mode:
    """How much work one benchmark run does."""

    name: str
    rounds: int
    calls: int
    pairs: int


QUICK = Mode("quick", rounds=2, calls=2, pairs=1)
FULL = Mode("full", rounds=5, calls=4, pairs=3)


@dataclass(frozen=True)
class Workload:
    """One workload, run once per tool per round in a fresh process."""

    name: str
    title: str
    headline: str
    unit: str
    metrics: Callable[[dict[str, Any]], Metrics]
    target: Target | None = None
    # Which metric the "peer / kstep" ratio compares (a time, so a ratio > 1 means the
    # peer is slower); the headline unless it is not a time.
    ratio_metric: str = ""
    worker_args: Callable[[Mode], list[str]] = field(default=lambda mode: [])
    whole_process: bool = False

    @property
    def compared(self) -> str:
        return self.ratio_metric or self.headline


def _warm(calls: list[float]) -> float:
    return statistics.median(calls[1:]) if len(calls) > 1 else calls[0]


def _chain_metrics(result: dict[str, Any]) -> Metrics:
    calls = result["calls_s"]
    return {
        "warm_ms_per_step": _warm(calls) / CHAIN_LENGTH * 1000,
        "first_call_ms_per_step": calls[0] / CHAIN_LENGTH * 1000,
        "warm_run_s": _warm(calls),
        "first_call_s": calls[0],
    }


def _fan_out_metrics(result: dict[str, Any]) -> Metrics:
    calls = result["calls_s"]
    steps = FAN_OUT + 1
    return {
        "warm_run_s": _warm(calls),
        "warm_ms_per_step": _warm(calls) / steps * 1000,
        "first_call_s": calls[0],
        "first_call_ms_per_step": calls[0] / steps * 1000,
    }


def _cached_metrics(result: dict[str, Any]) -> Metrics:
    calls = result["calls_s"]
    return {
        "cached_run_ms": _warm(calls) * 1000,
        "first_cached_run_ms": calls[1] * 1000,
        "uncached_first_call_s": calls[0],
    }


def _big_array_metrics(result: dict[str, Any]) -> Metrics:
    # Pair each 100 MB run with the 1-item run just before it: the difference is what the
    # array costs end to end (create, save, load, sum) on top of the same orchestration.
    pairs = zip(result["big_s"], result["small_s"], strict=True)
    marginal = statistics.median(big - small for big, small in pairs)
    raw = {name: statistics.median(values) for name, values in result["raw"].items()}
    raw_io = raw["save"] + raw["load"]
    raw_all = raw_io + raw["create"] + raw["sum"]
    pipeline_io = marginal - raw["create"] - raw["sum"]
    megabytes = result["bytes"] / 1e6
    metrics = {
        "marginal_s": marginal,
        "raw_save_load_MBps": megabytes / raw_io,
        "raw_create_s": raw["create"],
        "raw_sum_s": raw["sum"],
        "small_run_s": statistics.median(result["small_s"]),
        "big_run_s": statistics.median(result["big_s"]),
    }
    # A tool whose run-to-run noise exceeds the array's cost can show a marginal at or below
    # zero; its shares are then undefined and left out of this sample.
    if pipeline_io > 0:
        metrics["share_of_raw_save_load_pct"] = 100 * raw_io / pipeline_io
        metrics["pipeline_save_load_MBps"] = megabytes / pipeline_io
    if marginal > 0:
        metrics["share_of_raw_end_to_end_pct"] = 100 * raw_all / marginal
    return metrics


def _import_metrics(result: dict[str, Any]) -> Metrics:
    metrics = {
        "wall_ms": result["wall_s"] * 1000,
        "interpreter_only_ms": result["startup_s"] * 1000,
    }
    if "import_only_s" in result:
        metrics["import_statement_ms"] = result["import_only_s"] * 1000
    return metrics


def _calls(mode: Mode) -> list[str]:
    return ["--calls", str(mode.calls)]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "import",
            "`python -c 'import <tool>'`, wall time of the fresh process",
            headline="wall_ms",
            unit="ms",
            metrics=_import_metrics,
            target=Target(150),
            whole_process=True,
        ),
        Workload(
            "W1",
            f"chain of {CHAIN_LENGTH} steps int -> int + 1, cache off; run time / {CHAIN_LENGTH}",
            headline="warm_ms_per_step",
            unit="ms/step",
            metrics=_chain_metrics,
            target=Target(1),
            worker_args=lambda mode: ["W1", *_calls(mode)],
        ),
        Workload(
            "W2",
            f"{FAN_OUT} independent steps returning their index + a fan-in sum, cache off",
            headline="warm_run_s",
            unit="s",
            metrics=_fan_out_metrics,
            worker_args=lambda mode: ["W2", *_calls(mode)],
        ),
        Workload(
            "W3",
            "W1 with caching on, rerun fully cached: time of the whole cached run",
            headline="cached_run_ms",
            unit="ms",
            metrics=_cached_metrics,
            target=Target(20),
            worker_args=lambda mode: ["W3", *_calls(mode)],
        ),
        Workload(
            "W4",
            "100 MiB float64 array from one step, summed by the next: save + load throughput "
            "as a share of raw np.save + np.load",
            headline="share_of_raw_save_load_pct",
            unit="%",
            metrics=_big_array_metrics,
            target=Target(80, lower_is_better=False),
            ratio_metric="marginal_s",
            worker_args=lambda mode: ["W4", "--pairs", str(mode.pairs)],
        ),
    ]
}
