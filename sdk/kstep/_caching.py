"""Cache keys: a hash of everything that determines a step's outputs.

The key covers the step's code version (its source), the materializers it declares for its
outputs (their code versions too), its parameters as canonical JSON, and for each input
artifact its content hash (or, for types without one, its artifact version id) and the
code version of the materializer that loads it. The function takes plain data so that the
operator can compute the same key without importing user code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kstep._params import canonical_json

if TYPE_CHECKING:
    from kstep._steps import Step
    from kstep.stores.metadata.records import ArtifactVersionRecord

KEY_FORMAT = "kstep-cache-v1"


@dataclass(frozen=True)
class InputToken:
    """What an input artifact contributes to a cache key."""

    identity: str
    materializer: str
    item: int | None = None

    @classmethod
    def of(cls, record: ArtifactVersionRecord, item: int | None = None) -> InputToken:
        """The token of an artifact version (or of one item of it)."""
        identity = f"hash:{record.content_hash}" if record.content_hash else f"id:{record.id}"
        return cls(identity, f"{record.materializer}@{record.materializer_version}", item)


def step_fingerprint(step: Step[..., Any]) -> dict[str, Any]:
    """The parts of a cache key that come from a step definition alone."""
    from kstep.materializers import materializer_version
    from kstep.materializers._base import materializer_for_type

    outputs: dict[str, str] = {}
    for spec in step.outputs:
        declared = step.config.output_materializers.get(spec.name)
        materializer = declared or materializer_for_type(spec.annotation)
        outputs[spec.name] = (
            f"{materializer.key()}@{materializer_version(materializer)}" if materializer else ""
        )
    return {"source": step.source_hash, "outputs": outputs}


def compute_cache_key(
    fingerprint: Mapping[str, Any],
    parameters: Mapping[str, Any],
    inputs: Mapping[str, InputToken | Sequence[InputToken | Any]],
) -> str:
    """Hash a step's fingerprint, parameters and input tokens into a cache key."""
    described_inputs = {
        name: (
            [_describe(item) for item in value]
            if isinstance(value, list | tuple)
            else _describe(value)
        )
        for name, value in sorted(inputs.items())
    }
    payload = {
        "format": KEY_FORMAT,
        "step": dict(fingerprint),
        "parameters": json.loads(canonical_json(dict(parameters))),
        "inputs": described_inputs,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _describe(value: Any) -> Any:
    if isinstance(value, InputToken):
        return {"artifact": value.identity, "materializer": value.materializer, "item": value.item}
    return {"literal": value}
