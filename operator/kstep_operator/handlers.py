"""kopf handlers: record what the watches report and queue the objects concerned.

They run on kopf's event loop and never block: every decision is taken by the controllers
on the operator's own threads. Raw event handlers are enough (kopf keeps no per-handler
progress for them), so kopf's bookkeeping never writes to the resources.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kstep.cluster.names import LABEL_ROLE, LABEL_RUN
from kstep.cluster.specs import GROUP, VERSION
from kstep_operator.context import Operator

logger = logging.getLogger(__name__)

_TERMINAL = ("completed", "failed", "cached", "skipped", "cancelled")


def register(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Register the operator's handlers in a kopf registry."""

    @kopf.on.event(GROUP, VERSION, "pipelineruns", registry=registry)
    async def pipeline_run_event(event: kopf.RawEvent, **_: Any) -> None:
        body: dict[str, Any] = dict(event["object"])
        metadata = body["metadata"]
        if event.get("type") == "DELETED":
            op.cache.delete("run", metadata["namespace"], metadata["name"])
            return
        # The echo of the operator's own write: whoever wrote it has acted on it already.
        if op.cache.put_run(body):
            op.enqueue_run(metadata["namespace"], metadata["name"])

    @kopf.on.event(GROUP, VERSION, "stepruns", registry=registry)
    async def step_run_event(event: kopf.RawEvent, **_: Any) -> None:
        body: dict[str, Any] = dict(event["object"])
        metadata = body["metadata"]
        if event.get("type") == "DELETED":
            op.cache.delete("step", metadata["namespace"], metadata["name"])
            return
        if not op.cache.put_step(body):
            return
        phase = (body.get("status") or {}).get("phase")
        if body["spec"].get("executor") == "orchestrator":
            # Its run only counts it (the orchestrator runs it and ends the run), and a dynamic
            # run's reconcile reads every StepRun of the run: once per counts interval is
            # enough, where once per event made a run of n inline steps cost n squared.
            op.enqueue_run_coalesced(metadata["namespace"], body["spec"]["pipelineRun"])
        elif phase in _TERMINAL or phase is None:
            op.enqueue_run(metadata["namespace"], body["spec"]["pipelineRun"])
        else:
            op.enqueue_step(metadata["namespace"], metadata["name"])

    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_ROLE: "step"}, registry=registry)
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        body: dict[str, Any] = dict(event["object"])
        metadata = body["metadata"]
        owner = op.cache.step_of_job(body)
        if event.get("type") == "DELETED":
            op.cache.delete("job", metadata["namespace"], metadata["name"])
        elif not op.cache.put_job(body):
            return
        if owner is not None:
            op.enqueue_step(*owner)

    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_ROLE: "orchestrator"}, registry=registry)
    async def orchestrator_job_event(event: kopf.RawEvent, **_: Any) -> None:
        body: dict[str, Any] = dict(event["object"])
        metadata = body["metadata"]
        if event.get("type") == "DELETED":
            op.cache.delete("job", metadata["namespace"], metadata["name"])
        else:
            op.cache.put_job(body)
        run = (metadata.get("labels") or {}).get(LABEL_RUN)
        owners = [o["name"] for o in metadata.get("ownerReferences") or []]
        if owners:
            op.enqueue_run(metadata["namespace"], owners[0])
        elif run:
            op.enqueue_run(metadata["namespace"], run)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as the operator's own client: a kubeconfig, else the pod's
        # service account.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf's own state, if it ever keeps any, goes to annotations: the CRDs' strict
        # status schemas would prune it.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="kopf.kstep.dev"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kopf.kstep.dev"
        )
        settings.posting.enabled = False
        # The CRDs exist before the operator starts, and it watches fixed namespaces: no need
        # to watch CRDs and Namespaces, for which its RBAC grants nothing.
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = [1, 2, 5]
