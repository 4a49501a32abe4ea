"""Benchmark kstep against ZenML and Prefect on the embedded default.

Usage: `python bench/run.py [--quick] [--rounds N] [--suite dynamic | --only W1,W3]
[--tools kstep,zenml]`.
See bench/README.md for the workloads, the modes and how to read the results.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _envs import PEERS, cache_root, ensure_env, module_origin, package_versions
from _report import (
    load_average,
    machine_facts,
    render_markdown,
    summarize_workload,
    write_results,
)
from _tools import BENCH_DIR, Tool, make_tools, run_sample
from _workloads import FULL, QUICK, SUITES, WORKLOADS, Mode, Workload

logger = logging.getLogger("bench")

VERSIONS_OF = {
    "kstep": ["kstep", "SQLAlchemy", "pydantic", "numpy"],
    "zenml": ["zenml", "SQLAlchemy", "pydantic", "numpy"],
    "prefect": ["prefect", "SQLAlchemy", "pydantic", "numpy"],
}

# The method section: each item with the workloads it is about (None: every run), so a
# results file explains exactly the workloads it holds.
METHOD: list[tuple[set[str] | None, str]] = [
    (
        None,
        """- **Fresh state per sample.** Each sample is one new process with a new scratch directory
  for the tool's home (kstep: `KSTEP_HOME`; ZenML: `ZENML_CONFIG_PATH`, the directory
  initialised as its source root, analytics off; Prefect: `PREFECT_HOME` and its local
  result storage, no API URL so its ephemeral server and SQLite start on the first flow
  call, analytics off, 120 s allowed for that server to start instead of 20). So the
  first call in a process also creates the database.""",
    ),
    (
        {"W1", "W2", "W3"},
        """- **Cold and warm.** W1 to W3 call the pipeline several times per process: the first call
  pays imports, database creation and (Prefect) server start; the later, warm calls show
  the steady per-run cost. Headlines use the warm calls, as the peers' published figures do;
  the first-call figures are listed under "Every metric".""",
    ),
    (
        {"W5", "W6"},
        """- **Cold and warm (W5, W6).** As W1 to W3: each process calls the pipeline several times
  (the mode's calls per process); the first call pays imports, database creation and
  (Prefect) server start, and headlines are the median of the warm calls (2nd and later);
  `first_call_*` are the first calls. A run's time is the wall time of the pipeline call,
  from the call to the finished run it returns (kstep's `Run`, ZenML's run response,
  Prefect's flow result): it includes creating and closing the run's records.""",
    ),
    (
        None,
        """- **Interleaving.** Within a round every workload runs for kstep, then ZenML, then
  Prefect, so slow phases of this shared machine hit all tools alike.""",
    ),
    (
        {"W3"},
        """- **W3** runs a chain whose start value is new for each process: call 1 computes every
  step, calls 2 and later are fully cached; `cached_run_ms` is the median of those cached
  calls.""",
    ),
    (
        {"W4"},
        """- **W4.** One process runs the pipeline once with a 1-item array (warm-up), then
  alternates 1-item and 100 MiB runs. The marginal cost of 100 MiB is the median of (big run - the
  1-item run just before it): it contains creating the array, saving it, loading it and
  summing it. The raw baseline in the same process, on the same filesystem, after one
  untimed round, times `np.arange` (create), `np.save`, `np.load` and `.sum()` separately.
  `share_of_raw_save_load_pct` = raw (save + load) / (marginal - raw create - raw sum): the
  pipeline's save + load throughput as a share of raw numpy's. `share_of_raw_end_to_end_pct`
  = raw (create + save + load + sum) / marginal compares the same work without subtracting.
  Prefect persists the array (pickle) but hands the consumer the in-memory value, so its
  marginal has no load.""",
    ),
    (
        {"W5"},
        """- **W5.** A `@pipeline(dynamic=True)` function submits 50 invocations of a step that
  returns its argument (`index_of.submit(i)`, i = 0..49) and passes the 50 futures, as a
  list, to a sum step called directly, which waits for them. Caching off; every output is
  stored as an artifact. The steps do no work, so a run's time is all overhead:
  `warm_ms_per_step` = warm run time / 51 invocations, `warm_run_s` the whole run. kstep
  runs the function in the calling process and the steps inline on its engine's thread
  pool; ZenML 0.98 (the same code: `@pipeline(dynamic=True)`, `step.submit()`, futures
  passed to a step) runs them on its dynamic runner's thread pool, 10 workers by default,
  with the local orchestrator; Prefect has no separate dynamic mode (a flow's function
  always runs at run time), so its W5 is a flow that `.submit()`s 50 tasks to its default
  thread pool task runner and passes the futures to a sum task, with results not persisted,
  as in W2: Prefect stores no output, where kstep and ZenML store 51.""",
    ),
    (
        {"W6"},
        """- **W6.** A dynamic pipeline calls a step returning `list(range(1000))`, maps a step
  `x -> x + 1` over that output (`increment.map(x=items)`: 1,000 invocations, each loading
  only its own item of the stored list) and passes the map's `MapResultsFuture` to a sum
  step, which receives the 1,000 values as a list: 1,002 invocations, caching off.
  `warm_run_s` is the whole run (headline, kstep's target ≤ 2 s), `warm_ms_per_step` that
  / 1,002. The items come from a step rather than a plain list because ZenML 0.98 maps only
  over step outputs (it passes a plain list whole to every invocation). ZenML runs W6 in
  the first round only, with one call per process, since one of its runs takes minutes:
  its figures, if any, are a single cold call. Prefect is not run.""",
    ),
    (
        {"W7"},
        """- **W7.** kstep only, one run per process: a dynamic pipeline maps `x -> x + 1` over a
  plain list of 10,000 ints and passes the results to a sum step (10,001 invocations,
  caching off). `peak_rss_MB` is the process's peak resident memory (`VmHWM` of
  /proc/self/status, `ru_maxrss` where that is missing) read when the run has returned: the
  interpreter, imports, database creation and the run. `rss_before_run_MB` is the resident
  memory (`VmRSS`) just before the pipeline call, after imports; `run_s` the run's wall
  time; `ms_per_step` = `run_s` / 10,001. MB are 10^6 bytes.""",
    ),
    (
        {"import"},
        """- **import** is the wall time of `python -c "import <tool>"` measured by the harness
  (interpreter start-up included; `interpreter_only_ms` is `python -c pass` for reference,
  `import_statement_ms` the import statement alone, timed inside the process). kstep runs
  from an editable install, whose start-up hook imports `pathlib` and `re` in every
  process of its environment; an installed wheel has no such hook.""",
    ),
    (
        None,
        """- **Load.** The machine is shared; the load averages at the start and the end of the run
  are listed under "Set-up". Under load every tool slows down, the peers' figures too.""",
    ),
]


