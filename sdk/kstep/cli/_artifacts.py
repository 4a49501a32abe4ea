"""`kstep artifacts`: list artifact versions and show one with its producer, consumers, lineage."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import click

from kstep.cli._lookup import find_artifact_version, open_client, user_errors
from kstep.cli._render import ago, echo_json, local_time, table
from kstep.stores.artifacts import describe_uri

if TYPE_CHECKING:
    from kstep.client import ArtifactVersion, LineageEdge, StepRun

logger = logging.getLogger(__name__)


@click.group()
def artifacts() -> None:
    """List artifact versions and show where they came from and went."""


@artifacts.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_artifacts(name: str | None, as_json: bool) -> None:
    """List the versions of artifact NAME, or of every artifact."""
    client = open_client()
    with user_errors():
        versions = client.list_artifact_versions(name)
        if as_json:
            echo_json([version_json(version) for version in versions])
            return
        if not versions:
            which = f"named {name!r}" if name else "at all"
            click.echo(f"No artifact versions {which}.")
            return
        rows = [
            (
                version.name,
                version.version,
                short_type(version.data_type),
                producer_label(version.producer),
                ago(version.created_at),
            )
            for version in versions
        ]
    click.echo(table(("name", "version", "type", "producer", "created"), rows))


@artifacts.command("show")
@click.argument("reference", metavar="NAME[:VERSION]|ID")
@click.option("--upstream", is_flag=True, help="Also walk the lineage towards its sources.")
@click.option("--downstream", is_flag=True, help="Also walk the lineage towards its consumers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show_artifact(reference: str, upstream: bool, downstream: bool, as_json: bool) -> None:
    """Show an artifact version: where it is, how it was stored, who made and used it.

    NAME alone means its latest version.
    """
    client = open_client()
    with user_errors():
        version = find_artifact_version(client, reference)
        lineage: dict[str, list[LineageEdge]] = {}
        if upstream:
            lineage["upstream"] = client.lineage(version, direction="upstream")
        if downstream:
            lineage["downstream"] = client.lineage(version, direction="downstream")
        if as_json:
            echo_json(
                {
                    **version_json(version),
                    "metadata": version.metadata,
                    "consumers": [step_run_ref(s) for s in version.consumers],
                    "lineage": {d: [edge_json(e) for e in edges] for d, edges in lineage.items()},
                }
            )
            return
        show_version(version)
        for direction, edges in lineage.items():
            click.echo(f"\nLineage ({direction}):")
            if not edges:
                click.echo("  (none)")
            for edge in edges:
                click.echo(f"  {edge_line(edge)}")


def show_version(version: ArtifactVersion) -> None:
    """Print an artifact version's details."""
    click.echo(f"Artifact:      {version.name} version {version.version}")
    click.echo(f"Id:            {version.id}")
    click.echo(f"URI:           {describe_uri(version.uri)}")
    click.echo(f"Data type:     {version.data_type}")
    click.echo(f"Materializer:  {version.materializer}")
    click.echo(f"Content hash:  {version.content_hash or '-'}")
    click.echo(f"Created:       {local_time(version.created_at)} ({ago(version.created_at)})")
    click.echo(f"Producer:      {producer_label(version.producer)}")
    metadata = version.metadata
    click.echo("Metadata:" + ("" if metadata else "      (none)"))
    for key, value in metadata.items():
        click.echo(f"  {key}: {json.dumps(value)}")
    consumers = version.consumers
    click.echo("Consumers:" + ("" if consumers else "     (none)"))
    for step_run in consumers:
        click.echo(f"  {producer_label(step_run)} ({step_run.status})")


def short_type(data_type: str) -> str:
    """`builtins.list` -> `list`; other types keep their module."""
    return data_type.removeprefix("builtins.")


def producer_label(step_run: StepRun | None) -> str:
    """`<run name>/<invocation id>` of a step run."""
    if step_run is None:
        return "-"
    return f"{step_run.run.name}/{step_run.invocation_id}"


def edge_line(edge: LineageEdge) -> str:
    """One lineage edge: `source -> run/step -> target`."""
    return (
        f"{edge.source.name}:{edge.source.version} -> {producer_label(edge.step_run)} -> "
        f"{edge.target.name}:{edge.target.version}"
    )


def version_json(version: ArtifactVersion) -> dict[str, Any]:
    """An artifact version as JSON."""
    producer = version.producer
    return {
        "id": version.id,
        "name": version.name,
        "version": version.version,
        "uri": version.uri,
        "materializer": version.materializer,
        "data_type": version.data_type,
        "content_hash": version.content_hash,
        "created_at": version.created_at,
        "producer": None if producer is None else step_run_ref(producer),
    }


def step_run_ref(step_run: StepRun) -> dict[str, Any]:
    """A step run as a reference in JSON."""
    return {
        "id": step_run.id,
        "run": step_run.run.name,
        "invocation_id": step_run.invocation_id,
        "attempt": step_run.attempt,
        "status": str(step_run.status),
    }


def edge_json(edge: LineageEdge) -> dict[str, Any]:
    """A lineage edge as JSON."""
    return {
        "source": {"name": edge.source.name, "version": edge.source.version, "id": edge.source.id},
        "step_run": step_run_ref(edge.step_run),
        "target": {"name": edge.target.name, "version": edge.target.version, "id": edge.target.id},
    }
