"""`Client`: runs, step runs, artifact versions and lineage as recorded."""

from __future__ import annotations

from typing import Annotated

import pytest

from kstep import Client, RunFailed, pipeline, step
from kstep._errors import NotFoundError
from kstep._settings import Settings


@step
def load(rows: int) -> list[int]:
    return list(range(rows))


@step
def split(values: list[int]) -> tuple[Annotated[list[int], "train"], Annotated[list[int], "test"]]:
    return values[:2], values[2:]


@step
def total(values: list[int]) -> int:
    return sum(values)


@step
def combine(parts: list[int]) -> int:
    return sum(parts)


@step
def fail(rows: int) -> int:
    raise ValueError(f"cannot handle {rows} rows")


@pipeline
def numbers(rows: int = 5) -> None:
    train, test = split(load(rows))
    combine([total(train), total(test)])


@pipeline
def broken(rows: int = 1) -> None:
    fail(rows)


def test_client_gets_a_run_by_id_or_name(client: Client) -> None:
    run = numbers()

    by_id, by_name = client.get_run(run.id), client.get_run(run.name)

    assert by_id.name == by_name.name == run.name
    assert by_id.parameters == {"rows": 5}
    assert list(by_id.steps) == ["load", "split", "total", "total_2", "combine"]


def test_client_raises_not_found_for_an_unknown_run(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_run("no-such-run")

    assert str(caught.value) == "no pipeline run has the id or name 'no-such-run'"


def test_client_lists_runs_newest_first_by_pipeline_and_status(client: Client) -> None:
    first = numbers(3)
    with pytest.raises(RunFailed) as caught:
        broken()
    failed = caught.value.run
    last = numbers(4)

    assert [r.id for r in client.list_runs()] == [last.id, failed.id, first.id]
    assert [r.id for r in client.list_runs(pipeline="numbers")] == [last.id, first.id]
    assert [r.id for r in client.list_runs(status="failed")] == [failed.id]
    assert [r.id for r in client.list_runs(status=["completed", "failed"], limit=2)] == [
        last.id,
        failed.id,
    ]
    assert client.list_runs(pipeline="numbers", status="failed") == []


def test_client_gets_artifact_versions_by_name_version_or_id(client: Client) -> None:
    numbers(3)
    numbers(4)

    latest = client.get_artifact_version("train")
    first = client.get_artifact_version("train", 1)

    # split ran again on the new rows, so train got a version 2 of the same content.
    assert (latest.name, latest.version) == ("train", 2)
    assert (first.load(), latest.load()) == ([0, 1], [0, 1])
    assert client.get_artifact_version(first.id) == first
    versions = client.list_artifact_versions("numbers::load::output")
    assert [(v.version, v.load()) for v in versions] == [(1, [0, 1, 2]), (2, [0, 1, 2, 3])]
    assert client.get_artifact_version("numbers::load::output").version == 2


def test_client_raises_not_found_for_unknown_artifacts(client: Client) -> None:
    numbers(3)

    with pytest.raises(NotFoundError) as unknown_name:
        client.get_artifact_version("model")
    with pytest.raises(NotFoundError) as unknown_version:
        client.get_artifact_version("train", 7)

    assert str(unknown_name.value) == (
        "no artifact is named 'model' and no artifact version has that id"
    )
    assert str(unknown_version.value) == "artifact 'train' has no version 7 in the metadata store"


def test_client_step_runs_expose_inputs_outputs_and_producers(client: Client) -> None:
    run = client.get_run(numbers(5).id)

    split_run, combine_run = run.steps["split"], run.steps["combine"]

    assert split_run.inputs == {"values": run.steps["load"].outputs["output"]}
    assert set(split_run.outputs) == {"train", "test"}
    assert split_run.outputs["test"].load() == [2, 3, 4]
    assert split_run.outputs["train"].producer.id == split_run.id
    assert combine_run.inputs["parts"] == [
        run.steps["total"].outputs["output"],
        run.steps["total_2"].outputs["output"],
    ]
    assert combine_run.outputs["output"].load() == 10
    assert [c.invocation_id for c in split_run.outputs["train"].consumers] == ["total"]
    assert split_run.status == "completed"
    assert split_run.run.id == run.id


def test_client_lineage_walks_upstream_to_the_sources(client: Client) -> None:
    run = numbers(5)
    result = client.get_artifact_version(run.steps["combine"].outputs["output"].id)

    edges = client.lineage(result, direction="upstream")

    described = sorted(
        (edge.source.name, edge.step_run.invocation_id, edge.target.name) for edge in edges
    )
    assert described == [
        ("numbers::load::output", "split", "test"),
        ("numbers::load::output", "split", "train"),
        ("numbers::total::output", "combine", "numbers::combine::output"),
        ("numbers::total::output", "combine", "numbers::combine::output"),
        ("test", "total_2", "numbers::total::output"),
        ("train", "total", "numbers::total::output"),
    ]


def test_client_lineage_walks_downstream_to_the_results(client: Client) -> None:
    run = numbers(5)
    source = client.get_artifact_version(run.steps["split"].outputs["train"].id)

    edges = client.lineage(source, direction="downstream")

    described = [
        (edge.source.name, edge.step_run.invocation_id, edge.target.name) for edge in edges
    ]
    assert described == [
        ("train", "total", "numbers::total::output"),
        ("numbers::total::output", "combine", "numbers::combine::output"),
    ]


def test_client_lineage_rejects_an_unknown_direction(client: Client) -> None:
    run = numbers(2)
    version = client.get_artifact_version(run.steps["load"].outputs["output"].id)

    with pytest.raises(ValueError, match="direction='sideways' is invalid"):
        client.lineage(version, direction="sideways")  # type: ignore[arg-type]


def test_client_reads_the_stores_named_by_explicit_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = numbers(2)

    elsewhere = Client(Settings(home=str(tmp_path / "elsewhere")))
    here = Client(Settings())

    assert elsewhere.list_runs() == []
    assert [r.id for r in here.list_runs()] == [run.id]


def test_client_run_refresh_sees_later_changes(client: Client) -> None:
    run = numbers(2)
    view = client.get_run(run.id)

    client.stores.metadata.update_run(run.id, message="annotated")

    assert view.message is None
    assert view.refresh().message == "annotated"
