"""The benchmark workloads: how each is run, what it measures and kstep's target for it.

A workload turns one worker's RESULT line into named per-sample metrics. The harness takes
medians of those across samples; the headline metric goes into the results table and is
checked against kstep's target. Adding a workload means adding one `Workload` here and its
branch in each worker script.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from _worker import CHAIN_LENGTH, FAN_OUT, MAP_ITEMS, SCALE_ITEMS, SUBMITS

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
    # The results file a full run of every workload of a suite writes (`results/<suite>`).
    suite: str = "foundation"
    # The tools that run it; None for all. A workload only kstep runs leaves the peers' cells
    # empty.
    tools: tuple[str, ...] | None = None
    # For a workload a peer needs minutes per run: the peers run it only in the first
    # `peer_rounds` rounds, with `peer_calls` pipeline calls per process.
    peer_rounds: int | None = None
    peer_calls: int | None = None

    def runs(self, tool: str, round_index: int) -> bool:
        """Whether `tool` runs this workload in round `round_index` (0-based)."""
        if self.tools is not None and tool not in self.tools:
            return False
        return tool == "kstep" or self.peer_rounds is None or round_index < self.peer_rounds

    def args_for(self, tool: str, mode: Mode) -> list[str]:
        """The worker's arguments for `tool`."""
        if tool != "kstep" and self.peer_calls is not None:
            mode = replace(mode, calls=self.peer_calls)
        return self.worker_args(mode)

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


def _run_metrics(steps: int) -> Callable[[dict[str, Any]], Metrics]:
    """Whole-run times of a run of `steps` step invocations, and those times per step."""

    def metrics(result: dict[str, Any]) -> Metrics:
        calls = result["calls_s"]
        return {
            "warm_run_s": _warm(calls),
            "warm_ms_per_step": _warm(calls) / steps * 1000,
            "first_call_s": calls[0],
            "first_call_ms_per_step": calls[0] / steps * 1000,
        }

    return metrics


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


def _scale_metrics(result: dict[str, Any]) -> Metrics:
    return {
        "peak_rss_MB": result["peak_rss_bytes"] / 1e6,
        "rss_before_run_MB": result["rss_before_bytes"] / 1e6,
        "run_s": result["run_s"],
        "ms_per_step": result["run_s"] / (SCALE_ITEMS + 1) * 1000,
    }


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
            metrics=_run_metrics(FAN_OUT + 1),
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
        Workload(
            "W5",
            f"dynamic pipeline: {SUBMITS} steps returning their index, each started with "
            f".submit(), + a sum step, cache off; run time / {SUBMITS + 1}",
            headline="warm_ms_per_step",
            unit="ms/step",
            metrics=_run_metrics(SUBMITS + 1),
            target=Target(2),
            worker_args=lambda mode: ["W5", *_calls(mode)],
            suite="dynamic",
        ),
        Workload(
            "W6",
            f"dynamic pipeline: a step returns a list of {MAP_ITEMS:,} ints, a step is "
            ".map()ped over it (x + 1 per item), a reduce step sums the map's results, cache "
            "off; time of the whole run",
            headline="warm_run_s",
            unit="s",
            metrics=_run_metrics(MAP_ITEMS + 2),
            target=Target(2),
            worker_args=lambda mode: ["W6", *_calls(mode)],
            suite="dynamic",
            tools=("kstep", "zenml"),
            # ZenML needs minutes for one run of 1,000 steps.
            peer_rounds=1,
            peer_calls=1,
        ),
        Workload(
            "W7",
            f"dynamic pipeline: a step .map()ped over a list of {SCALE_ITEMS:,} ints + a sum "
            "step, one run per process, cache off; peak resident memory of the process",
            headline="peak_rss_MB",
            unit="MB",
            metrics=_scale_metrics,
            target=Target(500),
            worker_args=lambda mode: ["W7"],
            suite="dynamic",
            tools=("kstep",),
        ),
    ]
}

SUITES = {
    "foundation": "foundation workloads",
    "dynamic": "dynamic pipelines on the local engine",
}