def method_text(workloads: list[Workload]) -> str:
    """The method section for the workloads of this run."""
    names = {w.name for w in workloads}
    items = [text for about, text in METHOD if about is None or about & names]
    return "## Method\n\n" + "\n".join(items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--rounds", type=int, help="rounds (default: 5 full, 2 quick)")
    parser.add_argument(
        "--suite", default="foundation", choices=SUITES, help="the workloads of one suite"
    )
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,W3 (any suite)")
    parser.add_argument("--tools", default="kstep,zenml,prefect", help="comma-separated tools")
    parser.add_argument("--output", help="results path without extension")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    base = QUICK if args.quick else FULL
    mode = Mode(base.name, args.rounds or base.rounds, base.calls, base.pairs)
    names = (
        args.only.split(",")
        if args.only
        else [w.name for w in WORKLOADS.values() if w.suite == args.suite]
    )
    workloads = [WORKLOADS[name] for name in names]
    suites = {w.suite for w in workloads}
    output = args.output or default_output(mode, workloads)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(BENCH_DIR, ".work", "logs", stamp)
    os.makedirs(log_dir, exist_ok=True)

    # A tool none of the chosen workloads runs is left out, peers' installs included.
    tools = {
        name: tool
        for name, tool in make_tools().items()
        if name in args.tools.split(",")
        and any(w.tools is None or name in w.tools for w in workloads)
    }
    prepare_peers(tools, log_dir)
    versions = {
        name: package_versions(tool.python, VERSIONS_OF[name])
        for name, tool in tools.items()
        if tool.python and not tool.unavailable
    }

    machine = machine_facts()
    if "kstep" in tools and tools["kstep"].python:
        # The workers inherit PYTHONPATH, so this is the kstep source they measure.
        machine["kstep_source"] = module_origin(tools["kstep"].python, "kstep")
    samples = run_rounds(workloads, tools, mode, log_dir)
    machine["load_average_at_end"] = load_average()

    summaries = {
        w.name: {name: summarize_workload(w, samples[w.name][name]) for name in tools}
        for w in workloads
    }
    context = {
        "mode": mode.name,
        "rounds": mode.rounds,
        "calls_per_process": mode.calls,
        "w4_pairs": mode.pairs,
        "machine": machine,
        "versions": versions,
        "unavailable": {n: t.unavailable for n, t in tools.items() if t.unavailable},
    }
    title = SUITES[next(iter(suites))] if len(suites) == 1 else "selected workloads"
    markdown = render_markdown(workloads, tools, summaries, context, method_text(workloads), title)
    write_results(output, markdown, {**context, "summaries": summaries, "samples": samples})
    print(markdown)
    logger.info("Results written to %s.md and .json; worker logs in %s.", output, log_dir)
    return 0


def default_output(mode: Mode, workloads: list[Workload]) -> str:
    """`results/<suite>` for a full run of every workload of one suite, else bench/.work."""
    names = {w.name for w in workloads}
    for suite in SUITES:
        if mode.name == "full" and names == {
            w.name for w in WORKLOADS.values() if w.suite == suite
        }:
            return os.path.join(BENCH_DIR, "results", suite)
    return os.path.join(BENCH_DIR, ".work", f"results-{mode.name}")


def prepare_peers(tools: dict[str, Tool], log_dir: str) -> None:
    """Create or reuse each peer's environment; a peer that cannot be installed is skipped."""
    for name, tool in tools.items():
        if name == "kstep":
            continue
        logger.info("Preparing the %s environment under %s ...", tool.label, cache_root())
        python, what = ensure_env(PEERS[name], os.path.join(log_dir, f"install-{name}.log"))
        if python is None:
            tool.unavailable = f"installing it failed: {what}"
            logger.warning("%s is unavailable: %s", tool.label, what)
        else:
            tool.python = python
            logger.info("%s environment %s.", tool.label, what)


def run_rounds(
    workloads: list[Workload], tools: dict[str, Tool], mode: Mode, log_dir: str
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every round runs every workload for every tool, interleaved; returns raw samples."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        w.name: {name: [] for name in tools} for w in workloads
    }
    for round_index in range(mode.rounds):
        for workload in workloads:
            for name, tool in tools.items():
                if tool.unavailable or not workload.runs(name, round_index):
                    continue
                start = time.perf_counter()
                sample = run_sample(
                    tool, workload.args_for(name, mode), log_dir, workload.whole_process
                )
                sample["round"] = round_index + 1
                samples[workload.name][name].append(sample)
                outcome = sample.get("error") or "ok"
                logger.info(
                    "round %d/%d %s %s: %s (%.1f s)",
                    round_index + 1,
                    mode.rounds,
                    workload.name,
                    tool.label,
                    outcome,
                    time.perf_counter() - start,
                )
    return samples


if __name__ == "__main__":
    sys.exit(main())
