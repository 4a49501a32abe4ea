"""`kstep runs`: list pipeline runs and show one run's steps."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from kstep.cli._lookup import find_run, open_client, user_errors
from kstep.cli._render import ago, duration, echo_json, local_time, span, status_word, table

if TYPE_CHECKING:
    from kstep.client import Run, StepRun

logger = logging.getLogger(__name__)

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


@click.group()
def runs() -> None:
    """List pipeline runs and show their steps."""


@runs.command("list")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    multiple=True,
    help="Only runs with this status (repeat for several).",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_runs(pipeline: str | None, status: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List pipeline runs, newest first."""
    client = open_client()
    with user_errors():
        found = client.list_runs(pipeline=pipeline, status=list(status) or None, limit=limit)
    if as_json:
        echo_json([run_json(run) for run in found])
        return
    if not found:
        click.echo("No pipeline runs found.")
        return
    rows = [
        (
            run.name,
            run.pipeline_name,
            run.status,
            ago(run.started_at),
            duration(span(run.started_at, run.finished_at)),
        )
        for run in found
    ]
    click.echo(table(("name", "pipeline", "status", "started", "duration"), rows, 2))


@runs.command("show")
@click.argument("run_reference", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show_run(run_reference: str, as_json: bool) -> None:
    """Show a run (RUN: its name or id) and each of its steps."""
    client = open_client()
    with user_errors():
        found = find_run(client, run_reference)
        if as_json:
            echo_json({**run_json(found), "steps": [step_json(s) for s in found.steps.values()]})
            return
        click.echo(f"Run:       {found.name}")
        click.echo(f"Id:        {found.id}")
        click.echo(f"Pipeline:  {found.pipeline_name} ({found.mode})")
        click.echo(f"Status:    {status_word(found.status)}")
        click.echo(f"Started:   {local_time(found.started_at)} ({ago(found.started_at)})")
        click.echo(f"Duration:  {duration(span(found.started_at, found.finished_at))}")
        if found.parameters:
            shown = ", ".join(f"{key}={value!r}" for key, value in found.parameters.items())
            click.echo(f"Params:    {shown}")
        if found.message:
            click.echo(f"Message:   {found.message}")
        click.echo("")
        click.echo(steps_table(found))
        errors = [s for s in found.steps.values() if s.status == "failed" and s.error_message]
        for step_run in errors:
            click.echo(f"\nStep {step_run.invocation_id!r} failed: {step_run.error_message}")


@runs.command("resume")
@click.argument("run_reference", metavar="RUN")
def resume_run(run_reference: str) -> None:
    """Run an unfinished or failed RUN again, reusing every step it completed.

    The pipeline's function runs again in this process; invocations that already completed
    (matched by invocation id and inputs) are reused instead of executed again. The exit code
    is 1 when the run fails again.
    """
    import sys

    from kstep._errors import RunFailed
    from kstep.cli._run import report

    client = open_client()
    found = find_run(client, run_reference)
    click.echo(f"Resuming run {found.name} of pipeline {found.pipeline_name!r}.")
    with user_errors():
        try:
            finished = client.resume_run(found)
        except RunFailed as failure:
            report(failure.run)
            sys.exit(1)
    report(finished)


def steps_table(found: Run) -> str:
    """A run's steps (latest attempt of each), one row per invocation."""
    rows = [
        (
            step_run.invocation_id,
            step_run.status,
            step_run.attempt,
            duration(step_run.duration),
            "yes" if step_run.status == "cached" else "no",
            step_run.runtime,
        )
        for step_run in found.steps.values()
    ]
    return table(("step", "status", "attempt", "duration", "cached", "runtime"), rows, 1)


def run_json(run: Run) -> dict[str, Any]:
    """A run as JSON."""
    return {
        "id": run.id,
        "name": run.name,
        "pipeline_name": run.pipeline_name,
        "mode": run.mode,
        "status": str(run.status),
        "parameters": run.parameters,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": span(run.started_at, run.finished_at),
        "message": run.message,
        "failed_step": run.failed_step,
    }


def step_json(step_run: StepRun) -> dict[str, Any]:
    """A step run as JSON, with its outputs."""
    return {
        "id": step_run.id,
        "invocation_id": step_run.invocation_id,
        "step_name": step_run.step_name,
        "status": str(step_run.status),
        "attempt": step_run.attempt,
        "runtime": step_run.runtime,
        "cached": step_run.status == "cached",
        "cache_key": step_run.cache_key,
        "started_at": step_run.started_at,
        "finished_at": step_run.finished_at,
        "duration": step_run.duration,
        "error_type": step_run.error_type,
        "error_message": step_run.error_message,
        "outputs": {
            name: {"name": version.name, "version": version.version, "id": version.id}
            for name, version in step_run.outputs.items()
        },
    }
