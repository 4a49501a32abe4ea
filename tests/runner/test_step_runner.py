"""The step-runner: executing one attempt of a step and recording everything about it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import steps_isolated
from kstep import Materializer, get_step_context, log_metadata, step
from kstep._compile import ArtifactRef, InputList, Param
from kstep._settings import Settings
from kstep.runner import StepRequest, execute_step, load_artifact
from kstep.runner.__main__ import main as runner_main
from kstep.runner._isolated import request_to_json
from kstep.stores import Stores

MakeRequest = Callable[..., StepRequest]

failures: list[BaseException] = []


@step
def measure(rows: int) -> list[int]:
    context = get_step_context()
    log_metadata({"rows": rows, "attempt": context.attempt})
    print(f"measuring {rows} rows")
    return list(range(rows))


@step
def add_up(values: list[int], extra: list[list[int]], offset: int) -> int:
    return sum(values) + sum(sum(part) for part in extra) + offset


@step(on_failure=failures.append)
def broken(rows: int) -> int:
    raise ValueError(f"{rows} rows are too few")


def test_step_runner_saves_outputs_and_records_completion(
    stores: Stores, make_request: MakeRequest
) -> None:
    request = make_request(measure, {"rows": Param(3)})

    outcome = execute_step(request, stores, Settings())

    assert outcome.status == "completed"
    record = outcome.outputs["output"]
    assert (record.name, record.version) == ("direct::measure::output", 1)
    assert load_artifact(record, stores) == [0, 1, 2]
    step_run = stores.metadata.get_step_run(request.step_run_id)
    assert step_run.status == "completed"
    assert step_run.finished_at is not None
    assert stores.metadata.metadata_of("step_run", step_run.id) == {"attempt": 1, "rows": 3}
    assert stores.artifacts.read_log(request.logs_uri) == "measuring 3 rows\n"
    assert stores.metadata.outputs_of(step_run.id) == {"output": record}


def test_step_runner_loads_artifact_inputs_lists_and_literals(
    stores: Stores, make_request: MakeRequest
) -> None:
    first = execute_step(make_request(measure, {"rows": Param(4)}), stores, Settings())
    second = execute_step(make_request(measure, {"rows": Param(2)}), stores, Settings())
    produced = [first.outputs["output"], second.outputs["output"]]
    inputs = {
        "values": ArtifactRef(produced[0].id),
        "extra": InputList((ArtifactRef(produced[1].id), Param([10]))),
        "offset": Param(100),
    }
    request = make_request(add_up, inputs)

    outcome = execute_step(request, stores, Settings())

    assert load_artifact(outcome.outputs["output"], stores) == (0 + 1 + 2 + 3) + (0 + 1 + 10) + 100


def test_step_runner_loads_each_item_of_an_input_list(
    stores: Stores, make_request: MakeRequest
) -> None:
    @step
    def count(parts: list[Any]) -> list[Any]:
        return parts

    produced = execute_step(make_request(measure, {"rows": Param(2)}), stores, Settings())
    inputs = {"parts": InputList((ArtifactRef(produced.outputs["output"].id), Param("x")))}

    outcome = execute_step(make_request(count, inputs), stores, Settings())

    assert load_artifact(outcome.outputs["output"], stores) == [[0, 1], "x"]


@pytest.mark.parametrize(("final_attempt", "status"), [(True, "failed"), (False, "retrying")])
def test_step_runner_records_a_failure_and_hooks_only_the_final_attempt(
    stores: Stores, make_request: MakeRequest, final_attempt: bool, status: str
) -> None:
    failures.clear()
    request = make_request(broken, {"rows": Param(1)}, final_attempt=final_attempt)

    outcome = execute_step(request, stores, Settings())

    assert outcome.status == status
    assert isinstance(outcome.error, ValueError)
    step_run = stores.metadata.get_step_run(request.step_run_id)
    assert (step_run.status, step_run.error_type, step_run.error_message) == (
        status,
        "builtins.ValueError",
        "1 rows are too few",
    )
    assert 'raise ValueError(f"{rows} rows are too few")' in step_run.error_traceback
    assert "ValueError: 1 rows are too few" in stores.artifacts.read_log(request.logs_uri)
    assert [str(error) for error in failures] == (["1 rows are too few"] if final_attempt else [])


class HalfWritten:
    pass


class FailingMaterializer(Materializer):
    types = (HalfWritten,)

    def save(self, value: HalfWritten) -> None:
        with self.open("part-1.bin", "wb") as file:
            file.write(b"written")
        raise OSError("disk full")


def test_step_runner_leaves_nothing_visible_when_saving_fails(
    stores: Stores, make_request: MakeRequest, kstep_home: Path
) -> None:
    @step
    def produce() -> HalfWritten:
        return HalfWritten()

    request = make_request(produce)

    outcome = execute_step(request, stores, Settings())

    assert outcome.status == "failed"
    assert str(outcome.error) == "disk full"
    assert stores.metadata.count("artifact_versions") == 0
    artifact_dir = kstep_home / "artifacts" / "direct::produce::output"
    assert [p.name for p in artifact_dir.iterdir()] == [".staging"]
    assert list((artifact_dir / ".staging").iterdir()) == []


def test_step_runner_keeps_the_outcome_when_a_hook_fails(
    stores: Stores, make_request: MakeRequest
) -> None:
    def noisy_hook() -> None:
        raise RuntimeError("notification service down")

    @step(on_success=noisy_hook)
    def fine() -> int:
        return 1

    request = make_request(fine)

    outcome = execute_step(request, stores, Settings())

    assert outcome.status == "completed"
    logs = stores.artifacts.read_log(request.logs_uri)
    assert "The on_success hook of step 'fine' failed." in logs
    assert "RuntimeError: notification service down" in logs


def run_runner(request_file: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the step-runner entry point in its own process, as a Job pod does."""
    return subprocess.run(
        [sys.executable, "-m", "kstep.runner", "--request", request_file],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.mark.parametrize(
    ("step_definition", "code", "status"),
    [(steps_isolated.describe_context, 0, "completed"), (steps_isolated.always_fails, 1, "failed")],
)
def test_step_runner_entry_point_exits_with_the_outcome(
    stores: Stores,
    make_request: MakeRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step_definition: Any,
    code: int,
    status: str,
) -> None:
    monkeypatch.setenv("TEST_HOOK_FILE", str(tmp_path / "hook.txt"))
    request = make_request(step_definition, {"value": Param(5)}, runtime="isolated")
    payload = json.dumps(request_to_json(request))

    result = run_runner("-", stdin=payload)

    assert result.returncode == code, result.stderr
    step_run = stores.metadata.get_step_run(request.step_run_id)
    assert step_run.status == status
    assert step_run.owner is not None and step_run.owner["pid"] != os.getpid()


def test_step_runner_entry_point_rejects_a_malformed_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text("{not json")

    code = runner_main(["--request", str(request_file)])

    assert code == 2
    assert capsys.readouterr().err.startswith(
        "kstep-runner: Expecting property name enclosed in double quotes"
    )


def test_step_runner_entry_point_records_a_step_it_cannot_import(
    stores: Stores, make_request: MakeRequest, tmp_path: Path
) -> None:
    request = make_request(steps_isolated.describe_context, {"value": Param(1)})
    data = request_to_json(request)
    data["step"] = "engine.steps_gone:describe_context"
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(data))

    code = runner_main(["--request", str(request_file)])

    assert code == 2
    step_run = stores.metadata.get_step_run(request.step_run_id)
    assert step_run.status == "failed"
    assert step_run.error_message == (
        "step 'describe_context' cannot start: reference 'engine.steps_gone:describe_context': "
        "module 'engine.steps_gone' cannot be imported (No module named 'engine.steps_gone'); is "
        "the code installed or on PYTHONPATH?"
    )
    assert stores.artifacts.read_log(request.logs_uri) == step_run.error_message + "\n"
