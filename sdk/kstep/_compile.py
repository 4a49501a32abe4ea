"""Static compilation: run a pipeline's function once and record its step invocations.

The function runs with a `CompileScope` active. Each step call records an `Invocation`
and returns `StepOutput` placeholders that stand for outputs not yet computed. The result
is a `CompiledPipeline`: invocations in call order (which is a topological order, since an
invocation can only consume outputs of earlier ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kstep._errors import PipelineDefinitionError, StepCallError, describe
from kstep._params import check_json_value

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep._steps import Step


@dataclass(frozen=True)
class Param:
    """An input given as a literal JSON value."""

    value: Any


@dataclass(frozen=True)
class OutputRef:
    """An input wired to an output of another invocation of the same run."""

    invocation_id: str
    output: str
    item: int | None = None


@dataclass(frozen=True)
class ArtifactRef:
    """An input bound to a stored artifact version (resolved, ready to load)."""

    artifact_version_id: str
    item: int | None = None


@dataclass(frozen=True)
class InputList:
    """An input that is a list, each item an artifact or a literal."""

    items: tuple[Binding, ...]


Binding = Param | OutputRef | ArtifactRef | InputList


def upstream_ids(binding: Binding) -> Iterator[str]:
    """Yield the invocations a binding consumes outputs of."""
    if isinstance(binding, OutputRef):
        yield binding.invocation_id
    elif isinstance(binding, InputList):
        for item in binding.items:
            yield from upstream_ids(item)


@dataclass
class Invocation:
    """One call of a step inside a pipeline run."""

    id: str
    step: Step[..., Any]
    inputs: dict[str, Binding]
    after: tuple[str, ...] = ()

    def upstream(self) -> list[str]:
        """Invocations this one waits for: data edges first, then `after=` edges."""
        found: dict[str, None] = {}
        for binding in self.inputs.values():
            for upstream_id in upstream_ids(binding):
                found[upstream_id] = None
        for upstream_id in self.after:
            found[upstream_id] = None
        return list(found)


@dataclass
class CompiledPipeline:
    """A static pipeline's DAG for one set of parameters."""

    pipeline: Pipeline
    parameters: dict[str, Any]
    invocations: dict[str, Invocation] = field(default_factory=dict)


