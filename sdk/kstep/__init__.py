"""kstep: ML pipelines of typed Python steps, on a laptop or on any Kubernetes cluster.

```python
from kstep import pipeline, step

@step
def load() -> list[int]:
    return [1, 2, 3]

@step
def total(values: list[int]) -> int:
    return sum(values)

@pipeline
def numbers():
    total(load())

run = numbers()                       # runs locally on SQLite and a local directory
print(run.steps["total"].outputs["output"].load())
```

Only what a step or pipeline definition needs is imported eagerly; the engine, the stores and
the client load on first use, so `import kstep` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kstep._context import StepContext, get_step_context, log_metadata
from kstep._errors import (
    ArtifactLoadError,
    KstepError,
    MaterializerError,
    NotFoundError,
    OutputError,
    ParameterError,
    PipelineDefinitionError,
    RunFailed,
    StepCallError,
    StepDefinitionError,
    StepFailed,
    UpstreamFailed,
)
from kstep._futures import MapResultsFuture, OutputArtifact, StepFuture, unmapped
from kstep._pipelines import Pipeline, pipeline
from kstep._retry import Retry
from kstep._status import Status
from kstep._steps import Step, step
from kstep.materializers import Materializer

if TYPE_CHECKING:
    from kstep.client import ArtifactVersion, Client, Run, StepRun

__version__ = "0.1.0"

__all__ = [
    "ArtifactLoadError",
    "ArtifactVersion",
    "Client",
    "KstepError",
    "MapResultsFuture",
    "Materializer",
    "MaterializerError",
    "NotFoundError",
    "OutputArtifact",
    "OutputError",
    "ParameterError",
    "Pipeline",
    "PipelineDefinitionError",
    "Retry",
    "Run",
    "RunFailed",
    "Status",
    "Step",
    "StepCallError",
    "StepContext",
    "StepDefinitionError",
    "StepFailed",
    "StepFuture",
    "StepRun",
    "UpstreamFailed",
    "get_step_context",
    "log_metadata",
    "pipeline",
    "step",
    "unmapped",
]

_LAZY = {
    "Client": "kstep.client",
    "Run": "kstep.client",
    "StepRun": "kstep.client",
    "ArtifactVersion": "kstep.client",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'kstep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
