"""The `kstep` command line: running pipelines, and reading runs, logs and artifacts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kstep import Client
from kstep.cli import main

FLOW = """
from typing import Annotated

from kstep import Retry, pipeline, step


@step
def load(rows: int) -> list[int]:
    print(f"loading {rows} rows")
    return list(range(rows))


@step
def split(values: list[int]) -> tuple[Annotated[list[int], "train"], Annotated[list[int], "test"]]:
    return values[:2], values[2:]


@step
def total(values: list[int]) -> int:
    return sum(values)


@step(retry=Retry(max_retries=1))
def explode(values: list[int]) -> int:
    print("about to explode")
    raise ValueError(f"cannot use {len(values)} values")


@pipeline
def numbers(rows: int = 5, label: str = "none") -> None:
    train, test = split(load(rows))
    total(train)
    total(test)


@pipeline
def broken(rows: int = 3) -> None:
    explode(load(rows))


def helper() -> None:
    pass
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    """A pipeline file, as a user writes one."""
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return path


def kstep(*args: str) -> Result:
    """Run the command line in this process and return what it printed and its exit code."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_name(result: Result) -> str:
    found = re.search(r"^Run (\S+) of pipeline", result.output, re.MULTILINE)
    assert found, result.output
    return found.group(1)


def test_cli_run_runs_a_pipeline_file_and_prints_each_step(flow: Path, client: Client) -> None:
    result = kstep("run", f"{flow}:numbers", "-p", "rows=4", "-p", "label=iris")

    assert result.exit_code == 0, result.output
    name = run_name(result)
    lines = result.output.splitlines()
    table = lines[lines.index(f"Run {name} of pipeline 'numbers':") + 1 :]
    assert table[0].split() == ["STEP", "STATUS", "ATTEMPT", "DURATION", "CACHED", "RUNTIME"]
    assert [row.split()[:3] for row in table[1:5]] == [
        ["load", "completed", "1"],
        ["split", "completed", "1"],
        ["total", "completed", "1"],
        ["total_2", "completed", "1"],
    ]
    assert table[0].index("STATUS") == table[1].index("completed")
    assert re.fullmatch(rf"Run {name} completed in \d+\.\d\ds\.", table[5])
    run = client.get_run(name)
    assert run.parameters == {"rows": 4, "label": "iris"}


def test_cli_run_exits_1_and_reports_the_failed_step(flow: Path) -> None:
    result = kstep("run", f"{flow}:broken")

    assert result.exit_code == 1
    name = run_name(result)
    assert re.search(r"^explode +failed +2 ", result.stdout, re.MULTILINE)
    assert re.search(
        rf"^Run {name} failed in \S+: step 'explode' failed: ValueError: cannot use 3 values\.$",
        result.stdout,
        re.MULTILINE,
    )


def test_cli_run_imports_a_module_target_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_module_flow.py").write_text(FLOW)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        result = kstep("run", "cli_module_flow:numbers")
    finally:
        sys.modules.pop("cli_module_flow", None)

    assert result.exit_code == 0, result.output
    assert "Run " in result.output and " completed in " in result.output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "flow.py",
            "'flow.py' names no pipeline; expected path/to/file.py:pipeline_name or "
            "module:pipeline_name",
        ),
        ("missing.py:numbers", "missing.py does not exist"),
        ("flow.py:nothing", "'flow.py' has no attribute 'nothing'"),
        ("flow.py:helper", "'helper' in 'flow.py' is <function helper at "),
        ("no_such_module_here:numbers", "module 'no_such_module_here' cannot be imported"),
    ],
)
def test_cli_run_rejects_a_target_that_names_no_pipeline(
    flow: Path, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    monkeypatch.chdir(flow.parent)

    result = kstep("run", target)

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("rows", "'rows' is not KEY=VALUE (for example -p rows=100 or -p name=iris)"),
        (
            "colums=3",
            "pipeline 'numbers' cannot be called this way: got an unexpected keyword argument "
            "'colums'; it accepts rows, label",
        ),
    ],
)
def test_cli_run_rejects_a_bad_parameter(flow: Path, param: str, message: str) -> None:
    result = kstep("run", f"{flow}:numbers", "-p", param)

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_cli_runs_list_shows_runs_newest_first(flow: Path) -> None:
    first = run_name(kstep("run", f"{flow}:numbers"))
    failed = run_name(kstep("run", f"{flow}:broken"))

    result = kstep("runs", "list")

    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "PIPELINE", "STATUS", "STARTED", "DURATION"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [failed, "broken", "failed"],
        [first, "numbers", "completed"],
    ]
    assert re.fullmatch(r"\d+s ago", " ".join(lines[1].split()[3:5]))
    assert lines[0].index("STATUS") == lines[1].index("failed")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--pipeline", "numbers"], ["numbers"]),
        (["--status", "failed"], ["broken"]),
        (["--status", "failed", "--status", "completed"], ["broken", "numbers"]),
        (["--limit", "1"], ["broken"]),
        (["--pipeline", "other"], []),
    ],
)
def test_cli_runs_list_filters_runs(flow: Path, options: list[str], expected: list[str]) -> None:
    kstep("run", f"{flow}:numbers")
    kstep("run", f"{flow}:broken")

    result = kstep("runs", "list", "--json", *options)

    assert [run["pipeline_name"] for run in json.loads(result.output)] == expected


def test_cli_runs_list_says_when_there_are_none() -> None:
    result = kstep("runs", "list")

    assert (result.exit_code, result.output) == (0, "No pipeline runs found.\n")


def test_cli_runs_list_rejects_an_unknown_status() -> None:
    result = kstep("runs", "list", "--status", "done")

    assert result.exit_code == 2
    assert "'done' is not one of 'pending', 'running', 'completed', 'failed', 'cancelled'" in (
        " ".join(result.output.split())
    )


def test_cli_runs_show_lists_steps_with_the_error_of_a_failed_one(
    flow: Path, client: Client
) -> None:
    name = run_name(kstep("run", f"{flow}:broken"))
    run = client.get_run(name)

    by_name, by_id = kstep("runs", "show", name), kstep("runs", "show", run.id)

    assert by_name.output == by_id.output
    output = by_name.output
    assert f"Run:       {name}\n" in output
    assert "Pipeline:  broken (static)\n" in output
    assert "Status:    failed\n" in output
    assert "Params:    rows=3\n" in output
    assert re.search(r"^load +completed +1 +\S+ +no +inline$", output, re.MULTILINE)
    assert re.search(r"^explode +failed +2 +\S+ +no +inline$", output, re.MULTILINE)
    assert output.endswith("\nStep 'explode' failed: cannot use 3 values\n")


def test_cli_runs_show_marks_cached_steps(flow: Path) -> None:
    kstep("run", f"{flow}:numbers")
    name = run_name(kstep("run", f"{flow}:numbers"))

    output = kstep("runs", "show", name).output

    assert re.search(r"^load +cached +1 +\S+ +yes +inline$", output, re.MULTILINE)


def test_cli_runs_show_prints_json_with_steps_and_outputs(flow: Path) -> None:
    name = run_name(kstep("run", f"{flow}:numbers", "-p", "rows=3"))

    shown = json.loads(kstep("runs", "show", name, "--json").output)

    assert (shown["name"], shown["status"], shown["parameters"]) == (
        name,
        "completed",
        {"rows": 3, "label": "none"},
    )
    steps = {step["invocation_id"]: step for step in shown["steps"]}
    assert steps["split"]["outputs"]["train"]["name"] == "train"
    assert steps["total"]["cached"] is False
    assert shown["started_at"].endswith("+00:00")


def test_cli_reports_an_unknown_run_in_one_line() -> None:
    result = kstep("runs", "show", "no-such-run")

    assert result.exit_code == 1
    assert result.output == (
        "Error: no pipeline run has the name or id 'no-such-run'; `kstep runs list` shows the "
        "runs there are\n"
    )


def test_cli_logs_prints_a_steps_logs_by_attempt(flow: Path) -> None:
    name = run_name(kstep("run", f"{flow}:broken"))

    load_logs = kstep("logs", name, "load")
    first_attempt = kstep("logs", name, "explode", "--attempt", "1")
    latest = kstep("logs", name, "explode")

    assert load_logs.output == "loading 3 rows\n"
    assert first_attempt.output.startswith("about to explode\nTraceback")
    assert first_attempt.output.rstrip().endswith("ValueError: cannot use 3 values")
    assert latest.output == first_attempt.output
    assert latest.exit_code == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["lod"], "has no step 'lod'; its steps are: load, explode"),
        (
            ["explode", "--attempt", "3"],
            "step 'explode' of run {name!r} has no attempt 3; its attempts are: 1, 2",
        ),
    ],
)
def test_cli_logs_names_what_exists_when_the_step_or_attempt_does_not(
    flow: Path, arguments: list[str], message: str
) -> None:
    name = run_name(kstep("run", f"{flow}:broken"))

    result = kstep("logs", name, *arguments)

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert message.format(name=name) in result.output


def test_cli_artifacts_list_shows_every_version(flow: Path) -> None:
    name = run_name(kstep("run", f"{flow}:numbers", "-p", "rows=3"))
    kstep("run", f"{flow}:numbers", "-p", "rows=4")

    result = kstep("artifacts", "list")
    only_train = kstep("artifacts", "list", "train", "--json")

    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "TYPE", "PRODUCER", "CREATED"]
    assert [line.split()[:4] for line in lines[1:3]] == [
        ["numbers::load::output", "1", "list", f"{name}/load"],
        ["numbers::load::output", "2", "list", lines[2].split()[3]],
    ]
    assert [(v["name"], v["version"]) for v in json.loads(only_train.output)] == [
        ("train", 1),
        ("train", 2),
    ]


def test_cli_artifacts_list_says_when_there_are_none() -> None:
    assert kstep("artifacts", "list", "model").output == "No artifact versions named 'model'.\n"


def test_cli_artifacts_show_describes_a_version_with_producer_consumers_and_lineage(
    flow: Path, client: Client
) -> None:
    name = run_name(kstep("run", f"{flow}:numbers", "-p", "rows=4"))
    train = client.get_artifact_version("train")

    by_name = kstep("artifacts", "show", "train", "--upstream", "--downstream")
    by_version = kstep("artifacts", "show", "train:1", "--upstream", "--downstream")
    by_id = kstep("artifacts", "show", train.id, "--upstream", "--downstream")

    assert by_name.output == by_version.output == by_id.output
    output = by_name.output
    assert f"Artifact:      train version 1\nId:            {train.id}\n" in output
    assert f"URI:           {train.uri}\n" in output
    assert "Data type:     builtins.list\n" in output
    assert "Materializer:  kstep.materializers._builtin.JsonMaterializer\n" in output
    assert f"Producer:      {name}/split\n" in output
    assert "Metadata:\n  length: 2\n" in output
    assert f"Consumers:\n  {name}/total (completed)\n" in output
    assert f"Lineage (upstream):\n  numbers::load::output:1 -> {name}/split -> train:1\n" in output
    total = client.get_run(name).steps["total"].outputs["output"]
    assert output.endswith(
        f"Lineage (downstream):\n  train:1 -> {name}/total -> {total.name}:{total.version}\n"
    )


def test_cli_artifacts_show_finds_generated_names_with_a_version(flow: Path) -> None:
    kstep("run", f"{flow}:numbers", "-p", "rows=3")

    shown = json.loads(kstep("artifacts", "show", "numbers::total::output:2", "--json").output)

    assert (shown["name"], shown["version"]) == ("numbers::total::output", 2)
    # total (of train, [0, 1]) and total_2 (of test, [2]) run at once: either stored first.
    expected = {"total": 1, "total_2": 2}[shown["producer"]["invocation_id"]]
    assert shown["metadata"] == {"value": expected}
    assert shown["lineage"] == {}


def test_cli_reports_an_unknown_artifact_in_one_line() -> None:
    result = kstep("artifacts", "show", "model:3")

    assert result.exit_code == 1
    assert result.output == (
        "Error: no artifact version matches 'model:3'; expected NAME, NAME:VERSION or an "
        "artifact version id (`kstep artifacts list` shows the artifacts there are)\n"
    )


def test_cli_entry_point_runs_isolated_steps_of_a_script_file(tmp_path: Path) -> None:
    script = tmp_path / "isolated_flow.py"
    script.write_text(
        textwrap.dedent(
            """
            from kstep import pipeline, step

            @step(runtime="isolated")
            def square(value: int) -> int:
                print(f"squaring {value}")
                return value * value

            @pipeline
            def squares(value: int = 3) -> None:
                square(value)
            """
        )
    )
    kstep_command = Path(sys.executable).with_name("kstep")

    result = subprocess.run(
        [str(kstep_command), "run", f"{script}:squares", "-p", "value=7"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KSTEP_ECHO_STEP_LOGS": "false"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^square +completed +1 +\S+ +no +isolated$", result.stdout, re.MULTILINE)
    run = Client().get_run(run_name_from(result.stdout))
    assert run.steps["square"].outputs["output"].load() == 49
    assert run.steps["square"].logs() == "squaring 7\n"


def run_name_from(output: str) -> str:
    found = re.search(r"^Run (\S+) of pipeline", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def test_cli_reports_an_invalid_setting_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KSTEP_INLINE_WORKERS", "0")

    result = kstep("runs", "list")

    assert result.exit_code == 1
    assert result.output == (
        "Error: KSTEP_INLINE_WORKERS='0' is invalid: Input should be greater than or equal to 1\n"
    )


FLAKY_FLOW = """
import os

