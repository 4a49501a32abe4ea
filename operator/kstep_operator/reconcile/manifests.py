"""Manifests of the objects the operator creates: StepRuns and step Jobs.

Names are deterministic (`kstep.cluster.names`), each child has an ownerReference to its
parent (a Job to its StepRun, as a StepRun to its PipelineRun: `kstep.cluster.objects`) so
deleting a run removes everything under it, and labels say which pipeline, run, step and
invocation it serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kstep.cluster import names
from kstep.cluster.objects import owner_reference, run_labels
from kstep.cluster.specs import ORCHESTRATOR_CANNOT_START, ORCHESTRATOR_RUN_FAILED

STEP_CONTAINER = "step"
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class PodDefaults:
    """What a step pod gets when neither its run nor its step says otherwise."""

    image: str
    image_pull_policy: str
    store_secret: str
    service_account: str
    orchestrator_service_account: str = "kstep-orchestrator"
    orchestrator_restart_limit: int = 6


def runner_request(
    step_run: dict[str, Any],
    *,
    run_name: str,
    pipeline_name: str,
    attempt: int,
    step_run_id: str,
) -> dict[str, Any]:
    """The step-runner's request for one attempt of a StepRun (see `kstep.runner`)."""
    spec = step_run["spec"]
    definition = spec["definition"]
    max_retries = (definition.get("retry") or {}).get("maxRetries", 0)
    return {
        "run": {"id": spec["runId"], "name": run_name, "pipeline_name": pipeline_name},
        "step_run_id": step_run_id,
        "invocation_id": spec["invocationId"],
        "step": definition["function"],
        "options": definition.get("options") or {},
        "attempt": attempt,
        "final_attempt": attempt > max_retries,
        "inputs": spec.get("inputs") or {},
        "code": spec.get("code") or {},
    }


def job_manifest(
    step_run: dict[str, Any],
    attempt: int,
    request: dict[str, Any],
    defaults: PodDefaults,
) -> dict[str, Any]:
    """The Job that runs one attempt of an isolated StepRun through the step-runner."""
    spec = step_run["spec"]
    metadata = step_run["metadata"]
    definition = spec["definition"]
    pod = definition.get("pod") or {}
    labels = {
        key: value
        for key, value in (metadata.get("labels") or {}).items()
        if key.startswith("kstep.dev/")
    }
    labels[names.LABEL_STEP_RUN] = metadata["name"]
    labels[names.LABEL_ROLE] = "step"
    container: dict[str, Any] = {
        "name": STEP_CONTAINER,
        "image": (spec.get("code") or {}).get("image") or defaults.image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["kstep-runner", "--request", "env:KSTEP_STEP_REQUEST"],
        "env": [
            {"name": "KSTEP_STEP_REQUEST", "value": json.dumps(request, separators=(",", ":"))},
            {"name": "KSTEP_TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG},
            {"name": "KSTEP_ECHO_STEP_LOGS", "value": "true"},
        ],
        "envFrom": [{"secretRef": {"name": spec.get("storeSecret") or defaults.store_secret}}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if pod.get("resources"):
        container["resources"] = pod["resources"]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": pod.get("serviceAccountName")
        or spec.get("serviceAccountName")
        or defaults.service_account,
        "containers": [container],
    }
    if pod.get("nodeSelector"):
        pod_spec["nodeSelector"] = pod["nodeSelector"]
    if pod.get("tolerations"):
        pod_spec["tolerations"] = pod["tolerations"]
    job_spec: dict[str, Any] = {
        # Retries are kstep's own (each a new attempt and Job), never the Job controller's.
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if definition.get("timeoutSeconds"):
        job_spec["activeDeadlineSeconds"] = int(definition["timeoutSeconds"])
    return {
        "metadata": {
            "name": names.job_name(metadata["name"], attempt),
            "namespace": metadata["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(step_run)],
        },
        "spec": job_spec,
    }


def job_outcome(job: dict[str, Any]) -> tuple[str, str] | None:
    """`("succeeded" | "failed", reason)` once a Job finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", "Completed"
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            message = condition.get("message") or ""
            return "failed", f"{reason}: {message}" if message else reason
    return None


def orchestrator_job_manifest(run: dict[str, Any], defaults: PodDefaults) -> dict[str, Any]:
    """The Job whose pod runs a dynamic run's pipeline function (`kstep-orchestrator`).

    A pod that crashes or vanishes is replaced (up to the restart limit) and the new one
    replays the function; a run that failed, or cannot start, fails the Job at once.
    """
    spec = run["spec"]
    metadata = run["metadata"]
    labels = {**run_labels(run), names.LABEL_ROLE: "orchestrator"}
    container = {
        "name": "orchestrator",
        "image": (spec.get("code") or {}).get("image") or defaults.image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["kstep-orchestrator"],
        "env": [
            {"name": "KSTEP_RUN_NAME", "value": metadata["name"]},
            {
                "name": "KSTEP_RUN_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "KSTEP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KSTEP_TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG},
        ],
        "envFrom": [{"secretRef": {"name": spec.get("storeSecret") or defaults.store_secret}}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    final_codes = [ORCHESTRATOR_RUN_FAILED, ORCHESTRATOR_CANNOT_START]
    return {
        "metadata": {
            "name": names.orchestrator_job_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "backoffLimit": defaults.orchestrator_restart_limit,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "orchestrator",
                            "operator": "In",
                            "values": final_codes,
                        },
                    },
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": spec.get("serviceAccountName")
                    or defaults.orchestrator_service_account,
                    "containers": [container],
                },
            },
        },
    }
