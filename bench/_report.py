"""Summaries of the samples and the results files: a Markdown table and the raw JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
from typing import Any

from _tools import BENCH_DIR, Tool, make_tools
from _workloads import Workload


def machine_facts() -> dict[str, Any]:
    """What the numbers depend on: CPU, memory, kernel, filesystem, date."""
    facts: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            names = [
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            ]
        facts["cpu"] = names[0] if names else platform.processor()
        with open("/proc/meminfo", encoding="utf-8") as file:
            kib = int(file.readline().split()[1])
        facts["memory_gib"] = round(kib / 1024 / 1024, 1)
    except OSError:
        pass
    facts["load_average_at_start"] = load_average()
    facts["kstep_commit"] = _git("rev-parse", "--short", "HEAD")
    facts["kstep_tree_clean"] = _git("status", "--porcelain", "--", "sdk") == ""
    return facts


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _git(*args: str) -> str | None:
    done = subprocess.run(
        ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarize_workload(workload: Workload, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: median, min, max over the samples that succeeded; plus the failures."""
    good = [workload.metrics(s) for s in samples if "error" not in s]
    errors = [s["error"] for s in samples if "error" in s]
    names = dict.fromkeys(name for m in good for name in m)
    metrics = {name: summarize([m[name] for m in good if name in m]) for name in names}
    return {"metrics": metrics, "errors": errors}


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(summary: dict[str, Any], metric: str) -> str:
    stats = summary["metrics"].get(metric)
    if stats is None:
        return "failed" if summary["errors"] else "-"
    return f"{_fmt(stats['median'])} [{_fmt(stats['min'])}-{_fmt(stats['max'])}]"


def _ratio(summaries: dict[str, Any], peer: str, metric: str) -> str:
    base = summaries.get("kstep", {}).get("metrics", {}).get(metric)
    other = summaries.get(peer, {}).get("metrics", {}).get(metric)
    if not base or not other or base["median"] <= 0 or other["median"] <= 0:
        return "-"
    return (
        f"{other['median'] / base['median']:.0f}x"
        if other["median"] / base["median"] >= 10
        else f"{other['median'] / base['median']:.1f}x"
    )


def render_markdown(
    workloads: list[Workload],
    tools: dict[str, Tool],
    summaries: dict[str, dict[str, Any]],
    context: dict[str, Any],
    notes: str,
    title: str = "foundation workloads",
) -> str:
    """The results page: headline table, every metric per tool, set-up, failures."""
    peers = [name for name in tools if name != "kstep"]
    lines = [
        f"# kstep benchmark: {title}",
        "",
        f"Measured {context['machine']['date_utc']} UTC by `bench/run.py` "
        f"({context['mode']} mode: {context['rounds']} rounds, tools interleaved in each "
        "round, every sample a fresh process with a fresh home directory). Medians over the "
        "samples with [min-max]; a ratio is the peer's median over kstep's (time metrics, "
        "so above 1x means the peer is slower).",
        "",
        "| "
        + " | ".join(
            [
                "workload",
                "metric",
                "kstep",
                *(tools[p].label for p in peers),
                *(f"{tools[p].label} / kstep" for p in peers),
                "kstep target",
                "met",
            ]
        )
        + " |",
        "|---" * (5 + 2 * len(peers)) + "|",
    ]
    for workload in workloads:
        per_tool = summaries[workload.name]
        kstep = per_tool.get("kstep", {"metrics": {}, "errors": []})
        measured = kstep["metrics"].get(workload.headline)
        met = "-"
        if workload.target is not None:
            met = (
                "no data"
                if measured is None
                else ("yes" if workload.target.met(measured["median"]) else "**no**")
            )
        row = [
            workload.name,
            f"{workload.headline} ({workload.unit})",
            _cell(kstep, workload.headline),
            *(
                _cell(per_tool.get(p, {"metrics": {}, "errors": []}), workload.headline)
                for p in peers
            ),
            *(_ratio(per_tool, p, workload.compared) for p in peers),
            workload.target.describe(workload.unit) if workload.target else "-",
            met,
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Workloads", ""]
    labels = {name: tool.label for name, tool in make_tools().items()}
    for w in workloads:
        only = [labels[t] for t in w.tools or ()]
        lines.append(
            f"- **{w.name}**: {w.title}." + (f" Run by {' and '.join(only)} only." if only else "")
        )
    lines += ["", "## Every metric", ""]
    for workload in workloads:
        per_tool = summaries[workload.name]
        names = next((s["metrics"].keys() for s in per_tool.values() if s["metrics"]), [])
        lines += [
            f"### {workload.name}",
            "",
            "| metric | " + " | ".join(tools[t].label for t in tools) + " |",
            "|---" * (1 + len(tools)) + "|",
        ]
        for name in names:
            cells = [_cell(per_tool.get(t, {"metrics": {}, "errors": []}), name) for t in tools]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Set-up", "", "| fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in context["machine"].items()]
    for name, tool in tools.items():
        versions = ", ".join(f"{k} {v}" for k, v in context["versions"].get(name, {}).items())
        state = f"unavailable: {tool.unavailable}" if tool.unavailable else versions
        lines.append(f"| {tool.label} | {state} |")
    failures = [
        f"- {tools[t].label} {w}: {error}"
        for w, per_tool in summaries.items()
        for t, summary in per_tool.items()
        for error in summary["errors"]
    ]
    lines += ["", "## Failures", ""] + (failures or ["None."])
    lines += ["", notes.strip(), ""]
    return "\n".join(lines)


def write_results(base_path: str, markdown: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(base_path), exist_ok=True)
    with open(base_path + ".md", "w", encoding="utf-8") as file:
        file.write(markdown)
    with open(base_path + ".json", "w", encoding="utf-8") as file:
        json.dump(data, file, indent=1, sort_keys=True)
        file.write("\n")
