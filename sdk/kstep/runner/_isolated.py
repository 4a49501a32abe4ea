"""Step requests as JSON, for an isolated step's own process (a subprocess or a pod).

A request names the step by reference and carries its options, inputs and, on a cluster, the
code it comes from (`"code"`: an image and optionally a code archive; see `kstep.runner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kstep._errors import ExecutionError
from kstep._retry import Retry
from kstep._steps import Step, function_reference
from kstep.runner._references import import_reference
from kstep.runner._request import RunInfo, StepRequest, bindings_from_json, bindings_to_json


def step_options(step: Step[..., Any]) -> dict[str, Any]:
    """A step's options as JSON, so a copy made by `with_options` is rebuilt elsewhere."""
    config = step.config
    options: dict[str, Any] = {
        "name": config.name,
        "enable_cache": config.enable_cache,
        "retry": dataclasses.asdict(config.retry),
        "runtime": config.runtime,
        "cache_expires_after": config.cache_expires_after,
        "timeout": config.timeout,
        "pod": dict(config.pod) if config.pod else None,
        "output_materializers": {
            name: f"{cls.__module__}:{cls.__qualname__}"
            for name, cls in config.output_materializers.items()
        },
    }
    for hook in ("on_failure", "on_success"):
        function = getattr(config, hook)
        options[hook] = None if function is None else function_reference(function, f"{hook} hook")
    return options


def rebuild_step(reference: str, options: dict[str, Any]) -> Step[..., Any]:
    """Import a step by reference and re-apply the options it was called with."""
    found = import_reference(reference)
    if not isinstance(found, Step):
        raise ExecutionError(f"reference {reference!r} is {found!r}, not a @step")
    if not options:
        return found
    current = step_options(found)
    # An option left out means None: a manifest applied with client-side `kubectl apply`
    # loses null values, so rendered manifests carry only the options that are set.
    given: dict[str, Any] = dict.fromkeys(current)
    given.update(options)
    if given == current:
        return found
    wanted = dict(given)
    wanted["retry"] = Retry(**(given["retry"] or {}))
    wanted["output_materializers"] = {
        name: import_reference(ref) for name, ref in (given["output_materializers"] or {}).items()
    }
    for hook in ("on_failure", "on_success"):
        if wanted[hook] is not None:
            wanted[hook] = import_reference(wanted[hook])
    return found.with_options(**wanted)


def request_to_json(
    request: StepRequest, *, code: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A step request as JSON.

    Args:
        request: the attempt to run.
        code: where the step's code comes from, as in a PipelineRun's `spec.code`
            (`image`, `archive`, `archiveSha256`); the runner unpacks an archive and imports
            the step from it.
    """
    data: dict[str, Any] = {
        "run": dataclasses.asdict(request.run),
        "step_run_id": request.step_run_id,
        "invocation_id": request.invocation_id,
        "step": request.step.reference,
        "options": step_options(request.step),
        "attempt": request.attempt,
        "final_attempt": request.final_attempt,
        "inputs": bindings_to_json(request.inputs),
        "logs_uri": request.logs_uri,
    }
    if code:
        data["code"] = dict(code)
    return data


def request_from_json(data: dict[str, Any]) -> StepRequest:
    """The inverse of `request_to_json`, importing the step's code."""
    try:
        return StepRequest(
            run=RunInfo(**data["run"]),
            step_run_id=data["step_run_id"],
            invocation_id=data["invocation_id"],
            step=rebuild_step(data["step"], data["options"]),
            attempt=int(data["attempt"]),
            final_attempt=bool(data["final_attempt"]),
            inputs=bindings_from_json(data["inputs"]),
            logs_uri=data.get("logs_uri") or "",
        )
    except (KeyError, TypeError) as error:
        raise ExecutionError(f"step request is malformed: missing or wrong {error}") from None
