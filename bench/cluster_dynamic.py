"""Benchmark of dynamic pipelines on a cluster: isolated steps fanned out as Jobs, and the
per-step cost of inline steps in the orchestrator pod.

    .venv/bin/python bench/cluster_dynamic.py          # full: bench/results/cluster-dynamic.*
    .venv/bin/python bench/cluster_dynamic.py --quick  # bench/.work/cluster-dynamic-quick.*

Everything runs on this machine, as for `bench/cluster_operator.py` (whose test bed and operator it
shares through `bench/_testbed.py`): kube-apiserver, etcd and kube-controller-manager, the
kubelet stand-in (pods, the orchestrator's included, are local processes), Postgres, the S3
server, and the operator with its inline executor. The checkout's own `sdk` and `operator`
come first on every process's PYTHONPATH. Every process started here is stopped by its PID
at the end, on failure too.

`KSTEP_BENCH_ORCHESTRATOR_PROFILE=/tmp/{run}.prof` profiles every orchestrator pod (all its
threads, cProfile) into one file per run; the timings of a profiled run are not the figures.

Never part of the test suite: on a shared machine a timing only measures the neighbours.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# `_testbed` comes first: it puts the workloads' folder and the test harness on sys.path.
import _testbed as bed
import dynamic_workloads as workloads
from _testbed import (
    Cluster,
    NamespaceWatch,
    RunWatch,
    cpu_seconds,
    cpu_used,
    hwm,
    machine,
    operator_on,
    parse_time,
    peak_rss,
    quantiles,
    test_bed,
    wait_quiet,
)

BENCH = bed.BENCH
ZENML_LOCAL_DYNAMIC_MS = 100
GOAL_MS = 20
LABEL_RUN = "kstep.dev/run"
LABEL_ROLE = "kstep.dev/role"


# ------------------------------------------------------------------ observing Jobs and pods


class JobWatch(NamespaceWatch):
    """Watches the namespace's Jobs; notes when each was first seen and seen complete."""

    # One long request: a reconnect in the middle of a burst would delay the events it
    # lists again.
    request_seconds = 3600

    def __init__(self, cluster: Cluster) -> None:
        self.created: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        super().__init__(cluster)

    def _list_call(self) -> tuple[Any, ...]:
        return (self.cluster.batch.list_namespaced_job, self.cluster.namespace)

    def _observe(self, job: Any, now: float) -> None:
        name = job.metadata.name
        with self._lock:
            self.created.setdefault(name, now)
            self.labels[name] = dict(job.metadata.labels or {})
            if (job.status.succeeded or 0) >= 1:
                self.completed.setdefault(name, now)

    def of(self, run: str, role: str) -> dict[str, tuple[float, float | None]]:
        """(first seen, seen complete) of each Job of a run with a role (`step`...)."""
        with self._lock:
            return {
                name: (self.created[name], self.completed.get(name))
                for name, labels in self.labels.items()
                if labels.get(LABEL_RUN) == run and labels.get(LABEL_ROLE) == role
            }


