"""Running kstep on Kubernetes: spec models, names, rendering, code archives and submission.

The spec models (`specs`) are the single source of the CRD schemas in `crds/`; the operator
and the SDK both use them. `render_pipeline_run` turns a pipeline into a PipelineRun manifest,
`pack_code` puts the user's code in the artifact store, and `submit` creates a run on a
cluster and returns a `ClusterRun` to follow it:

```python
from kstep.cluster import render_pipeline_run, submit, to_yaml

print(to_yaml(render_pipeline_run(training, {"rows": 200}, name="training-1")))
run = submit(training, {"rows": 200}, namespace="ml")
finished = run.wait(on_step=lambda step, phase: print(step, phase))
```

Nothing in this package talks to a cluster at import time, and the names below load on first
use, so importing it costs no Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kstep.cluster.code import build_archive, default_code_root, pack_code, unpack_code
    from kstep.cluster.render import render_pipeline_run, to_yaml
    from kstep.cluster.submit import ClusterRun, ClusterRunStatus, ClusterStepRun, submit

__all__ = [
    "ClusterRun",
    "ClusterRunStatus",
    "ClusterStepRun",
    "build_archive",
    "default_code_root",
    "pack_code",
    "render_pipeline_run",
    "submit",
    "to_yaml",
    "unpack_code",
]

_LAZY = {
    "ClusterRun": "kstep.cluster.submit",
    "ClusterRunStatus": "kstep.cluster.submit",
    "ClusterStepRun": "kstep.cluster.submit",
    "submit": "kstep.cluster.submit",
    "render_pipeline_run": "kstep.cluster.render",
    "to_yaml": "kstep.cluster.render",
    "build_archive": "kstep.cluster.code",
    "default_code_root": "kstep.cluster.code",
    "pack_code": "kstep.cluster.code",
    "unpack_code": "kstep.cluster.code",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'kstep.cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
