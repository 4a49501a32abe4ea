"""Benchmarks of the operator on the test bed: transition latency, a 20-step inline chain,
throughput of many concurrent runs with the operator's peak memory, and object sizes.

    .venv/bin/python bench/cluster_operator.py          # full: bench/results/operator.{md,json}
    .venv/bin/python bench/cluster_operator.py --quick  # smaller: bench/.work/operator-quick.*

Everything runs on this machine: the test bed's kube-apiserver, etcd and
kube-controller-manager, its kubelet stand-in (pods are local processes), a throwaway
Postgres and an S3 server, and the operator with its inline executor as two processes, as in
the operator tests (`tests/operator/operator_harness.py`). Every process started here is
stopped by its PID at the end.

Never part of the test suite: on a shared machine a timing only measures the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# `_testbed` comes first: it puts the workloads' folder and the test harness on sys.path.
import _testbed as bed
import operator_workloads as workloads
from _testbed import (
    Cluster,
    RunWatch,
    cpu_seconds,
    cpu_used,
    machine,
    operator_on,
    peak_rss,
    quantiles,
    test_bed,
)
from _testbed import parse_time as _time

BENCH = bed.BENCH

ETCD_LIMIT = int(1.5 * 1024 * 1024)


# ------------------------------------------------------------------ observing runs


def create(cluster: Cluster, pipeline: Any, parameters: dict[str, Any], **options: Any) -> str:
    return cluster.create(cluster.render(pipeline, parameters, **options))


def transitions(cluster: Cluster, run_names: list[str]) -> list[float]:
    """Seconds from each step's last upstream finishing to its own StepRun's start.

    Both times are the operator's: the upstream StepRun's `status.completionTime` (written
    when it settles the step) and the downstream's `status.startTime` (written once its
    StepRun exists and its attempt was handed to the executor or its Job created).
    """
    found = []
    for name in run_names:
        step_runs = cluster.step_runs(name)
        for step_run in step_runs.values():
            upstream = step_run["spec"].get("upstream") or []
            start = (step_run.get("status") or {}).get("startTime")
            if not upstream or not start:
                continue
            ends = [step_runs[u]["status"]["completionTime"] for u in upstream]
            found.append((_time(start) - max(_time(e) for e in ends)).total_seconds())
    return found


def histogram(cluster: Cluster, name: str) -> dict[float, float]:
    """Cumulative bucket counts of one of the operator's histograms (upper bound -> count)."""
    return {
        float(dict(labels)["le"]): value
        for (sample, labels), value in cluster.metrics().items()
        if sample == f"{name}_bucket"
    }


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """A quantile of the observations between two readings, interpolated in its bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            share = (rank - below) / max(cumulative - below, 1e-9)
            return lower + share * (bound - lower)
        lower, below = bound, cumulative
    return lower


# ------------------------------------------------------------------ workloads


def bench_chain(cluster: Cluster, watch: RunWatch, rounds: int) -> dict[str, Any]:
    """A 20-step inline chain, one run at a time: from the create call to the end seen."""
    durations, operator_durations, names = [], [], []
    for i in range(rounds):
        began = time.monotonic()
        name = create(cluster, workloads.inline_chain, {"length": 20, "start": 1000 * i})
        watch.wait([name], timeout=120)
        durations.append(watch.ended[name] - began)
        status = cluster.run(name)["status"]
        operator_durations.append(
            (_time(status["completionTime"]) - _time(status["startTime"])).total_seconds()
        )
        names.append(name)
    return {
        "end_to_end_s": quantiles(durations),
        "operator_start_to_completion_s": quantiles(operator_durations),
        "runs": names,
    }


def bench_isolated_chain(cluster: Cluster, watch: RunWatch, rounds: int) -> dict[str, Any]:
    """A 4-step chain of isolated steps (one Job each), one run at a time."""
    durations, names = [], []
    for i in range(rounds):
        began = time.monotonic()
        name = create(cluster, workloads.isolated_chain, {"length": 4, "start": 1000 * i})
        watch.wait([name], timeout=240)
        durations.append(watch.ended[name] - began)
        names.append(name)
    return {"end_to_end_s": quantiles(durations), "runs": names}


def bench_throughput(cluster: Cluster, watch: RunWatch, runs: int, length: int) -> dict[str, Any]:
    """`runs` runs of a `length`-step inline chain created at once; StepRuns ended per second."""
    manifests = [
        cluster.render(workloads.inline_chain, {"length": length, "start": 100_000 + 100 * i})
        for i in range(runs)
    ]
    began = time.monotonic()
    names = [cluster.create(manifest) for manifest in manifests]
    created = time.monotonic()
    watch.wait(names, timeout=1200)
    last = max(watch.ended[n] for n in names)
    steps = runs * length
    return {
        "runs": runs,
        "steps": steps,
        "create_calls_s": created - began,
        "wall_s": last - began,
        "steps_per_s": steps / (last - began),
        "run_names": names,
    }


def bench_sizes(cluster: Cluster, watch: RunWatch, width: int) -> dict[str, Any]:
    """Sizes of the objects of a `width + 1`-step run (fan-out and one fan-in step)."""
    began = time.monotonic()
    name = create(cluster, workloads.wide, {"width": width}, parallelism=64)
    watch.wait([name], timeout=1800)
    wall = watch.ended[name] - began
    run = cluster.run(name)
    step_runs = cluster.step_runs(name)

    def size(body: dict[str, Any]) -> int:
        return len(json.dumps(body, separators=(",", ":")).encode())

    largest = max(step_runs.values(), key=size)
    return {
        "steps": len(step_runs),
        "wall_s": wall,
        "pipeline_run_bytes": size(run),
        "largest_step_run_bytes": size(largest),
        "largest_step_run": largest["spec"]["invocationId"],
        "median_step_run_bytes": statistics.median(size(s) for s in step_runs.values()),
        "etcd_limit_bytes": ETCD_LIMIT,
    }


# ------------------------------------------------------------------ report


def markdown(results: dict[str, Any]) -> str:
    facts = results["machine"]
    chain = results["chain"]
    iso = results["isolated_chain"]
    tp = results["throughput"]
    memory = results["memory_after_throughput"]
    sizes = results["sizes"]
    idle = results["transition_latency"]["idle_inline"]
    iso_t = results["transition_latency"]["idle_isolated"]
    loaded = results["transition_latency"]["under_load"]
    histo = results["transition_latency"]["operator_histogram"]

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms"

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    lines = [
        "# Operator benchmarks",
        "",
        f"{facts['date_utc']} UTC, commit {facts['kstep_commit']}, {facts['cores']} cores "
        f"({facts.get('cpu', '?')}), Python {facts['python']}, load average at start "
        f"{', '.join(f'{v:.1f}' for v in facts['load_average_at_start'])} "
        f"(at the end {', '.join(f'{v:.1f}' for v in results['load_average_at_end'])}).",
        "",
        "Everything on one machine: kube-apiserver, etcd, kube-controller-manager, the kubelet "
        "stand-in (pods are local processes), Postgres, the S3 server, the operator and its "
        "inline executor. Produced by `bench/cluster_operator.py`; method below the table.",
        "",
        "| what | p50 | p99 | goal | |",
        "|---|---|---|---|---|",
        f"| transition latency, inline chain, one run at a time (n={idle['n']}) | "
        f"{ms(idle['p50'])} | {ms(idle['p99'])} | p50 <= 50 ms, p99 <= 250 ms | "
        f"{verdict(idle['p50'] <= 0.05 and idle['p99'] <= 0.25)} |",
        f"| transition latency, isolated chain (n={iso_t['n']}) | {ms(iso_t['p50'])} | "
        f"{ms(iso_t['p99'])} | | |",
        f"| transition latency, {tp['runs']} concurrent runs (n={loaded['n']}) | "
        f"{ms(loaded['p50'])} | {ms(loaded['p99'])} | | |",
        f"| same, operator histogram, all of the above (n={histo['n']:.0f}) | "
        f"{ms(histo['p50'])} | {ms(histo['p99'])} | | |",
        f"| 20-step inline chain, create to end seen (n={chain['end_to_end_s']['n']}) | "
        f"{chain['end_to_end_s']['p50']:.2f} s | {chain['end_to_end_s']['p99']:.2f} s | "
        f"<= 2 s | {verdict(chain['end_to_end_s']['p50'] <= 2)} |",
        f"| 4-step isolated chain, create to end seen (n={iso['end_to_end_s']['n']}) | "
        f"{iso['end_to_end_s']['p50']:.2f} s | {iso['end_to_end_s']['p99']:.2f} s | | |",
        f"| throughput: {tp['runs']} concurrent {tp['steps'] // tp['runs']}-step runs | "
        f"{tp['steps_per_s']:.1f} steps/s | | >= 100/s | {verdict(tp['steps_per_s'] >= 100)} |",
        f"| peak RSS after the throughput run: operator / executor / "
        f"{memory['inline_worker_count']:.0f} inline worker(s) | "
        f"{memory['operator']:.0f} / {memory['executor']:.0f} / "
        f"{memory['inline_workers']:.0f} MiB | | | |",
        f"| largest PipelineRun, {sizes['steps']}-step run | "
        f"{sizes['pipeline_run_bytes'] / 1024:.0f} KiB | | far below 1.5 MiB | "
        f"{verdict(sizes['pipeline_run_bytes'] < ETCD_LIMIT / 4)} |",
        f"| largest StepRun (`{sizes['largest_step_run']}`), same run | "
        f"{sizes['largest_step_run_bytes'] / 1024:.0f} KiB | | far below 1.5 MiB | "
        f"{verdict(sizes['largest_step_run_bytes'] < ETCD_LIMIT / 4)} |",
        f"| {sizes['steps']}-step run (parallelism 64), create to end seen | "
        f"{sizes['wall_s']:.1f} s | | | |",
        "",
    ]
    cpu = results["cpu_seconds_during_throughput"]
    total_cpu = sum(cpu.values())
    per_step = 1000 * total_cpu / tp["steps"]
    lines += [
        f"During the throughput run our processes used {total_cpu:.1f} CPU seconds in "
        f"{tp['wall_s']:.1f} s of wall time on {facts['cores']} cores ({per_step:.0f} ms of "
        "CPU per step), besides the other work on the machine:",
        "",
        "| process | CPU s | share | per step |",
        "|---|---|---|---|",
    ]
    for name, used in sorted(cpu.items(), key=lambda item: -item[1]):
        lines.append(
            f"| {name} | {used:.1f} | {100 * used / total_cpu:.0f} % | "
            f"{1000 * used / tp['steps']:.1f} ms |"
        )
    lines += ["", METHOD]
    return "\n".join(lines) + "\n"


METHOD = """## Method

