"""Resuming a failed dynamic run in this process: finished work is reused, never executed again.

The pipelines are module-level so that resume can import them by reference. What their
functions do differently on the next run lives in `BEHAVIOUR`, which a test changes before it
resumes, as a user would change the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dynamic.steps import SideChannel, add, note, square, total
from kstep import RunFailed, pipeline, step, unmapped
from kstep._errors import ExecutionError
from kstep.client import Client, Run
from kstep.engine import LocalEngine
from kstep.engine._owner import current_owner

BEHAVIOUR: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def behaviour() -> Iterator[dict[str, Any]]:
    BEHAVIOUR.update(reverse=False, offset=0, gate_opens=False, work_step="square")
    yield BEHAVIOUR
    BEHAVIOUR.clear()


@step
def gate(value: int) -> int:
    """Fails until the test opens it: the failure that makes a run worth resuming."""
    note("start")
    if not BEHAVIOUR["gate_opens"]:
        raise RuntimeError("the gate is closed")
    note("end")
    return value


@step
def cube(x: int) -> int:
    note("start")
    note("end")
    return x**3


@pipeline(dynamic=True, enable_cache=False)
def resumable(n: int = 4) -> None:
    order = list(range(n))
    if BEHAVIOUR["reverse"]:
        order.reverse()
    squares = {i: square(i + BEHAVIOUR["offset"]) for i in order}
    sums = add.map(a=[squares[i] for i in range(n)], b=unmapped(1))
    gate(total(sums))


@pipeline(dynamic=True, enable_cache=False)
def explicit_ids() -> None:
    work = cube if BEHAVIOUR["work_step"] == "cube" else square
    gate(work(3, id="work"))


def fail_once(client: Client, pipeline_: Any, **parameters: Any) -> Run:
    """Run a pipeline whose gate is closed; return the failed run."""
    with pytest.raises(RunFailed) as raised:
        pipeline_(**parameters)
    run = client.get_run(raised.value.run.id)
    assert run.status == "failed"
    return run


def expected_total(n: int, offset: int = 0) -> int:
    return sum((i + offset) ** 2 + 1 for i in range(n))


def test_resume_reuses_every_completed_invocation(
    client: Client, side_channel: SideChannel
) -> None:
    failed = fail_once(client, resumable, n=4)
    before = {invocation: s.id for invocation, s in failed.steps.items()}
    BEHAVIOUR["gate_opens"] = True

    resumed = client.resume_run(failed.id)

    assert resumed.id == failed.id
    assert resumed.status == "completed"
    assert resumed.message is None
    assert resumed.steps["gate"].outputs["output"].load() == expected_total(4)
    counts = side_channel.counts()
    assert counts.pop("gate") == 2
    assert set(counts.values()) == {1}
    assert len(counts) == 4 + 4 + 1
    # Reused by invocation id: the very step runs of the first run, no new rows.
    for invocation, step_run_id in before.items():
        if invocation != "gate":
            assert resumed.steps[invocation].id == step_run_id
    assert [(a.attempt, str(a.status)) for a in resumed.steps["gate"].attempts] == [
        (1, "failed"),
        (2, "completed"),
    ]


def test_resume_reexecutes_nothing_completed_when_the_order_changed(
    client: Client, side_channel: SideChannel
) -> None:
    failed = fail_once(client, resumable, n=4)
    square_4 = failed.steps["square_4"]
    BEHAVIOUR.update(gate_opens=True, reverse=True)

    resumed = client.resume_run(failed)

    assert resumed.status == "completed"
    assert resumed.steps["gate"].outputs["output"].load() == expected_total(4)
    counts = side_channel.counts()
    assert counts.pop("gate") == 2
    assert set(counts.values()) == {1}
    # square(3) is now the first call, 'square'; it reuses what 'square_4' computed.
    reused = resumed.steps["square"]
    assert reused.status == "cached"
    assert reused.original_step_run_id == square_4.id
    assert reused.outputs == square_4.outputs


def test_resume_executes_only_invocations_whose_inputs_changed(
    client: Client, side_channel: SideChannel
) -> None:
    failed = fail_once(client, resumable, n=4)
    first = len(side_channel.executions())
    BEHAVIOUR.update(gate_opens=True, offset=1)

    resumed = client.resume_run(failed.id)

    assert resumed.steps["gate"].outputs["output"].load() == expected_total(4, offset=1)
    executed = [e.invocation for e in side_channel.executions()[first:]]
    # square(4) and what consumes it are new work; squares of 1..3 were computed before.
    assert sorted(executed) == ["gate", "map:add:3", "square_4", "total"]


def test_resume_executes_a_different_step_called_with_a_completed_id(
    client: Client, side_channel: SideChannel
) -> None:
    failed = fail_once(client, explicit_ids)
    BEHAVIOUR.update(gate_opens=True, work_step="cube")

    resumed = client.resume_run(failed.id)

    assert resumed.steps["work"].step_name == "cube"
    assert resumed.steps["gate"].outputs["output"].load() == 27
    assert side_channel.counts()["work"] == 2


def test_engine_resume_takes_a_run_name() -> None:
    with pytest.raises(RunFailed) as raised:
        resumable(n=2)
    BEHAVIOUR["gate_opens"] = True

    resumed = LocalEngine.default().resume(raised.value.run.name)

    assert resumed.status == "completed"
    assert resumed.steps["gate"].outputs["output"].load() == expected_total(2)


def test_resume_of_a_run_that_fails_again_raises_run_failed(client: Client) -> None:
    failed = fail_once(client, resumable, n=2)

    with pytest.raises(RunFailed) as raised:
        client.resume_run(failed.id)

    run = raised.value.run
    assert run.status == "failed"
    assert run.failed_step == "gate"
    assert [a.attempt for a in run.steps["gate"].attempts] == [1, 2]


def test_resume_refuses_a_completed_run(client: Client) -> None:
    BEHAVIOUR["gate_opens"] = True
    run = resumable(n=1)

    with pytest.raises(ExecutionError) as raised:
        client.resume_run(run.id)

    assert str(raised.value) == f"run {run.name!r} already completed; there is nothing to resume"


def test_resume_refuses_a_run_whose_process_is_alive(client: Client) -> None:
    failed = fail_once(client, resumable, n=1)
    client.stores.metadata.update_run(failed.id, status="running", owner=current_owner())

    with pytest.raises(ExecutionError) as raised:
        client.resume_run(failed.id)

    assert str(raised.value) == (
        f"run {failed.name!r} is still running (owner {current_owner()}); resume it once it "
        "has ended"
    )


def test_resume_refuses_a_pipeline_defined_in_a_function(client: Client) -> None:
    @pipeline(dynamic=True)
    def local() -> None:
        raise RuntimeError("fails at once")

    failed = fail_once(client, local)

    with pytest.raises(ExecutionError) as raised:
        client.resume_run(failed.id)

    assert str(raised.value) == (
        f"run {failed.name!r} has no importable pipeline (it was defined interactively); only "
        "pipelines defined in a module or script file can be resumed"
    )
