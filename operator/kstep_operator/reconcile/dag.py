"""Scheduling a static run's DAG: what to start, what to skip, and when the run is over.

Given the phase of every invocation that has a StepRun, `plan` decides which invocations
start now (their upstream steps completed or came from the cache, within the parallelism
left), which are skipped (an upstream step failed, the execution mode stops the run, or the
run was cancelled), and whether the run has ended and how.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SUCCESS = frozenset({"completed", "cached"})
TERMINAL = frozenset({"completed", "cached", "failed", "cancelled", "skipped"})


@dataclass(frozen=True)
class Problem:
    """Why a run's spec cannot run: a reason (CamelCase) and a message naming the culprit."""

    reason: str
    message: str


@dataclass
class Plan:
    """What to do with a run now."""

    start: list[str] = field(default_factory=list)
    skip: dict[str, str] = field(default_factory=dict)
    cancel_active: bool = False
    finished: bool = False
    phase: str = "running"
    failed_step: str | None = None
    message: str | None = None


def _input_upstream(value: dict[str, Any]) -> Iterator[tuple[str, str]]:
    output = value.get("output")
    if output:
        yield output["step"], output["output"]
    for item in value.get("list") or []:
        yield from _input_upstream(item)


def upstream_of(invocation: dict[str, Any]) -> list[str]:
    """Invocations an invocation waits for: data edges, then `after` edges, without repeats."""
    found: dict[str, None] = {}
    for value in (invocation.get("inputs") or {}).values():
        for step, _ in _input_upstream(value):
            found[step] = None
    for step in invocation.get("after") or []:
        found[step] = None
    return list(found)


def validate(spec: dict[str, Any]) -> Problem | None:
    """The first reason a static run's DAG cannot run, or None if it can."""
    definitions = spec.get("definitions") or {}
    steps = spec.get("steps") or []
    seen: dict[str, dict[str, Any]] = {}
    for invocation in steps:
        invocation_id = invocation["id"]
        if invocation_id in seen:
            return Problem("DuplicateStep", f"step {invocation_id!r} appears twice in spec.steps")
        seen[invocation_id] = invocation
        if invocation["definition"] not in definitions:
            known = ", ".join(sorted(definitions)) or "none"
            return Problem(
                "UnknownDefinition",
                f"step {invocation_id!r} names the definition {invocation['definition']!r}, "
                f"which spec.definitions does not have (it has: {known})",
            )
        problem = _check_inputs(invocation)
        if problem is not None:
            return problem

    for invocation in steps:
        for value in (invocation.get("inputs") or {}).values():
            for step, output in _input_upstream(value):
                if step not in seen:
                    return Problem(
                        "UnknownUpstream",
                        f"step {invocation['id']!r} takes an input from step {step!r}, which is "
                        "not in spec.steps",
                    )
                outputs = definitions[seen[step]["definition"]].get("outputs") or {}
                if output not in outputs:
                    return Problem(
                        "UnknownOutput",
                        f"step {invocation['id']!r} takes output {output!r} of step {step!r}, "
                        f"which declares {sorted(outputs) or 'no outputs'}",
                    )
        for step in invocation.get("after") or []:
            if step not in seen:
                return Problem(
                    "UnknownUpstream",
                    f"step {invocation['id']!r} runs after step {step!r}, which is not in "
                    "spec.steps",
                )
    cycle = _find_cycle(steps)
    if cycle:
        return Problem("Cycle", f"steps {' -> '.join(repr(s) for s in cycle)} form a cycle")
    return None


def _check_inputs(invocation: dict[str, Any]) -> Problem | None:
    for name, value in (invocation.get("inputs") or {}).items():
        kinds = [k for k in ("param", "output", "artifact", "list") if k in value]
        if len(kinds) > 1:
            return Problem(
                "InvalidInput",
                f"input {name!r} of step {invocation['id']!r} sets {' and '.join(kinds)}; an "
                "input is exactly one of param, output, artifact or list",
            )
    return None


def _find_cycle(steps: list[dict[str, Any]]) -> list[str]:
    graph = {invocation["id"]: upstream_of(invocation) for invocation in steps}
    state: dict[str, int] = {}
    for start in graph:
        if state.get(start):
            continue
        # Iterative depth-first search: a 2,000-step chain must not hit the recursion limit.
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if not state.get(child) and child in graph:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph[child])))
    return []


def plan(
    spec: dict[str, Any],
    phases: dict[str, str],
    *,
    capacity: int,
    cancelled: bool = False,
    timed_out: bool = False,
) -> Plan:
    """Decide what to start and skip now, and whether the run ended.

    Args:
        spec: the PipelineRun's spec (as the API returns it).
        phases: invocation id -> phase, for invocations that have a StepRun.
        capacity: how many more StepRuns may start now (parallelism and global limit).
        cancelled: the user asked to cancel the run.
        timed_out: the run exceeded its timeout.
    """
    steps = spec.get("steps") or []
    mode = spec.get("executionMode") or "continue_on_failure"
    result = Plan()
    failures = [i["id"] for i in steps if phases.get(i["id"]) == "failed"]
    stopping = cancelled or timed_out or (bool(failures) and mode != "continue_on_failure")
    result.cancel_active = cancelled or timed_out or (bool(failures) and mode == "fail_fast")

    for invocation in steps:
        invocation_id = invocation["id"]
        if invocation_id in phases:
            continue
        upstream = upstream_of(invocation)
        if stopping:
            result.skip[invocation_id] = _stop_reason(cancelled, timed_out, failures)
            continue
        upstream_phases = [phases.get(u) for u in upstream]
        blocked = next(
            (u for u, p in zip(upstream, upstream_phases, strict=True) if p in TERMINAL - SUCCESS),
            None,
        )
        if blocked is not None:
            result.skip[invocation_id] = f"upstream step {blocked!r} did not complete"
            continue
        if all(p in SUCCESS for p in upstream_phases) and len(result.start) < capacity:
            result.start.append(invocation_id)

    _conclude(result, steps, phases, cancelled, timed_out, failures)
    return result


def _stop_reason(cancelled: bool, timed_out: bool, failures: list[str]) -> str:
    if cancelled:
        return "the run was cancelled"
    if timed_out:
        return "the run timed out"
    return f"the run stops after step {failures[0]!r} failed"


def _conclude(
    result: Plan,
    steps: list[dict[str, Any]],
    phases: dict[str, str],
    cancelled: bool,
    timed_out: bool,
    failures: list[str],
) -> None:
    final = {**phases, **{i: "skipped" for i in result.skip}}
    result.finished = all(final.get(i["id"]) in TERMINAL for i in steps) and not result.start
    if failures:
        result.failed_step = failures[0]
    if not result.finished:
        result.phase = "running"
        return
    if cancelled:
        result.phase, result.message = "cancelled", "the run was cancelled"
    elif timed_out:
        result.phase, result.message = "failed", "the run exceeded its timeout"
    elif failures or any(p == "cancelled" for p in final.values()):
        result.phase = "failed"
    else:
        result.phase = "completed"


def count_phases(spec_steps: list[dict[str, Any]], phases: dict[str, str]) -> dict[str, int]:
    """Step counts by phase, with invocations that have no StepRun yet as pending."""
    counts: dict[str, int] = {}
    for invocation in spec_steps:
        phase = phases.get(invocation["id"], "pending")
        counts[phase] = counts.get(phase, 0) + 1
    return counts
