"""Declared outputs of a step, read from its return annotation.

- no return annotation: one output named `output`
- `-> None`: no outputs
- `-> Annotated[T, "name"]`: one output named `name`
- `-> tuple[Annotated[A, "a"], Annotated[B, "b"]]`: two outputs, unpacked at the call site
- `-> tuple[A, B]`: two outputs named `output_0` and `output_1`
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from kstep._errors import StepDefinitionError

DEFAULT_OUTPUT = "output"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
NAME_RULE = "letters, digits, '_', '.', '-', starting with a letter or '_', at most 128"


@dataclass(frozen=True)
class OutputSpec:
    """One declared output: its name, annotated type, and whether the name was explicit."""

    name: str
    annotation: Any = Any
    named: bool = False


def read_outputs(fn: Callable[..., Any], step_name: str) -> tuple[OutputSpec, ...]:
    """Return the outputs `fn` declares through its return annotation."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # Forward references that cannot be resolved yet: fall back to the raw objects.
        hints = dict(getattr(fn, "__annotations__", {}))
    if "return" not in hints:
        return (OutputSpec(DEFAULT_OUTPUT),)

    annotation = hints["return"]
    if annotation is None or annotation is type(None):
        return ()
    named = _annotated_name(annotation, step_name)
    if named is not None:
        return (named,)
    if typing.get_origin(annotation) is tuple:
        members = typing.get_args(annotation)
        if members and members[-1] is not Ellipsis and members != ((),):
            specs = tuple(
                _annotated_name(member, step_name) or OutputSpec(f"output_{index}", member)
                for index, member in enumerate(members)
            )
            _check_unique(specs, step_name)
            return specs
    return (OutputSpec(DEFAULT_OUTPUT, annotation),)


def _annotated_name(annotation: Any, step_name: str) -> OutputSpec | None:
    if typing.get_origin(annotation) is not Annotated:
        return None
    base, *extras = typing.get_args(annotation)
    names = [extra for extra in extras if isinstance(extra, str)]
    if not names:
        return None
    name = names[0]
    if not NAME_PATTERN.match(name):
        raise StepDefinitionError(
            f"step {step_name!r} names an output {name!r}; output names may use {NAME_RULE}"
        )
    return OutputSpec(name, base, named=True)


def _check_unique(specs: tuple[OutputSpec, ...], step_name: str) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise StepDefinitionError(
                f"step {step_name!r} declares the output {spec.name!r} twice; "
                "each output of a step needs its own name"
            )
        seen.add(spec.name)
