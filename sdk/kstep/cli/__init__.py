"""The `kstep` command line: run pipelines and inspect runs, logs and artifacts.

Each command group lives in its own module and adds itself to `main` here. Commands import
the engine, the stores and the client only when they run, so `kstep --help` stays fast.
"""

from __future__ import annotations

import click

from kstep.cli._artifacts import artifacts
from kstep.cli._cluster import compile_run, submit_run
from kstep.cli._logs import logs
from kstep.cli._run import run
from kstep.cli._runs import runs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kstep", prog_name="kstep")
def main() -> None:
    """Run kstep pipelines and inspect their runs, logs and artifacts.

    Runs and artifacts are read from the stores that the KSTEP_* environment variables name
    (by default SQLite and a directory under ~/.kstep).
    """


main.add_command(run)
main.add_command(runs)
main.add_command(logs)
main.add_command(artifacts)
main.add_command(compile_run)
main.add_command(submit_run)

__all__ = ["main"]
