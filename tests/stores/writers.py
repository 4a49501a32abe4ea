"""Writing rows to a metadata store the way step runs do, from threads or other processes.

Run as `python -m stores.writers URL ARTIFACT COUNT` it records COUNT step runs that each
store one version of ARTIFACT, and prints the version numbers it got as JSON.
"""

from __future__ import annotations

import json
import sys

from kstep.stores.metadata import MetadataStore, NewArtifactVersion, RunRecord, StepRunRecord
from kstep.stores.metadata.store import new_id


def record_run(metadata: MetadataStore, pipeline_name: str = "writers") -> str:
    """Insert a running pipeline run and return its id."""
    run = RunRecord(
        id=new_id(),
        name=f"{pipeline_name}-{new_id()}",
        pipeline_name=pipeline_name,
        mode="static",
        status="running",
        execution_mode="continue_on_failure",
        parameters={},
    )
    metadata.create_run(run)
    return run.id


def record_step_run(metadata: MetadataStore, run_id: str, invocation_id: str) -> str:
    """Insert a running step run and return its id."""
    step_run = StepRunRecord(
        id=new_id(),
        run_id=run_id,
        invocation_id=invocation_id,
        step_name="write",
        attempt=1,
        status="running",
        runtime="inline",
    )
    metadata.start_step_run(step_run)
    return step_run.id


def new_version(artifact_name: str) -> NewArtifactVersion:
    """A new version of an artifact, as the step-runner has it once its files are committed."""
    version_id = new_id()
    return NewArtifactVersion(
        id=version_id,
        output_name="output",
        artifact_name=artifact_name,
        uri=f"/nowhere/{artifact_name}/{version_id}",
        materializer="kstep.materializers._builtin.JsonMaterializer",
        materializer_version="0",
        data_type="builtins.int",
        content_hash=None,
    )


def write_versions(metadata: MetadataStore, artifact_name: str, count: int) -> list[int]:
    """Finish `count` step runs that each store a version of `artifact_name`."""
    run_id = record_run(metadata)
    numbers: list[int] = []
    for index in range(count):
        step_run_id = record_step_run(metadata, run_id, f"write_{index}")
        records = metadata.finish_step_run(
            step_run_id, status="completed", outputs=[new_version(artifact_name)]
        )
        numbers.append(records[0].version)
    return numbers


if __name__ == "__main__":
    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = MetadataStore.open(url)
    print(json.dumps(write_versions(store, name, count)))
    store.close()