class OrchestratorMemory:
    """Samples the peak resident memory of orchestrator processes while they live."""

    def __init__(self, interval: float = 1.0) -> None:
        self.peaks: dict[int, float] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"kstep-orchestrator" not in f.read():
                        continue
                    peak = hwm(int(entry))
                    self.peaks[int(entry)] = max(peak, self.peaks.get(int(entry), 0.0))

    def stop(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------ reading a run


def create(cluster: Cluster, pipeline: Any, parameters: dict[str, Any]) -> tuple[str, float, float]:
    """Create a run; return its name, and the wall and monotonic times of the request."""
    manifest = cluster.render(pipeline, parameters)
    wall, began = time.time(), time.monotonic()
    return cluster.create(manifest), wall, began


def orchestrator_report(cluster: Cluster, run: dict[str, Any]) -> dict[str, Any]:
    """The timing line the pipeline function printed into the run's log."""
    log = cluster.client().get_run(run["status"]["runId"]).logs()
    for line in log.splitlines():
        if line.startswith(workloads.MARK):
            return dict(json.loads(line[len(workloads.MARK) :]))
    raise RuntimeError(f"no {workloads.MARK.strip()} line in the run's log:\n{log[-2000:]}")


def settled(cluster: Cluster, name: str, expected: int) -> dict[str, dict[str, Any]]:
    """The run's StepRuns, checked: `expected` of them, every one completed."""
    step_runs = cluster.step_runs(name)
    phases = {i: (s.get("status") or {}).get("phase") for i, s in step_runs.items()}
    wrong = {i: p for i, p in phases.items() if p != "completed"}
    if len(step_runs) != expected or wrong:
        raise RuntimeError(
            f"run {name}: {len(step_runs)} StepRuns, {expected} expected; not completed: "
            f"{dict(list(wrong.items())[:5])}"
        )
    return step_runs


def operator_span(run: dict[str, Any]) -> float:
    status = run["status"]
    return (parse_time(status["completionTime"]) - parse_time(status["startTime"])).total_seconds()


# ------------------------------------------------------------------ workloads


def bench_isolated(
    cluster: Cluster, watch: RunWatch, jobs: JobWatch, width: int, rounds: int
) -> dict[str, Any]:
    """`width` isolated steps submitted in a loop, then an inline sum, one run at a time."""
    samples: list[dict[str, Any]] = []
    cpu: dict[str, float] = {}
    for index in range(rounds):
        quiet = wait_quiet()
        cpu_before = cpu_seconds()
        name, wall, began = create(
            cluster, workloads.isolated_fan, {"width": width, "start": 10_000 * index}
        )
        watch.wait([name], timeout=900)
        ended = watch.ended[name] - began
        add_cpu(cpu, cpu_used(cpu_before, cpu_seconds()))
        run = cluster.run(name)
        step_runs = settled(cluster, name, width + 1)
        report = orchestrator_report(cluster, run)
        # The operator stamps an isolated StepRun's startTime right after creating its Job.
        stamped = sorted(
            (parse_time(s["status"]["startTime"]).timestamp() - wall)
            for s in step_runs.values()
            if s["spec"]["definition"].get("runtime") == "isolated"
        )
        seen = jobs.of(name, "step")
        if len(seen) != width or len(stamped) != width:
            raise RuntimeError(f"run {name}: {len(seen)} Jobs seen, {len(stamped)} stamped")
        created_seen = sorted(c - began for c, _ in seen.values())
        done_seen = sorted(d - began for _, d in seen.values() if d is not None)
        orchestrator = jobs.of(name, "orchestrator")
        function_start = report["function_start_wall"] - wall
        sample = {
            "run": name,
            "orchestrator_job_seen_s": min(c for c, _ in orchestrator.values()) - began,
            "function_start_s": function_start,
            "submit_loop_s": report["marks"]["submitted"],
            "first_job_created_s": stamped[0],
            "half_jobs_created_s": stamped[(width - 1) // 2],
            "all_jobs_created_s": stamped[-1],
            "all_jobs_seen_by_watch_s": created_seen[-1],
            "all_jobs_complete_seen_s": done_seen[-1] if len(done_seen) == width else None,
            "function_s": report["function_s"],
            "run_completed_seen_s": ended,
            "operator_start_to_completion_s": operator_span(run),
            "pipeline_run_versions": len(watch.versions.get(name, ())),
            "waited_for_quiet_s": quiet,
        }
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    keys = [k for k in samples[0] if k != "run"]
    return {
        "width": width,
        "rounds": samples,
        "summary": {
            key: quantiles([s[key] for s in samples if s[key] is not None]) for key in keys
        },
        "cpu_seconds": sorted_cpu(cpu),
    }


def add_cpu(total: dict[str, float], used: dict[str, float]) -> None:
    for group, seconds in used.items():
        total[group] = total.get(group, 0.0) + seconds


def sorted_cpu(cpu: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in sorted(cpu.items(), key=lambda item: -item[1])}


def bench_inline(
    cluster: Cluster, watch: RunWatch, pipeline: Any, size: int, rounds: int, key: str
) -> dict[str, Any]:
    """`size` inline invocations in one dynamic run, one run at a time."""
    samples: list[dict[str, Any]] = []
    cycles: list[float] = []
    spans: list[float] = []
    cpu: dict[str, float] = {}
    for index in range(rounds):
        quiet = wait_quiet()
        cpu_before = cpu_seconds()
        name, wall, began = create(cluster, pipeline, {key: size, "start": 100_000 * index})
        watch.wait([name], timeout=1800)
        ended = watch.ended[name] - began
        add_cpu(cpu, cpu_used(cpu_before, cpu_seconds()))
        run = cluster.run(name)
        step_runs = settled(cluster, name, size)
        report = orchestrator_report(cluster, run)
        starts = sorted(parse_time(s["status"]["startTime"]) for s in step_runs.values())
        cycles += [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        spans += [
            (
                parse_time(s["status"]["completionTime"]) - parse_time(s["status"]["startTime"])
            ).total_seconds()
            for s in step_runs.values()
        ]
        sample = {
            "run": name,
            "function_start_s": report["function_start_wall"] - wall,
            "function_s": report["function_s"],
            "per_step_ms": 1000 * report["function_s"] / size,
            "orchestrator_cpu_per_step_ms": 1000 * report["function_cpu_s"] / size,
            "operator_start_to_completion_s": operator_span(run),
            "operator_span_per_step_ms": 1000 * operator_span(run) / size,
            "run_completed_seen_s": ended,
            "pipeline_run_versions": len(watch.versions.get(name, ())),
            "waited_for_quiet_s": quiet,
        }
        if "submitted" in report["marks"]:
            sample["submit_loop_s"] = report["marks"]["submitted"]
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    keys = [k for k in samples[0] if k != "run"]
    return {
        "size": size,
        "rounds": samples,
        "summary": {key: quantiles([s[key] for s in samples]) for key in keys},
        "step_cycle_s": quantiles(cycles),
        "step_span_s": quantiles(spans),
        "cpu_seconds": sorted_cpu(cpu),
    }


# ------------------------------------------------------------------ report


def markdown(results: dict[str, Any]) -> str:
    facts = results["machine"]

    def load(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    def secs(entry: dict[str, float]) -> str:
        if not entry.get("n"):
            return "-"
        if entry["n"] == 1:
            return f"{entry['p50']:.2f} s"
        return f"{entry['p50']:.2f} s ({entry['min']:.2f} to {entry['max']:.2f})"

    def ms(entry: dict[str, float], p99: bool = True) -> str:
        if not entry.get("n"):
            return "-"
        text = f"{entry['p50'] * 1000:.1f} ms"
        return f"{text}, p99 {entry['p99'] * 1000:.1f} ms" if p99 else text

    lines = [
        "# Dynamic pipelines on a cluster",
        "",
        f"{facts['date_utc']} UTC, commit {facts['kstep_commit']}"
        f"{' with uncommitted changes' if facts.get('uncommitted_changes') else ''}, "
        f"{facts['cores']} cores ({facts.get('cpu', '?')}), Python {facts['python']}, load "
        f"average at start {load(facts['load_average_at_start'])} (at the end "
        f"{load(results['load_average_at_end'])}). The machine is shared: other work ran "
        "beside this benchmark.",
        "",
        "Everything on one machine: kube-apiserver, etcd, kube-controller-manager, the kubelet "
        "stand-in (every pod, the orchestrator's included, is a local process), Postgres, the "
        "S3 server (moto), the operator and its inline executor. Produced by "
        "`bench/cluster_dynamic.py`; the method is below the tables. Medians over rounds, "
        "with the range in parentheses; p99 where there are many samples.",
        "",
    ]
    iso = results.get("isolated")
    if iso:
        s = iso["summary"]
        n = len(iso["rounds"])
        lines += [
            f"## {iso['width']} isolated steps (`.submit()` in a loop) and a reduce, {n} "
            f"round{'s' if n > 1 else ''}",
            "",
            "| from the PipelineRun's create request to | time |",
            "|---|---|",
            f"| the orchestrator Job seen | {secs(s['orchestrator_job_seen_s'])} |",
            f"| the pipeline function starting in the orchestrator pod | "
            f"{secs(s['function_start_s'])} |",
            f"| the first step Job created | {secs(s['first_job_created_s'])} |",
            f"| half of the Jobs created | {secs(s['half_jobs_created_s'])} |",
            f"| **all {iso['width']} Jobs created** | **{secs(s['all_jobs_created_s'])}** |",
            f"| same, seen by a watch of Jobs | {secs(s['all_jobs_seen_by_watch_s'])} |",
            f"| all {iso['width']} Jobs complete (seen) | {secs(s['all_jobs_complete_seen_s'])} |",
            f"| **the run completed** (seen) | **{secs(s['run_completed_seen_s'])}** |",
            "",
            f"The {iso['width']} `.submit()` calls took {secs(s['submit_loop_s'])} in the "
            f"function (one StepRun created per call); the operator's own span of the run "
            f"(status start to completion) was {secs(s['operator_start_to_completion_s'])}; "
            f"the PipelineRun went through {s['pipeline_run_versions']['p50']:.0f} versions; "
            f"each round waited {secs(s['waited_for_quiet_s'])} for a quiet test bed first.",
            "",
            *cpu_table(iso["cpu_seconds"], (iso["width"] + 1) * n),
            "",
        ]
    for key, title in (
        ("chain", "synchronously, in a chain (`value = inc(value)`)"),
        ("fan", "all submitted at once (`inc.submit(i)`), then each awaited"),
        ("objects", "in a chain with 4 KiB outputs, each an S3 object (`grow`)"),
    ):
        entry = results.get(key)
        if not entry:
            continue
        s = entry["summary"]
        per_step = s["per_step_ms"]["p50"]
        n = len(entry["rounds"])
        verdict = "met" if per_step <= GOAL_MS else "missed"
        versus = (
            f"goal <= {GOAL_MS} ms: {verdict}; ZenML's local dynamic runs: about "
            f"{ZENML_LOCAL_DYNAMIC_MS} ms before any Kubernetes"
            if key != "objects"
            else "the chain above plus one upload to the S3 server per step"
        )
        lines += [
            f"## {entry['size']:,} inline invocations {title}, {n} round{'s' if n > 1 else ''}",
            "",
            "| what | value |",
            "|---|---|",
            f"| **per step: the function's run time / {entry['size']:,}** | "
            f"**{per_step:.1f} ms** ({versus}) |",
            f"| orchestrator CPU per step (all its threads) | "
            f"{s['orchestrator_cpu_per_step_ms']['p50']:.1f} ms |",
            f"| per step from the run's status (operator start to completion) | "
            f"{s['operator_span_per_step_ms']['p50']:.1f} ms |",
            f"| the function's run time | {secs(s['function_s'])} |",
            f"| create request to the function's start | {secs(s['function_start_s'])} |",
            f"| create request to the run completed (seen) | {secs(s['run_completed_seen_s'])} |",
            f"| step cycle: one StepRun's startTime to the next's (n={entry['step_cycle_s']['n']}) "
            f"| {ms(entry['step_cycle_s'])} |",
            f"| one StepRun's startTime to its completionTime (n={entry['step_span_s']['n']}) | "
            f"{ms(entry['step_span_s'])} |",
        ]
        lines.append(
            f"| versions of the PipelineRun seen during the run | "
            f"{s['pipeline_run_versions']['p50']:.0f} |"
        )
        lines.append(
            f"| waited for a quiet test bed before the round | {secs(s['waited_for_quiet_s'])} |"
        )
        if "submit_loop_s" in s:
            lines.append(
                f"| the {entry['size']:,} `.submit()` calls | {secs(s['submit_loop_s'])} |"
            )
        lines += ["", *cpu_table(entry["cpu_seconds"], entry["size"] * n), ""]
    memory = results.get("memory", {})
    if memory:
        lines += [
            f"Peak resident memory (VmHWM) at the end: operator {memory['operator']:.0f} MiB, "
            f"inline executor {memory['executor']:.0f} MiB; orchestrator pods, sampled each "
            f"second while they ran: up to {results.get('orchestrator_peak_rss_mib', 0):.0f} MiB.",
            "",
        ]
    lines += [METHOD]
    return "\n".join(lines) + "\n"


def cpu_table(cpu: dict[str, float], steps: int) -> list[str]:
    total = sum(cpu.values())
    lines = [
        f"CPU used by the test bed's processes during these runs ({total:.1f} s, "
        f"{1000 * total / steps:.0f} ms per step):",
        "",
        "| process | CPU s | per step |",
        "|---|---|---|",
    ]
    for name, used in cpu.items():
        if used >= 0.05:
            lines.append(f"| {name} | {used:.1f} | {1000 * used / steps:.1f} ms |")
    return lines


METHOD = """## Method

- **Runs**: one PipelineRun at a time, created through the API with its manifest rendered
  beforehand, caching off (every step executes). Round `i` starts its values at a new
  offset. Each run's StepRuns are checked afterwards: as many as expected, all completed.
- **Settling**: before each round the benchmark waits until the test bed's processes use
  less than a tenth of a core over 2 s (at most 60 s): a round of 100 isolated steps leaves
  the controllers and the stand-in busy with finished Jobs and pods for a while, and the
  next round would otherwise measure that too.
- **Clocks**: the benchmark notes the wall and monotonic time just before the create
  request; every process is on this machine, so the operator's and the orchestrator's
  timestamps compare with it directly.
- **Isolated fan-out** (`isolated_fan` in `bench/operator_code/dynamic_workloads.py`): the
  function calls `inc_isolated.submit(i)` `width` times (each call creates a StepRun for the
  operator), then `total(futures)` inline. The operator creates one Job per isolated
  StepRun, with no parallelism limit for a dynamic run's StepRuns, and the kubelet stand-in
  runs each Job's pod (`kstep-runner`) as a local process.
  - *all Jobs created*: the latest `status.startTime` of the isolated StepRuns, which the
    operator stamps (microseconds) right after its create request for the StepRun's Job
    returned, minus the time of the PipelineRun's create request. *Half of the Jobs*: the
    median of those stamps.
  - *seen by a watch of Jobs*: the same from a watch of the namespace's Jobs in the
    benchmark process, the time the last Job's ADDED event arrived (the benchmark process
    also hosts the kubelet stand-in, so this lags when it is busy starting pods).
  - *orchestrator Job seen*, *Jobs complete (seen)*: from the same watch; a Job is complete
    when `status.succeeded` is 1.
  - *function starting*: the wall time the pipeline function noted on entry, inside the
    orchestrator pod (after the pod started, imported the code, connected and listed the
    run's StepRuns).
  - *run completed (seen)*: a watch of PipelineRuns seeing `status.phase: completed`.
  - Every pod starts as soon as its Job exists, as a Python process on this machine: the
    step pods share its cores with the operator while it creates the remaining Jobs (on a
    cluster they would run on other nodes). The CPU table shows their share.
- **Inline invocations** (`inline_chain`, `inline_fan`): the function, in the orchestrator
  pod, calls the inline step `inc` `size` times, either chained synchronously (each call
  waits for the previous one's output and blocks until its step ended) or submitted all at
  once (the orchestrator's 16 inline threads run them) and then awaited in order. Every
  invocation is a StepRun the orchestrator creates and whose status it writes (its outcome;
  a running status first if the step runs longer than 0.2 s, which `inc` never does), and a
  step-run row with its output's version in Postgres. `inc` returns an int, a version of a
  few bytes that the S3 store keeps in its metadata row (a `data:` URI) rather than as an
  object; it prints nothing, so it has no log object either. The orchestrator's writer
  thread creates the StepRuns and writes their statuses while the function goes on.
- **Chain of S3 objects** (`inline_chain_objects`, one round): the same chain with steps
  whose output is 4 KiB of bytes (`blob`, then `grow` on the previous output), over the
  size kept in a row, so every step also uploads its output to the S3 server (the next
  step reads it from the pod's local cache).
  - *per step*: the function's own run time (`time.perf_counter()` from its first line to
    the last step's end, printed to the run's log) divided by `size`. It leaves out the
    pod's start and the run's recording, and includes every StepRun write.
  - *orchestrator CPU per step*: `time.process_time()` of the orchestrator process (all its
    threads) over the same span, divided by `size`.
  - *from the run's status*: the operator's `startTime` (when it saw the run) to its
    `completionTime` (when it saw the orchestrator Job end), divided by `size`: includes
    the orchestrator pod's start and exit.
  - *step cycle*: consecutive StepRuns' `status.startTime` (the orchestrator stamps it when
    it starts the call's attempt, before a thread takes it), differences; n = size - 1 per
    round.
    *StepRun span*: each StepRun's `completionTime` (stamped when the step body and its
    recording in Postgres and S3 ended, before the status write) minus its `startTime`.
  - *CPU*: user + system time from `/proc`, read before and after each run, of the
    benchmark's process tree by command line. Pods that ended were reaped by the kubelet
    stand-in in the benchmark process; their time is the "exited children" line (the
    orchestrator pod's, mainly).
- **PipelineRun versions**: the distinct `resourceVersion`s of the run that the
  benchmark's watch of PipelineRuns saw: its creation and every write of its status, which
  the operator makes for the run's start, its orchestrator Job, its step counts by phase
  (as StepRuns are created and end) and its end.
- **Reference**: ZenML's local dynamic runs cost about 100 ms per step on this machine
  before any Kubernetes is involved (the project's earlier measurements); it is not run
  here.
- **Memory**: `VmHWM` of the operator and the inline executor at the end; for orchestrator
  pods, the highest `VmHWM` sampled once a second while they lived.
- **Load**: `os.getloadavg()` when the benchmark started and when it ended.
"""


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller runs")
    parser.add_argument("--output", help="path without extension for the results")
    parser.add_argument("--only", help="comma-separated: isolated,chain,fan,objects")
    parser.add_argument("--rounds", type=int, help="rounds of each workload")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    everything = {"isolated", "chain", "fan", "objects"}
    only = set(args.only.split(",")) if args.only else everything
    width = 10 if args.quick else 100
    size = 100 if args.quick else 1000
    rounds = args.rounds or (1 if args.quick else 3)
    inline_rounds = args.rounds or (1 if args.quick else 2)
    output = (
        Path(args.output)
        if args.output
        else (
            BENCH / ".work" / "cluster-dynamic-quick"
            if args.quick
            else BENCH / "results" / "cluster-dynamic"
        )
    )
    results: dict[str, Any] = {"machine": machine()}
    # A profile of each orchestrator (`{run}` in the path becomes the run's name).
    profile = os.environ.get("KSTEP_BENCH_ORCHESTRATOR_PROFILE")
    pods = {"KSTEP_ORCHESTRATOR_PROFILE_PATH": profile} if profile else {}
    run_dir = Path(tempfile.mkdtemp(prefix="kstep-bench-dynamic-"))
    print(f"run directory: {run_dir}", flush=True)

    try:
        with (
            test_bed(run_dir) as (access, postgres_url, s3),
            operator_on(access, postgres_url, s3, run_dir, pod_settings=pods) as cluster,
        ):
            watch = RunWatch(cluster)
            jobs = JobWatch(cluster)
            memory = OrchestratorMemory()
            try:
                if "isolated" in only:
                    print(f"{width} isolated steps, {rounds} rounds...", flush=True)
                    results["isolated"] = bench_isolated(cluster, watch, jobs, width, rounds)
                if "chain" in only:
                    print(f"{size} chained inline steps, {inline_rounds} rounds...", flush=True)
                    results["chain"] = bench_inline(
                        cluster, watch, workloads.inline_chain, size, inline_rounds, "length"
                    )
                if "fan" in only:
                    print(f"{size} submitted inline steps, {inline_rounds} rounds...", flush=True)
                    results["fan"] = bench_inline(
                        cluster, watch, workloads.inline_fan, size, inline_rounds, "width"
                    )
                if "objects" in only:
                    print(f"{size} chained inline steps with 4 KiB outputs...", flush=True)
                    results["objects"] = bench_inline(
                        cluster, watch, workloads.inline_chain_objects, size, 1, "length"
                    )
                results["memory"] = peak_rss(cluster)
                results["orchestrator_peak_rss_mib"] = max(memory.peaks.values(), default=0.0)
                results["reconcile_errors"] = {
                    kind: cluster.metric("kstep_reconcile_errors_total", kind=kind)
                    for kind in ("run", "step")
                }
            finally:
                memory.stop()
                jobs.stop()
                watch.stop()
                results["operator_log_tail"] = cluster.processes.log_text()[-3000:]
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()

    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    print(
        json.dumps(
            {k: v for k, v in results.items() if k != "operator_log_tail"}, indent=1, default=str
        )
    )
    print(f"written: {output.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
