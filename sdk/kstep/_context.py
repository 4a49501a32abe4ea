"""Where code is running right now: inside a pipeline's function, inside a step, or neither.

Two context variables carry this. `pipeline_scope` is set while a pipeline's function runs
(at compile time for a static pipeline, at run time for a dynamic one), so a step call knows
whom to hand its invocation to. `step_scope` is set while a step's body runs, for
`get_step_context()` and `log_metadata()`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kstep._errors import KstepError

if TYPE_CHECKING:
    from kstep._steps import Step


class PipelineScope(Protocol):
    """What a step call inside a pipeline's function is handed to."""

    def call_step(
        self,
        step: Step[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        invocation_id: str | None,
        after: Any,
        concurrent: bool,
    ) -> Any:
        """Record or start one invocation of `step` and return its outputs or future."""

    def map_step(
        self,
        step: Step[..., Any],
        kwargs: dict[str, Any],
        *,
        product: bool,
        after: Any,
    ) -> Any:
        """Start one invocation of `step` per item (or combination) of the mapped inputs."""


pipeline_scope: contextvars.ContextVar[PipelineScope | None] = contextvars.ContextVar(
    "kstep_pipeline_scope", default=None
)


@dataclass
class StepContext:
    """Facts about the step run whose body is executing.

    Attributes:
        pipeline_name: name of the pipeline the run belongs to.
        run_id: id of the pipeline run in the metadata store.
        run_name: name of the pipeline run.
        step_run_id: id of this attempt's step run.
        invocation_id: the invocation's id within the run (`train`, `train_2`, ...).
        step_name: name of the step definition.
        attempt: 1 for the first attempt, then 2, 3, ... for retries.
    """

    pipeline_name: str
    run_id: str
    run_name: str
    step_run_id: str
    invocation_id: str
    step_name: str
    attempt: int
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


step_scope: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "kstep_step_scope", default=None
)


def get_step_context() -> StepContext:
    """Return the context of the step run whose body is executing.

    Example:
        >>> @step
        ... def train() -> int:
        ...     ctx = get_step_context()
        ...     print(ctx.run_name, ctx.invocation_id, ctx.attempt)
        ...     return 1

    Raises:
        KstepError: when called outside a step's body.
    """
    context = step_scope.get()
    if context is None:
        raise KstepError(
            "get_step_context() was called outside a step; it is only available while a "
            "step's body runs"
        )
    return context


def log_metadata(metadata: Mapping[str, Any]) -> None:
    """Attach key/value metadata to the current step run.

    Values must be JSON values. A key logged twice keeps the last value. The metadata is
    stored with the step run when the step finishes and shows in `StepRun.metadata`.

    Example:
        >>> @step
        ... def evaluate(model: dict) -> float:
        ...     accuracy = 0.93
        ...     log_metadata({"accuracy": accuracy, "samples": 1000})
        ...     return accuracy
    """
    from kstep._params import check_json_value

    context = get_step_context()
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise KstepError(
                f"log_metadata() in step {context.invocation_id!r} got the key {key!r}; "
                "metadata keys must be strings"
            )
        check_json_value(value, f"metadata {key!r} of step {context.invocation_id!r}")
        context.metadata[key] = value
