"""The step-runner with code archives, requests in environment variables and termination messages.

Packing for a cluster refuses a local artifact root, but unpacking works the same on any store,
so these tests put the archive in the test's local artifact directory and run
`python -m kstep.runner` as a Job pod would: request in `KSTEP_STEP_REQUEST`, code only in the
archive (the working directory and PYTHONPATH do not contain it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cluster_sdk_support import EXAMPLES

from kstep._settings import Settings
from kstep.client import Client
from kstep.cluster.code import pack_code
from kstep.cluster.render import render_pipeline_run
from kstep.cluster.specs import CodeSpec
from kstep.runner.__main__ import TERMINATION_MESSAGE_LIMIT, _Report, termination_message
from kstep.runner._isolated import rebuild_step, step_options
from kstep.runner._references import import_reference
from kstep.stores import Stores
from kstep.stores.metadata import RunRecord, StepRunRecord, utcnow
from kstep.stores.metadata.store import new_id

STEPS = """
from typing import Annotated

from kstep import step


@step
def double(value: int) -> Annotated[int, "doubled"]:
    print("doubling", value)
    return value * 2


@step
def explode(value: int) -> int:
    raise ValueError("boom " * 2000)
"""

OPTIONS = {
    "enable_cache": None,
    "retry": {"max_retries": 0, "delay": 0.0, "backoff": 1.0},
    "runtime": None,
    "cache_expires_after": None,
    "timeout": None,
    "pod": None,
    "output_materializers": {},
    "on_failure": None,
    "on_success": None,
}


@dataclass
class Attempt:
    """A run and a running step run in the metadata store, and a request for the runner."""

    stores: Stores
    code: CodeSpec
    run_id: str
    step_run_id: str
    workdir: Path

    def request(self, step: str, value: Any = 21, *, rendered: bool = False) -> dict[str, Any]:
        options = {"name": step, **OPTIONS}
        if rendered:
            # As a rendered manifest carries them: options that are None are left out.
            options = {key: value for key, value in options.items() if value is not None}
        return {
            "run": {"id": self.run_id, "name": "archived-1", "pipeline_name": "archived"},
            "step_run_id": self.step_run_id,
            "invocation_id": step,
            "step": f"archived_steps:{step}",
            "options": options,
            "attempt": 1,
            "final_attempt": True,
            "inputs": {"value": {"param": value}},
            "code": self.code.model_dump(by_alias=True, exclude_none=True),
        }

    def run_runner(self, source: str, **environment: str) -> tuple[int, dict[str, Any] | None]:
        termination = self.workdir / "termination-log"
        termination.unlink(missing_ok=True)
        env = {
            **os.environ,
            "KSTEP_TERMINATION_MESSAGE_PATH": str(termination),
            "KSTEP_ECHO_STEP_LOGS": "false",
            **environment,
        }
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            [sys.executable, "-m", "kstep.runner", "--request", source],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        message = termination.read_text(encoding="utf-8") if termination.exists() else None
        if message is not None:
            assert "\n" not in message
            assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
        return done.returncode, json.loads(message) if message else None


@pytest.fixture
def attempt(tmp_path: Path, kstep_home: Path) -> Iterator[Attempt]:
    tree = tmp_path / "user-code"
    tree.mkdir()
    (tree / "archived_steps.py").write_text(STEPS, encoding="utf-8")
    workdir = tmp_path / "pod"
    workdir.mkdir()
    stores = Stores.open(Settings())
    code = pack_code(tree, stores.artifacts, image="kstep:dev", allow_local_store=True)

    run_id, step_run_id, now = new_id(), new_id(), utcnow()
    stores.metadata.create_run(
        RunRecord(
            id=run_id,
            name="archived-1",
            pipeline_name="archived",
            mode="static",
            status="running",
            execution_mode="continue_on_failure",
            parameters={},
            started_at=now,
        )
    )
    stores.metadata.start_step_run(
        StepRunRecord(
            id=step_run_id,
            run_id=run_id,
            invocation_id="double",
            step_name="double",
            attempt=1,
            status="running",
            runtime="isolated",
            started_at=now,
        )
    )
    yield Attempt(stores, code, run_id, step_run_id, workdir)
    stores.metadata.close()


def test_runner_runs_a_step_from_a_code_archive_given_in_an_env_variable(
    attempt: Attempt, kstep_home: Path
) -> None:
    request = json.dumps(attempt.request("double", rendered=True))

    code, message = attempt.run_runner("env:KSTEP_STEP_REQUEST", KSTEP_STEP_REQUEST=request)

    assert code == 0
    step_run = Client(stores=attempt.stores).get_step_run(attempt.step_run_id)
    assert step_run.status == "completed"
    assert step_run.outputs["doubled"].load() == 42
    assert "doubling 21" in step_run.logs()
    assert message == {
        "status": "completed",
        "stepRunId": attempt.step_run_id,
        "outputs": {"doubled": step_run.outputs["doubled"].id},
        "errorType": None,
        "message": None,
    }
    assert (kstep_home / "code" / str(attempt.code.archive_sha256) / "archived_steps.py").exists()


def test_runner_reports_a_failed_step_in_a_termination_message_within_4_kib(
    attempt: Attempt,
) -> None:
    request = json.dumps(attempt.request("explode"))

    code, message = attempt.run_runner("env:KSTEP_STEP_REQUEST", KSTEP_STEP_REQUEST=request)

    assert code == 1
    assert message is not None
    assert message["status"] == "failed"
    assert message["errorType"] == "builtins.ValueError"
    assert message["message"].startswith("boom boom ")
    assert message["message"].endswith("...")
    assert message["truncated"] is True
    step_run = Client(stores=attempt.stores).get_step_run(attempt.step_run_id)
    assert step_run.status == "failed"
    assert step_run.error_type == "builtins.ValueError"


def test_runner_fails_the_attempt_when_the_archive_does_not_match_its_sha256(
    attempt: Attempt,
) -> None:
    Path(str(attempt.code.archive)).write_bytes(b"damaged")
    request = json.dumps(attempt.request("double"))

    code, message = attempt.run_runner("env:KSTEP_STEP_REQUEST", KSTEP_STEP_REQUEST=request)

    assert code == 2
    assert message is not None
    assert message["status"] == "failed"
    assert message["errorType"] == "kstep._errors.CodeArchiveError"
    assert f"not the expected {attempt.code.archive_sha256}" in message["message"]
    step_run = Client(stores=attempt.stores).get_step_run(attempt.step_run_id)
    assert step_run.status == "failed"
    assert step_run.error_message is not None
    assert step_run.error_message.startswith("step 'double' cannot start: code archive")


def test_runner_exits_2_when_the_request_variable_is_unset(attempt: Attempt) -> None:
    code, message = attempt.run_runner("env:KSTEP_NO_SUCH_REQUEST")

    assert code == 2
    assert message == {
        "status": "error",
        "stepRunId": None,
        "outputs": {},
        "errorType": "builtins.ValueError",
        "message": "--request env:KSTEP_NO_SUCH_REQUEST: the environment variable "
        "KSTEP_NO_SUCH_REQUEST is unset",
    }


def test_rebuild_step_reads_absent_options_as_none() -> None:
    fan_out = import_reference(f"{EXAMPLES}/fan_out.py:fan_out")
    definitions = render_pipeline_run(fan_out, name="f")["spec"]["definitions"]
    module = sys.modules[fan_out.fn.__module__]
    heavy_key = next(key for key in definitions if key.startswith("score-"))
    reference = f"{fan_out.fn.__module__}:score"

    plain = rebuild_step(reference, definitions["score"]["options"])
    heavy = rebuild_step(reference, definitions[heavy_key]["options"])

    assert plain is module.score
    assert step_options(heavy) == step_options(module.heavy_score)
    assert "timeout" not in definitions["score"]["options"]


@pytest.mark.parametrize("text", ["x" * 10_000, "\u00e9\u4e2d" * 3_000, '\n\t"\\' * 3_000])
def test_termination_message_stays_valid_json_within_the_limit(text: str) -> None:
    line = termination_message(
        _Report("failed", "a" * 32, {"out": "b" * 32}, "builtins.ValueError", text)
    )

    decoded = json.loads(line)
    assert len(line.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert decoded["status"] == "failed"
    assert decoded["outputs"] == {"out": "b" * 32}
    assert text.startswith(decoded["message"][:-3])


def test_termination_message_drops_outputs_that_do_not_fit() -> None:
    outputs = {f"output_{i}": "c" * 32 for i in range(200)}

    decoded = json.loads(termination_message(_Report("completed", "a" * 32, outputs)))

    assert decoded == {
        "status": "completed",
        "stepRunId": "a" * 32,
        "outputs": {},
        "errorType": None,
        "message": "",
        "truncated": True,
    }