from kstep import pipeline, step


@step
def load(rows: int) -> list[int]:
    with open(os.environ["FLOW_COUNTER"], "a") as counter:
        counter.write("load\\n")
    return list(range(rows))


@step
def check(values: list[int]) -> int:
    if os.environ.get("FLOW_BREAK") == "1":
        raise RuntimeError("broken on purpose")
    return len(values)


@pipeline
def fragile(rows: int = 3) -> None:
    check(load(rows))
"""


def test_cli_runs_resume_reuses_completed_steps_of_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: Client
) -> None:
    flow = tmp_path / "fragile.py"
    flow.write_text(FLAKY_FLOW)
    counter = tmp_path / "counter"
    monkeypatch.setenv("FLOW_COUNTER", str(counter))
    monkeypatch.setenv("FLOW_BREAK", "1")
    failed = kstep("run", f"{flow}:fragile", "-p", "rows=4")
    name = run_name(failed)
    monkeypatch.setenv("FLOW_BREAK", "0")

    result = kstep("runs", "resume", name)

    assert failed.exit_code == 1
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Resuming run {name} of pipeline 'fragile'.")
    assert re.search(rf"^Run {name} completed in ", result.output, re.MULTILINE)
    assert counter.read_text() == "load\n"
    run = client.get_run(name)
    assert run.status == "completed"
    assert run.steps["check"].outputs["output"].load() == 4
    assert [a.status for a in run.steps["check"].attempts] == ["failed", "completed"]


def test_cli_runs_resume_refuses_a_completed_run(flow: Path) -> None:
    name = run_name(kstep("run", f"{flow}:numbers"))

    result = kstep("runs", "resume", name)

    assert result.exit_code == 1
    assert f"run {name!r} already completed; there is nothing to resume" in result.output


def test_cli_compile_prints_a_pipeline_run_manifest_for_kubectl(flow: Path) -> None:
    import yaml

    result = kstep(
        "compile",
        f"{flow}:numbers",
        "-p",
        "rows=7",
        "--code-in-image",
        "--image",
        "me/ml:1",
        "--name",
        "numbers-one",
    )

    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kstep.dev/v1alpha1", "PipelineRun")
    assert manifest["metadata"]["name"] == "numbers-one"
    assert manifest["spec"]["parameters"] == {"rows": 7, "label": "none"}
    assert manifest["spec"]["code"] == {"image": "me/ml:1"}
    assert [s["id"] for s in manifest["spec"]["steps"]] == ["load", "split", "total", "total_2"]


def test_cli_compile_refuses_to_pack_code_into_a_local_artifact_store(flow: Path) -> None:
    result = kstep("compile", f"{flow}:numbers")

    assert result.exit_code == 1
    assert "s3://" in result.output
    assert "Traceback" not in result.output