- **Transition latency**: for every StepRun with upstream steps, its `status.startTime`
  minus the latest `status.completionTime` of its upstream StepRuns. Both are written by
  the operator with microseconds: the upstream's when it records the step's end, the
  downstream's once its StepRun exists and its attempt went to the inline executor (or its
  Job was created), so the figure includes creating the StepRun and starting the attempt.
  The operator's own histogram `kstep_transition_latency_seconds` stops just before the
  StepRun is created; its quantiles are interpolated within its buckets, so they are coarse.
- **20-step inline chain**: the wall time from the create request of the PipelineRun to the
  watch event that shows it completed, seen by the benchmark; one run at a time, caching
  off, so every step executes.
- **Throughput**: N runs of a 5-step inline chain created one after another as fast as the
  API server takes them; the wall time from the first create request to the last run's
  completion event; steps per second = StepRuns completed / wall time.
- **Peak memory**: `VmHWM` (peak resident set) of each process after the throughput run.
- **Object sizes**: the JSON of the objects as the API server returns them (etcd stores a
  custom resource as that JSON), for a run of `width` independent steps plus one step that
  takes all their outputs as a list (the largest StepRun).
- **CPU**: user + system time of the benchmark's own process tree by command line, read
  from `/proc` before and after the throughput run. The kubelet stand-in runs inside the
  benchmark process.
