"""`kstep-runner` / `python -m kstep.runner`: run one isolated step attempt.

Usage: `kstep-runner --request SOURCE`, where SOURCE is a JSON file with the step request,
`-` for standard input, or `env:NAME` for the environment variable NAME (how the operator
hands a request to a Job pod). A request may carry `"code": {"image": ..., "archive": ...,
"archiveSha256": ...}`: the archive is then downloaded from the artifact store (once per
sha256, into `<KSTEP_HOME>/code`) and put first on `sys.path` before the step is imported.

The exit code is 0 when the step completed, 1 when it failed, and 2 when the request itself
could not be run. The outcome is recorded in the metadata store. When
`KSTEP_TERMINATION_MESSAGE_PATH` is set, a one-line JSON summary of the outcome (status, step
run id, output artifact version ids, error type and message; at most 4 KiB) is also written
there, which Kubernetes turns into the pod's termination message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

TERMINATION_MESSAGE_ENV = "KSTEP_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_LIMIT = 4096
"""Bytes Kubernetes keeps of a container's termination message."""


@dataclass
class _Report:
    """What the runner says about its attempt when it exits."""

    status: str
    step_run_id: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the step-runner process."""
    parser = argparse.ArgumentParser(
        prog="kstep-runner",
        description="Run one attempt of an isolated step.",
    )
    parser.add_argument(
        "--request",
        required=True,
        help="the step request as JSON: a file, '-' for standard input, or env:NAME",
    )
    args = parser.parse_args(argv)

    report = _Report("error", message="the step-runner exited before reporting")
    try:
        code, report = _run(args.request)
    except BaseException as error:
        # Whatever escapes (a broken store, an interrupt) still ends in a termination message.
        report = _Report("error", error_type=_type_path(error), message=str(error))
        raise
    finally:
        _write_termination_message(report)
    return code


def _run(source: str) -> tuple[int, _Report]:
    from kstep._errors import KstepError
    from kstep._settings import Settings
    from kstep.runner._execute import execute_step
    from kstep.runner._isolated import request_from_json
    from kstep.stores import Stores

    try:
        data = _read_request(source)
        settings = Settings()
        stores = Stores.open(settings)
    except (KstepError, OSError, ValueError) as error:
        print(f"kstep-runner: {error}", file=sys.stderr)
        return 2, _Report("error", error_type=_type_path(error), message=str(error))

    step_run_id = data.get("step_run_id")
    try:
        if not data.get("logs_uri") and step_run_id and isinstance(data.get("run"), dict):
            # The operator leaves the log's place to the store, as the local engine does.
            data["logs_uri"] = stores.artifacts.log_uri(data["run"].get("id", ""), step_run_id)
        _add_code_to_path(data.get("code"), stores, settings)
        request = request_from_json(data)
    except Exception as error:
        # The step's code cannot be unpacked or imported: record that as the attempt's failure.
        message = f"step {data.get('invocation_id')!r} cannot start: {error}"
        print(f"kstep-runner: {message}", file=sys.stderr)
        status = _record_start_failure(stores, data, error, message)
        return 2, _Report(status, step_run_id, error_type=_type_path(error), message=message)

    from kstep.engine._owner import current_owner

    # The step run now belongs to this process: an engine restarted after its parent died
    # leaves it alone while this process lives. Its log is where this process writes it.
    stores.metadata.update_step_run(
        request.step_run_id, owner=current_owner(), logs_uri=request.logs_uri
    )
    outcome = execute_step(request, stores, settings)
    report = _Report(
        outcome.status,
        request.step_run_id,
        outputs={name: record.id for name, record in outcome.outputs.items()},
    )
    if outcome.error is not None:
        report.error_type = _type_path(outcome.error)
        report.message = str(outcome.error)
    return (0 if outcome.status == "completed" else 1), report


def _read_request(source: str) -> dict[str, Any]:
    if source == "-":
        data = json.load(sys.stdin)
    elif source.startswith("env:"):
        variable = source[len("env:") :]
        text = os.environ.get(variable)
        if text is None:
            raise ValueError(f"--request {source}: the environment variable {variable} is unset")
        data = json.loads(text)
    else:
        with open(source, encoding="utf-8") as file:
            data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError(f"--request {source}: expected a JSON object, got {type(data).__name__}")
    return data


def _add_code_to_path(code: Any, stores: Any, settings: Any) -> None:
    if not code or not code.get("archive"):
        return
    from kstep.cluster.code import unpack_code
    from kstep.cluster.specs import CodeSpec

    directory = unpack_code(
        CodeSpec.model_validate(code), stores.artifacts, os.path.join(settings.home, "code")
    )
    if directory not in sys.path:
        sys.path.insert(0, directory)
    logger.debug("Code of the step is imported from %s.", directory)


def _record_start_failure(stores: Any, data: dict[str, Any], error: Exception, message: str) -> str:
    from kstep.stores.metadata import utcnow

    status = "failed" if data.get("final_attempt", True) else "retrying"
    step_run_id = data.get("step_run_id")
    if not step_run_id:
        return status
    if data.get("logs_uri"):
        writer = stores.artifacts.open_log(data["logs_uri"])
        writer.write(message + "\n")
        writer.close()
    stores.metadata.update_step_run(
        step_run_id,
        status=status,
        finished_at=utcnow(),
        error_type=_type_path(error),
        error_message=message,
    )
    return status


def _type_path(error: BaseException) -> str:
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def _write_termination_message(report: _Report) -> None:
    path = os.environ.get(TERMINATION_MESSAGE_ENV)
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(termination_message(report))
    except OSError as error:
        print(
            f"kstep-runner: cannot write the termination message to {path}: {error}",
            file=sys.stderr,
        )


def termination_message(report: _Report) -> str:
    """The report as one line of JSON within `TERMINATION_MESSAGE_LIMIT` bytes.

    The message is shortened first, then the outputs dropped (with `"truncated": true`), so
    the line always stays valid JSON.
    """
    summary: dict[str, Any] = {
        "status": report.status,
        "stepRunId": report.step_run_id,
        "outputs": dict(report.outputs),
        "errorType": report.error_type,
        "message": report.message,
    }
    line = json.dumps(summary, separators=(",", ":"))
    excess = len(line) - TERMINATION_MESSAGE_LIMIT
    if excess > 0 and report.message:
        # ensure_ascii (the default) makes characters and bytes one-to-one; the cut may land
        # inside an escape sequence, so trim a little more than needed and re-encode.
        keep = max(0, len(report.message) - excess - 32)
        summary["message"] = report.message[:keep] + "..."
        summary["truncated"] = True
        line = json.dumps(summary, separators=(",", ":"))
    if len(line) > TERMINATION_MESSAGE_LIMIT:
        summary["outputs"] = {}
        summary["truncated"] = True
        summary["message"] = (summary["message"] or "")[:1024]
        line = json.dumps(summary, separators=(",", ":"))
    return line


if __name__ == "__main__":
    sys.exit(main())
