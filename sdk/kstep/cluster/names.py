"""Deterministic names and labels of the objects kstep creates on a cluster.

Every child object's name is a function of its parent and its role, so a handler that runs
twice, or after a crash, finds (or creates) the same object instead of a duplicate.
"""

from __future__ import annotations

import hashlib
import re

from kstep.cluster.specs import GROUP

LABEL_PIPELINE = f"{GROUP}/pipeline"
LABEL_RUN = f"{GROUP}/run"
LABEL_STEP = f"{GROUP}/step"
LABEL_INVOCATION = f"{GROUP}/invocation"
LABEL_STEP_RUN = f"{GROUP}/steprun"
LABEL_ROLE = f"{GROUP}/role"
ANNOTATION_INVOCATION = f"{GROUP}/invocation-id"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_slug(text: str, limit: int) -> str:
    """`text` as a DNS label fragment: lowercase, `-` for anything else, at most `limit`."""
    slug = _NOT_DNS.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return slug or "x"


def label_value(text: str) -> str:
    """`text` as a label value (at most 63 characters, alphanumeric at both ends)."""
    value = _NOT_LABEL.sub(".", text)
    if len(value) > 63:
        value = f"{value[:52]}-{_digest(text, 10)}"
    return value.strip("-_.")[:63]


def run_id(uid: str) -> str:
    """The metadata store id of a PipelineRun: its UID without dashes (32 hex digits)."""
    return uid.replace("-", "")


def step_run_name(run_name: str, invocation_id: str) -> str:
    """Name of the StepRun of one invocation of a run."""
    return f"{run_name[:180]}-{dns_slug(invocation_id, 50)}-{_digest(invocation_id, 6)}"


def job_name(step_run_name: str, attempt: int) -> str:
    """Name of the Job of one attempt of a StepRun (63 at most: it labels the Job's pods)."""
    suffix = f"-{_digest(step_run_name, 8)}-{attempt}"
    return f"{dns_slug(step_run_name, 63 - len(suffix))}{suffix}"


def attempt_id(step_run_uid: str, attempt: int) -> str:
    """The metadata store id of one attempt of a StepRun."""
    return _digest(f"{step_run_uid}/{attempt}", 32)


def orchestrator_job_name(run_name: str) -> str:
    """Name of the Job that runs a dynamic run's orchestrator pod."""
    suffix = f"-{_digest(run_name, 8)}-orch"
    return f"{dns_slug(run_name, 63 - len(suffix))}{suffix}"
