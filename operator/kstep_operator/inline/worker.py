"""A warm worker process: runs inline steps of one code version on threads.

Started by the executor with the run's store settings as its only credentials. Reads `run`
and `validate` messages on standard input and answers `done` and `validated` on the original
standard output (file descriptor 1 is then pointed at standard error, so nothing a step
prints can corrupt the protocol). At the end of its input it finishes the steps it runs and
exits.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from kstep_operator.inline.protocol import decode, send

logger = logging.getLogger(__name__)


def main() -> int:
    """Serve run requests until standard input closes."""
    protocol_out: IO[bytes] = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from kstep._settings import Settings
    from kstep.stores import Stores

    settings = Settings()
    stores = Stores.open(settings)
    code_error = _add_code_to_path(stores, settings)
    workers = int(os.environ.get("KSTEP_INLINE_WORKERS", "16"))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kstep-inline")
    lock = threading.Lock()

    def answer(message: dict[str, Any]) -> None:
        with lock:
            send(protocol_out, message)

    for line in sys.stdin.buffer:
        message = decode(line)
        if message is None:
            continue
        if message.get("op") == "run":
            pool.submit(_run, message, stores, settings, answer, code_error)
        elif message.get("op") == "validate" and code_error is not None:
            answer({"op": "validated", "id": message.get("id"), "code_error": code_error})
        elif message.get("op") == "validate":
            answer({"op": "validated", "id": message.get("id"), "problems": _validate(message)})
    pool.shutdown(wait=True)
    return 0


def _add_code_to_path(stores: Any, settings: Any) -> str | None:
    """Put the code archive first on the path; say why if it cannot be, for good.

    An archive that is missing or damaged stays so: every step and validation of this code
    version is answered with that error. Any other failure (the store unreachable) ends the
    worker, and the operator tries again later.
    """
    raw = os.environ.get("KSTEP_CODE")
    if not raw:
        return None
    import json

    from kstep._errors import ArtifactLoadError, CodeArchiveError
    from kstep.cluster.specs import CodeSpec

    code = CodeSpec.model_validate(json.loads(raw))
    if code.archive:
        from kstep.cluster.code import unpack_code

        try:
            directory = unpack_code(code, stores.artifacts, os.path.join(settings.home, "code"))
        except (ArtifactLoadError, CodeArchiveError) as error:
            logger.error("The code archive %s cannot be loaded: %s", code.archive, error)
            return str(error)
        sys.path.insert(0, directory)
    return None


def _run(
    message: dict[str, Any], stores: Any, settings: Any, answer: Any, code_error: str | None
) -> None:
    from kstep.runner._execute import execute_step
    from kstep.runner._isolated import request_from_json

    step_run_id = message["request"].get("step_run_id")
    try:
        if code_error is not None:
            raise RuntimeError(f"the run's code cannot be loaded: {code_error}")
        request = request_from_json(message["request"])
        outcome = execute_step(request, stores, settings)
        status = outcome.status
    except Exception as error:
        # The step could not even start (its code does not import): record that as its failure.
        from kstep.materializers import type_path
        from kstep.stores.metadata import utcnow

        logger.warning("Inline step %s could not start: %s", step_run_id, error)
        status = "failed" if message["request"].get("final_attempt", True) else "retrying"
        stores.metadata.update_step_run(
            step_run_id,
            status=status,
            finished_at=utcnow(),
            error_type=type_path(type(error)),
            error_message=f"step {message['request'].get('invocation_id')!r} cannot start: {error}",
        )
    answer({"op": "done", "step_run_id": step_run_id, "status": status})


def _validate(message: dict[str, Any]) -> dict[str, str]:
    from kstep.runner._references import import_reference

    problems: dict[str, str] = {}
    for reference in message.get("references", []):
        try:
            import_reference(reference)
        except Exception as error:
            problems[reference] = str(error)
    return problems


if __name__ == "__main__":
    sys.exit(main())