class StepOutput:
    """Placeholder for an output of an invocation recorded while a static pipeline compiles.

    Pass it to other steps to wire data between them. Its value does not exist yet, so it
    cannot be inspected: branching on outputs needs `@pipeline(dynamic=True)`.
    """

    __slots__ = ("invocation_id", "output", "pipeline_name")

    def __init__(self, invocation_id: str, output: str, pipeline_name: str) -> None:
        self.invocation_id = invocation_id
        self.output = output
        self.pipeline_name = pipeline_name

    def __repr__(self) -> str:
        return f"<output {self.output!r} of step {self.invocation_id!r}>"

    def _not_available(self, what: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(
            f"pipeline {self.pipeline_name!r} {what} {self!r} while compiling; a static "
            "pipeline's outputs have no value until it runs: pass them to other steps, or "
            "use @pipeline(dynamic=True) to use values in the pipeline's function"
        )

    def __bool__(self) -> bool:
        raise self._not_available("tests the truth of")

    def __iter__(self) -> Iterator[Any]:
        raise self._not_available("iterates over")

    def __len__(self) -> int:
        raise self._not_available("takes the length of")

    def load(self) -> Any:
        """Not available while compiling; raises `PipelineDefinitionError`."""
        raise self._not_available("loads")


class CompileScope:
    """The pipeline scope of a static pipeline's function while it compiles."""

    def __init__(self, compiled: CompiledPipeline) -> None:
        self.compiled = compiled
        self._counts: dict[str, int] = {}

    @property
    def pipeline_name(self) -> str:
        return self.compiled.pipeline.name

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
        inputs = {
            name: self._bind(step, name, value)
            for name, value in bind_arguments(step, args, kwargs).items()
        }
        invocation = Invocation(
            id=self._new_id(step, invocation_id),
            step=step,
            inputs=inputs,
            after=self._after_ids(step, after),
        )
        self.compiled.invocations[invocation.id] = invocation
        handles = tuple(
            StepOutput(invocation.id, name, self.pipeline_name) for name in step.output_names
        )
        if not handles:
            return None
        return handles[0] if len(handles) == 1 else handles

    def map_step(self, step: Step[..., Any], kwargs: dict[str, Any], **_: Any) -> Any:
        raise PipelineDefinitionError(
            f"pipeline {self.pipeline_name!r} maps step {step.name!r}; .map() and "
            ".product() need @pipeline(dynamic=True)"
        )

    def _new_id(self, step: Step[..., Any], requested: str | None) -> str:
        taken = self.compiled.invocations
        if requested is not None:
            return check_invocation_id(requested, step, taken, self.pipeline_name)
        count = self._counts.get(step.name, 0)
        while True:
            count += 1
            candidate = step.name if count == 1 else f"{step.name}_{count}"
            if candidate not in taken:
                self._counts[step.name] = count
                return candidate

    def _bind(self, step: Step[..., Any], name: str, value: Any) -> Binding:
        if isinstance(value, StepOutput):
            return self._output_ref(step, name, value)
        if isinstance(value, list | tuple) and any(isinstance(v, StepOutput) for v in value):
            return InputList(tuple(self._bind(step, name, item) for item in value))
        check_json_value(value, f"input {name!r} of step {step.name!r}")
        return Param(value)

    def _output_ref(self, step: Step[..., Any], name: str, value: StepOutput) -> OutputRef:
        if value.invocation_id not in self.compiled.invocations or (
            value.pipeline_name != self.pipeline_name
        ):
            raise PipelineDefinitionError(
                f"input {name!r} of step {step.name!r} is {value!r}, which belongs to another "
                f"pipeline than {self.pipeline_name!r}"
            )
        return OutputRef(value.invocation_id, value.output)

    def _after_ids(self, step: Step[..., Any], after: Any) -> tuple[str, ...]:
        items = after if isinstance(after, list | tuple) else ([] if after is None else [after])
        ids: list[str] = []
        for item in items:
            upstream = item.invocation_id if isinstance(item, StepOutput) else item
            if upstream not in self.compiled.invocations:
                known = ", ".join(repr(k) for k in self.compiled.invocations) or "none yet"
                raise PipelineDefinitionError(
                    f"step {step.name!r} in pipeline {self.pipeline_name!r} has "
                    f"after={describe(item)}, which names no earlier invocation; known "
                    f"invocations: {known}"
                )
            ids.append(upstream)
        return tuple(ids)


def check_invocation_id(
    requested: Any, step: Step[..., Any], taken: Any, pipeline_name: str
) -> str:
    """Validate an explicit `id=` of a step call and return it."""
    from kstep._outputs import NAME_PATTERN, NAME_RULE

    if not isinstance(requested, str) or not NAME_PATTERN.match(requested):
        raise StepCallError(
            f"step {step.name!r} was called with id={describe(requested)}; invocation ids "
            f"may use {NAME_RULE}"
        )
    if requested in taken:
        raise PipelineDefinitionError(
            f"pipeline {pipeline_name!r} calls a step with id={requested!r} twice; "
            "invocation ids must be unique within a run"
        )
    return requested


def bind_arguments(
    step: Step[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Match call arguments to the step's parameters, with an error naming the step."""
    try:
        bound = step.signature.bind(*args, **kwargs)
    except TypeError as error:
        accepted = ", ".join(step.signature.parameters) or "no arguments"
        raise StepCallError(
            f"step {step.name!r} cannot be called this way: {error}; it accepts {accepted} "
            "(plus the reserved id= and after=)"
        ) from None
    return dict(bound.arguments)
