"""Finding what a user named on the command line, with errors that say what exists instead."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from kstep.client import ArtifactVersion, Client, Run, StepRun

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn kstep's own errors into one-line messages (exit code 1) instead of tracebacks.

    Invalid `KSTEP_*` settings are reported the same way, naming the variable.
    """
    from pydantic import ValidationError

    from kstep._errors import KstepError

    try:
        yield
    except KstepError as error:
        raise click.ClickException(str(error)) from None
    except ValidationError as error:
        if error.title != "Settings":
            raise
        problems = "; ".join(
            f"KSTEP_{'_'.join(str(part) for part in problem['loc']).upper()}="
            f"{problem.get('input')!r} is invalid: {problem['msg']}"
            for problem in error.errors()
        )
        raise click.ClickException(problems) from None


def open_client() -> Client:
    """A client on the stores the environment's settings name."""
    from kstep.client import Client

    with user_errors():
        return Client()


def find_run(client: Client, reference: str) -> Run:
    """A run by name or id."""
    from kstep._errors import NotFoundError

    try:
        return client.get_run(reference)
    except NotFoundError:
        raise click.ClickException(
            f"no pipeline run has the name or id {reference!r}; "
            "`kstep runs list` shows the runs there are"
        ) from None


def find_step_run(run: Run, invocation_id: str, attempt: int | None = None) -> StepRun:
    """The step run of an invocation in a run: its latest attempt, or the one asked for."""
    step_run = run.steps.get(invocation_id)
    if step_run is None:
        known = ", ".join(run.steps) or "none"
        raise click.ClickException(
            f"run {run.name!r} has no step {invocation_id!r}; its steps are: {known}"
        )
    if attempt is None:
        return step_run
    for candidate in step_run.attempts:
        if candidate.attempt == attempt:
            return candidate
    known = ", ".join(str(a.attempt) for a in step_run.attempts)
    raise click.ClickException(
        f"step {invocation_id!r} of run {run.name!r} has no attempt {attempt}; "
        f"its attempts are: {known}"
    )


def find_artifact_version(client: Client, reference: str) -> ArtifactVersion:
    """An artifact version by `NAME` (the latest), `NAME:VERSION` or id."""
    from kstep._errors import NotFoundError

    # Generated artifact names contain '::', so only a final ':<digits>' is a version.
    name, separator, version = reference.rpartition(":")
    if separator and name and not name.endswith(":") and version.isdigit():
        try:
            return client.get_artifact_version(name, int(version))
        except NotFoundError:
            pass
    try:
        return client.get_artifact_version(reference)
    except NotFoundError:
        raise click.ClickException(
            f"no artifact version matches {reference!r}; expected NAME, NAME:VERSION or an "
            "artifact version id (`kstep artifacts list` shows the artifacts there are)"
        ) from None
