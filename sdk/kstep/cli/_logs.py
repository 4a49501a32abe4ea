"""`kstep logs RUN STEP`: print what a step printed and logged."""

from __future__ import annotations

import logging

import click

from kstep.cli._lookup import find_run, find_step_run, open_client, user_errors

logger = logging.getLogger(__name__)


@click.command()
@click.argument("run_reference", metavar="RUN")
@click.argument("invocation_id", metavar="STEP")
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    help="Which attempt (default: the latest).",
)
def logs(run_reference: str, invocation_id: str, attempt: int | None) -> None:
    """Print the logs of step STEP (its invocation id) in run RUN (its name or id)."""
    client = open_client()
    with user_errors():
        step_run = find_step_run(find_run(client, run_reference), invocation_id, attempt)
        text = step_run.logs()
    if not text and step_run.status == "skipped":
        click.echo(f"Step {invocation_id!r} was skipped; it has no logs.", err=True)
        return
    click.echo(text, nl=not text.endswith("\n") and bool(text))
