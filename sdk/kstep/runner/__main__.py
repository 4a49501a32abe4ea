"""`kstep-runner` / `python -m kstep.runner`: run one isolated step attempt.

Usage: `kstep-runner --request FILE` (or `--request -` for standard input), where FILE holds
the step request as JSON. The exit code is 0 when the step completed, 1 when it failed, and
2 when the request itself could not be run. The outcome is recorded in the metadata store.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the step-runner process."""
    parser = argparse.ArgumentParser(prog="kstep-runner", description=__doc__)
    parser.add_argument("--request", required=True, help="JSON file with the step request")
    args = parser.parse_args(argv)

    from kstep._errors import KstepError
    from kstep._settings import Settings
    from kstep.runner._execute import execute_step
    from kstep.runner._isolated import request_from_json
    from kstep.stores import Stores

    try:
        if args.request == "-":
            data = json.load(sys.stdin)
        else:
            with open(args.request, encoding="utf-8") as file:
                data = json.load(file)
        settings = Settings()
        stores = Stores.open(settings)
    except (KstepError, OSError, ValueError) as error:
        print(f"kstep-runner: {error}", file=sys.stderr)
        return 2
    try:
        request = request_from_json(data)
    except Exception as error:
        # The step's code cannot be imported: record that as the attempt's failure.
        message = f"step {data.get('invocation_id')!r} cannot start: {error}"
        print(f"kstep-runner: {message}", file=sys.stderr)
        _record_start_failure(stores, data, error, message)
        return 2
    from kstep.engine._owner import current_owner

    # The step run now belongs to this process: an engine restarted after its parent died
    # leaves it alone while this process lives.
    stores.metadata.update_step_run(request.step_run_id, owner=current_owner())
    outcome = execute_step(request, stores, settings)
    return 0 if outcome.status == "completed" else 1


def _record_start_failure(
    stores: Any, data: dict[str, Any], error: Exception, message: str
) -> None:
    from kstep.materializers import type_path
    from kstep.stores.metadata import utcnow

    step_run_id = data.get("step_run_id")
    if not step_run_id:
        return
    writer = stores.artifacts.open_log(data.get("logs_uri", ""))
    writer.write(message + "\n")
    writer.close()
    stores.metadata.update_step_run(
        step_run_id,
        status="failed" if data.get("final_attempt", True) else "retrying",
        finished_at=utcnow(),
        error_type=type_path(type(error)),
        error_message=message,
    )


if __name__ == "__main__":
    sys.exit(main())
