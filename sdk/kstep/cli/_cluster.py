"""`kstep compile` and `kstep submit`: static or dynamic pipelines on a Kubernetes cluster."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from kstep.cli._lookup import user_errors
from kstep.cli._run import PARAM_OPTION, load_pipeline, parse_parameters, report

logger = logging.getLogger(__name__)

_IMAGE = click.option("--image", help="Image of the run's pods (default: the operator's).")
_NO_PACK = click.option(
    "--code-in-image",
    is_flag=True,
    help="The image contains the code: do not pack it into the artifact store.",
)
_NAME = click.option("--name", help="The PipelineRun's name (default: pipeline-time-random).")


@click.command("compile")
@click.argument("target")
@PARAM_OPTION
@_IMAGE
@_NO_PACK
@_NAME
@click.option("--namespace", "-n", help="Namespace written into the manifest.")
def compile_run(
    target: str,
    params: tuple[str, ...],
    image: str | None,
    code_in_image: bool,
    name: str | None,
    namespace: str | None,
) -> None:
    """Print the PipelineRun manifest of TARGET, for `kubectl apply -f`.

    TARGET is path/to/file.py:pipeline_name or module:pipeline_name. Unless --code-in-image,
    the code is packed into the artifact store (KSTEP_ARTIFACT_ROOT must be s3://...) and the
    manifest points at the archive.
    """
    from kstep._errors import CodeArchiveError
    from kstep._settings import Settings
    from kstep.cluster.code import pack_code
    from kstep.cluster.render import render_pipeline_run, to_yaml
    from kstep.cluster.specs import CodeSpec
    from kstep.stores.artifacts import open_artifact_store

    pipeline = load_pipeline(target)
    parameters = parse_parameters(params)
    with user_errors():
        code: CodeSpec | None = CodeSpec(image=image) if image else None
        code_root = None
        if not code_in_image:
            from kstep.cluster.code import default_code_root

            code_root = default_code_root(pipeline.fn.__module__)
            try:
                code = pack_code(code_root, open_artifact_store(Settings()), image=image)
            except CodeArchiveError as error:
                raise click.ClickException(
                    f"{error} (on the command line: --image IMAGE --code-in-image)"
                ) from None
        manifest = render_pipeline_run(
            pipeline, parameters, name=name, namespace=namespace, code=code, code_root=code_root
        )
        click.echo(to_yaml(manifest), nl=False)


@click.command("submit")
@click.argument("target")
@PARAM_OPTION
@_IMAGE
@_NO_PACK
@_NAME
@click.option("--namespace", "-n", help="Namespace of the run (default: the kubeconfig's).")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it ends.")
def submit_run(
    target: str,
    params: tuple[str, ...],
    image: str | None,
    code_in_image: bool,
    name: str | None,
    namespace: str | None,
    wait: bool,
) -> None:
    """Run TARGET on the cluster of the current kubeconfig.

    With --wait, print each step's phase as it changes, then the finished run; the exit code
    is 1 when the run fails.
    """
    from kstep._errors import RunFailed
    from kstep.cluster.submit import submit

    pipeline = load_pipeline(target)
    parameters = parse_parameters(params)
    with user_errors():
        cluster_run = submit(
            pipeline,
            parameters,
            namespace=namespace,
            name=name,
            image=image,
            pack=not code_in_image,
        )
        click.echo(f"Submitted PipelineRun {cluster_run.namespace}/{cluster_run.name}.")
        if not wait:
            return

        def on_step(invocation_id: str, phase: str) -> None:
            click.echo(f"  {invocation_id}: {phase}")

        try:
            finished: Any = cluster_run.wait(on_step=on_step)
        except RunFailed as failure:
            report(failure.run)
            sys.exit(1)
    report(finished)
