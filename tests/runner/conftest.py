"""Fixtures for driving the step-runner directly, as the engine and the operator do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kstep._compile import Binding
from kstep._settings import Settings
from kstep.runner import RunInfo, StepRequest
from kstep.stores import Stores
from kstep.stores.metadata import RunRecord, StepRunRecord
from kstep.stores.metadata.store import new_id

MakeRequest = Callable[..., StepRequest]


@pytest.fixture
def stores(kstep_home: Path) -> Iterator[Stores]:
    """The stores of the test's KSTEP_HOME."""
    opened = Stores.open(Settings())
    yield opened
    opened.metadata.close()


@pytest.fixture
def make_request(stores: Stores) -> MakeRequest:
    """Record a run and a step run for a step, and return the request to execute it."""

    def make(
        step: Any,
        inputs: dict[str, Binding] | None = None,
        *,
        attempt: int = 1,
        final_attempt: bool = True,
        runtime: str = "inline",
    ) -> StepRequest:
        run = RunRecord(
            id=new_id(),
            name=f"direct-{new_id()[:6]}",
            pipeline_name="direct",
            mode="static",
            status="running",
            execution_mode="continue_on_failure",
            parameters={},
        )
        stores.metadata.create_run(run)
        step_run_id = new_id()
        logs_uri = stores.artifacts.log_uri(run.id, step_run_id)
        stores.metadata.start_step_run(
            StepRunRecord(
                id=step_run_id,
                run_id=run.id,
                invocation_id=step.name,
                step_name=step.name,
                attempt=attempt,
                status="running",
                runtime=runtime,
                logs_uri=logs_uri,
            )
        )
        return StepRequest(
            run=RunInfo(run.id, run.name, run.pipeline_name),
            step_run_id=step_run_id,
            invocation_id=step.name,
            step=step,
            attempt=attempt,
            final_attempt=final_attempt,
            inputs=dict(inputs or {}),
            logs_uri=logs_uri,
        )

    return make
