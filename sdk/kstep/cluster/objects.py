"""The objects kstep creates for a run: StepRuns, with their owner references and labels.

Both the operator (static runs) and a dynamic run's orchestrator create StepRuns, so their
shape lives here, next to the spec models: deterministic names (`kstep.cluster.names`), an
ownerReference to the PipelineRun so deleting a run removes everything under it, and labels
that say which pipeline, run, step and invocation a StepRun serves.
"""

from __future__ import annotations

import datetime
from typing import Any

from kstep.cluster import names
from kstep.cluster.specs import API_VERSION


def owner_reference(parent: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to `parent`, so the child is deleted with it."""
    metadata = parent["metadata"]
    return {
        "apiVersion": parent.get("apiVersion", API_VERSION),
        "kind": parent["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def run_labels(run: dict[str, Any]) -> dict[str, str]:
    """Labels every child of a run carries."""
    return {
        names.LABEL_PIPELINE: names.label_value(run["spec"]["pipelineName"]),
        names.LABEL_RUN: names.label_value(run["metadata"]["name"]),
    }


def step_run_manifest(
    run: dict[str, Any],
    invocation_id: str,
    definition: dict[str, Any],
    inputs: dict[str, Any],
    *,
    upstream: list[str],
    cache_key: str | None,
    executor: str = "operator",
    input_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The StepRun of one invocation of a run, with its inputs resolved to artifact versions."""
    spec = run["spec"]
    metadata = run["metadata"]
    body: dict[str, Any] = {
        "metadata": {
            "name": names.step_run_name(metadata["name"], invocation_id),
            "namespace": metadata["namespace"],
            "labels": {
                **run_labels(run),
                names.LABEL_STEP: names.label_value(definition["step"]),
                names.LABEL_INVOCATION: names.label_value(invocation_id),
            },
            "annotations": {names.ANNOTATION_INVOCATION: invocation_id},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "pipelineRun": metadata["name"],
            "runId": names.run_id(metadata["uid"]),
            "invocationId": invocation_id,
            "definition": definition,
            "inputs": inputs,
            "upstream": upstream,
            "code": spec.get("code") or {},
        },
    }
    for field in ("storeSecret", "serviceAccountName"):
        if spec.get(field):
            body["spec"][field] = spec[field]
    if cache_key:
        body["spec"]["cacheKey"] = cache_key
    if executor != "operator":
        body["spec"]["executor"] = executor
    if input_fingerprint:
        body["spec"]["inputFingerprint"] = input_fingerprint
    return body


_CONDITIONS = {
    "running": ("Unknown", "Running"),
    "retrying": ("Unknown", "Retrying"),
    "completed": ("True", "Completed"),
    "cached": ("True", "CacheHit"),
    "failed": ("False", "Failed"),
    "cancelled": ("False", "Cancelled"),
    "skipped": ("False", "Skipped"),
}


def succeeded_condition(status: dict[str, Any], generation: int | None = None) -> dict[str, Any]:
    """The `Succeeded` condition of a StepRun status, from its phase, reason and message."""
    value, default_reason = _CONDITIONS[status["phase"]]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition: dict[str, Any] = {
        "type": "Succeeded",
        "status": value,
        "reason": status.get("reason") or default_reason,
        "message": (status.get("message") or f"the step is {status['phase']}")[:4096],
        "lastTransitionTime": now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition
