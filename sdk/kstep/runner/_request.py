"""What the step-runner is asked to do and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kstep._compile import ArtifactRef, Binding, InputList, Param
from kstep._errors import ExecutionError

if TYPE_CHECKING:
    from kstep._steps import Step
    from kstep.stores.metadata import ArtifactVersionRecord


@dataclass(frozen=True)
class RunInfo:
    """The run a step run belongs to."""

    id: str
    name: str
    pipeline_name: str


@dataclass
class StepRequest:
    """One attempt of one invocation, with its inputs resolved to artifact versions."""

    run: RunInfo
    step_run_id: str
    invocation_id: str
    step: Step[..., Any]
    attempt: int
    final_attempt: bool
    inputs: dict[str, Binding]
    logs_uri: str
    known_versions: dict[str, ArtifactVersionRecord] = field(default_factory=dict)


@dataclass
class StepOutcome:
    """How an attempt ended."""

    status: str
    outputs: dict[str, ArtifactVersionRecord] = field(default_factory=dict)
    error: BaseException | None = None


def bindings_to_json(inputs: dict[str, Binding]) -> dict[str, Any]:
    """Resolved input bindings as JSON (for a subprocess or a pod)."""
    return {name: _binding_to_json(binding) for name, binding in inputs.items()}


def _binding_to_json(binding: Binding) -> Any:
    if isinstance(binding, Param):
        return {"param": binding.value}
    if isinstance(binding, ArtifactRef):
        return {"artifact": binding.artifact_version_id, "item": binding.item}
    if isinstance(binding, InputList):
        return {"list": [_binding_to_json(item) for item in binding.items]}
    raise ExecutionError(f"input binding {binding!r} is not resolved to an artifact version")


def bindings_from_json(data: dict[str, Any]) -> dict[str, Binding]:
    """The inverse of `bindings_to_json`."""
    return {name: _binding_from_json(value) for name, value in data.items()}


def _binding_from_json(value: Any) -> Binding:
    if "param" in value:
        return Param(value["param"])
    if "artifact" in value:
        return ArtifactRef(value["artifact"], value.get("item"))
    if "list" in value:
        return InputList(tuple(_binding_from_json(item) for item in value["list"]))
    raise ExecutionError(f"input binding {value!r} is malformed")
