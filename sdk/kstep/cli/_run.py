"""`kstep run TARGET`: run a pipeline on the local engine."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from kstep.cli._lookup import user_errors
from kstep.cli._render import duration, span, status_word
from kstep.cli._runs import steps_table

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep.client import Run

logger = logging.getLogger(__name__)

TARGET_FORMS = "path/to/file.py:pipeline_name or module:pipeline_name"


PARAM_OPTION = click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A pipeline parameter; VALUE is read as JSON, else taken as a plain string.",
)


@click.command()
@click.argument("target")
@PARAM_OPTION
def run(target: str, params: tuple[str, ...]) -> None:
    """Run the pipeline TARGET on the local engine.

    TARGET is path/to/file.py:pipeline_name or module:pipeline_name. The exit code is 1 when
    the run fails.
    """
    from kstep._errors import ParameterError, RunFailed

    pipeline = load_pipeline(target)
    parameters = parse_parameters(params)
    click.echo(f"Running pipeline {pipeline.name!r} on the local engine.")
    with user_errors():
        try:
            finished = pipeline(**parameters)
        except RunFailed as failure:
            report(failure.run)
            sys.exit(1)
        except ParameterError as error:
            raise click.UsageError(str(error)) from None
    report(finished)


def load_pipeline(target: str) -> Pipeline:
    """Import the pipeline a TARGET names."""
    from kstep._errors import ExecutionError
    from kstep._pipelines import Pipeline
    from kstep.runner._references import import_reference

    location, separator, name = target.rpartition(":")
    if not separator or not location or not name:
        raise click.BadParameter(f"{target!r} names no pipeline; expected {TARGET_FORMS}")
    if not location.endswith(".py") and os.getcwd() not in sys.path:
        # Like `python -m`: modules in the current directory are importable.
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = import_reference(target)
    except ExecutionError as error:
        raise click.BadParameter(f"{error}; expected {TARGET_FORMS}") from None
    if not isinstance(found, Pipeline):
        raise click.BadParameter(
            f"{name!r} in {location!r} is {found!r}, not a @pipeline; expected {TARGET_FORMS}"
        )
    return found


def parse_parameters(params: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` options as pipeline parameters (JSON values, else plain strings)."""
    parameters: dict[str, Any] = {}
    for item in params:
        key, separator, text = item.partition("=")
        if not separator or not key.isidentifier():
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE (for example -p rows=100 or -p name=iris)",
                param_hint="'-p' / '--param'",
            )
        try:
            parameters[key] = json.loads(text)
        except ValueError:
            parameters[key] = text
    return parameters


def report(finished: Run) -> None:
    """Print a finished run: its name, each step's status, and how it ended."""
    click.echo(f"Run {finished.name} of pipeline {finished.pipeline_name!r}:")
    click.echo(steps_table(finished))
    took = duration(span(finished.started_at, finished.finished_at))
    line = f"Run {finished.name} {status_word(finished.status)} in {took}"
    if finished.message:
        line += f": {finished.message.rstrip('.')}"
    click.echo(line + ".")