- The operator runs with its defaults (8 reconcile threads, sweep every 2 s), its inline
  executor as a separate process, as in its pod. Profiles of the reconciles come from
  `KSTEP_BENCH_PROFILE=<file>`, which sets the operator's `KSTEP_OPERATOR_PROFILE_PATH`.
"""


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller runs")
    parser.add_argument("--output", help="path without extension for the results")
    parser.add_argument("--only", help="comma-separated: chain,isolated,throughput,sizes")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else {"chain", "isolated", "throughput", "sizes"}
    rounds = 3 if args.quick else 10
    concurrent = 50 if args.quick else 200
    width = 499 if args.quick else 1999
    output = (
        Path(args.output)
        if args.output
        else (BENCH / ".work" / "operator-quick" if args.quick else BENCH / "results" / "operator")
    )
    results: dict[str, Any] = {"machine": machine()}
    run_dir = Path(tempfile.mkdtemp(prefix="kstep-bench-operator-"))
    print(f"run directory: {run_dir}", flush=True)

    with (
        test_bed(run_dir) as (access, postgres_url, s3),
        operator_on(access, postgres_url, s3, run_dir) as cluster,
    ):
        watch = RunWatch(cluster)
        try:
            latency_before = histogram(cluster, "kstep_transition_latency_seconds")
            if "chain" in only:
                print("20-step inline chains...", flush=True)
                results["chain"] = bench_chain(cluster, watch, rounds)
            if "isolated" in only:
                print("4-step isolated chains...", flush=True)
                results["isolated_chain"] = bench_isolated_chain(
                    cluster, watch, max(2, rounds // 3)
                )
            if "throughput" in only:
                print(f"{concurrent} concurrent 5-step runs...", flush=True)
                cpu_before = cpu_seconds()
                results["throughput"] = bench_throughput(cluster, watch, concurrent, 5)
                results["cpu_seconds_during_throughput"] = cpu_used(cpu_before, cpu_seconds())
                results["memory_after_throughput"] = peak_rss(cluster)
            latency_after = histogram(cluster, "kstep_transition_latency_seconds")
            if "sizes" in only:
                print(f"a {width + 1}-step run...", flush=True)
                results["sizes"] = bench_sizes(cluster, watch, width)
                results["memory_after_sizes"] = peak_rss(cluster)
            results["transition_latency"] = {
                "idle_inline": quantiles(
                    transitions(cluster, results.get("chain", {}).get("runs", []))
                ),
                "idle_isolated": quantiles(
                    transitions(cluster, results.get("isolated_chain", {}).get("runs", []))
                ),
                "under_load": quantiles(
                    transitions(cluster, results.get("throughput", {}).get("run_names", []))
                ),
                "operator_histogram": {
                    "n": latency_after.get(float("inf"), 0) - latency_before.get(float("inf"), 0),
                    "p50": histogram_quantile(latency_before, latency_after, 0.5),
                    "p99": histogram_quantile(latency_before, latency_after, 0.99),
                },
            }
            results["reconcile_errors"] = {
                kind: cluster.metric("kstep_reconcile_errors_total", kind=kind)
                for kind in ("run", "step")
            }
        finally:
            watch.stop()
            results["operator_log_tail"] = cluster.processes.log_text()[-3000:]
    results["load_average_at_end"] = os.getloadavg()

    output.parent.mkdir(parents=True, exist_ok=True)
    for key in ("chain", "isolated_chain"):
        results.get(key, {}).pop("runs", None)
    results.get("throughput", {}).pop("run_names", None)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if {"chain", "isolated", "throughput", "sizes"} <= only:
        output.with_suffix(".md").write_text(markdown(results))
    print(
        json.dumps(
            {k: v for k, v in results.items() if k != "operator_log_tail"}, indent=1, default=str
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
