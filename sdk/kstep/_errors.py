"""The errors kstep raises, one hierarchy.

Every error subclasses `KstepError` and also the builtin that best matches its cause
(`TypeError` for a wrong kind of thing, `ValueError` for a wrong value, `LookupError` for
something missing, `RuntimeError` for a failure while running), so callers can catch either.
Messages name the pipeline, step, output or value at fault and say what is accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kstep.client import Run


class KstepError(Exception):
    """Base class of every error kstep raises on purpose."""


class StepDefinitionError(KstepError, TypeError):
    """A `@step` decorator was given something it cannot turn into a step."""


class PipelineDefinitionError(KstepError, ValueError):
    """A pipeline cannot be compiled into a valid graph of step invocations."""


class StepCallError(KstepError, TypeError):
    """A step was called with arguments its signature does not accept."""


class ParameterError(KstepError, ValueError):
    """A pipeline or step parameter is not a JSON value."""


class MaterializerError(KstepError, TypeError):
    """No materializer can store a value, or a materializer is defined wrongly."""


class OutputError(KstepError, ValueError):
    """A step returned a different number of outputs than it declares."""


class ArtifactLoadError(KstepError, RuntimeError):
    """A stored artifact version is missing or cannot be read back."""


class ArtifactPathError(KstepError, ValueError):
    """A materializer asked for a path outside its artifact's own location."""


class NotFoundError(KstepError, LookupError):
    """A run, step run or artifact version does not exist in the metadata store."""


class StoreError(KstepError, RuntimeError):
    """The metadata store or artifact store is unusable as configured."""


class ExecutionError(KstepError, RuntimeError):
    """The engine met a condition it cannot run through (bad runtime, lost process)."""


class StepFailed(KstepError, RuntimeError):
    """A step failed with an exception whose own type cannot be recreated here.

    The original type's qualified name is kept in `error_type`.
    """

    def __init__(self, message: str, *, error_type: str = "", invocation_id: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.invocation_id = invocation_id


class UpstreamFailed(KstepError, RuntimeError):
    """A step was skipped because a step it depends on failed or was skipped."""

    def __init__(self, invocation_id: str, upstream_id: str) -> None:
        super().__init__(
            f"step {invocation_id!r} was skipped because its upstream step "
            f"{upstream_id!r} did not complete"
        )
        self.invocation_id = invocation_id
        self.upstream_id = upstream_id


class CodeArchiveError(KstepError, ValueError):
    """The user's code cannot be packed into, or unpacked from, a code archive."""


class ClusterError(KstepError, RuntimeError):
    """The Kubernetes API server refused or failed a request; the message is the server's.

    `status` is the HTTP status (422 for a schema rejection, 404 for a missing object), or
    None when the server could not be reached.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class RunFailed(KstepError, RuntimeError):
    """A pipeline run ended failed (or cancelled); `.run` is that run."""

    def __init__(self, run: Run, message: str | None = None) -> None:
        super().__init__(message or f"pipeline run {run.name!r} ended {run.status}")
        self.run = run


def describe(value: Any, limit: int = 80) -> str:
    """Return a short `repr` of a user value for an error message."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
