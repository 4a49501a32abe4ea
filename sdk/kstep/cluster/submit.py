"""Submitting pipeline runs to a cluster and following them there.

`submit` packs the user's code (unless the image carries it), renders the PipelineRun and
creates it; the operator does the rest. The returned `ClusterRun` reads the run's status and
StepRuns from the API server, follows them with a watch until the run ends, and then returns
the run as the shared metadata store recorded it, the same `Run` a local run returns.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kstep._errors import ClusterError, NotFoundError, RunFailed
from kstep.cluster import names
from kstep.cluster._kube import api_error, connect
from kstep.cluster._watching import Watch, WatchEvent
from kstep.cluster.render import PLURAL, render_pipeline_run
from kstep.cluster.specs import GROUP, VERSION, CodeSpec

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep._settings import Settings
    from kstep.client import Run

logger = logging.getLogger(__name__)

STEP_RUN_PLURAL = "stepruns"
FINAL_PHASES = ("completed", "failed", "cancelled")

StepCallback = Callable[[str, str], Any]
"""Called as `on_step(invocation_id, phase)` each time a StepRun's phase changes."""


def submit(
    pipeline: Pipeline,
    parameters: Mapping[str, Any] | None = None,
    *,
    namespace: str | None = None,
    name: str | None = None,
    image: str | None = None,
    pack: bool = True,
    code: CodeSpec | None = None,
    code_root: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = (),
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    settings: Settings | None = None,
    parallelism: int | None = None,
    timeout_seconds: int | None = None,
    ttl_seconds_after_finished: int | None = None,
    service_account_name: str | None = None,
    store_secret: str | None = None,
) -> ClusterRun:
    """Run a pipeline on a Kubernetes cluster: create its PipelineRun and return at once.

    Args:
        pipeline: a `@pipeline`, static or dynamic.
        parameters: the pipeline's parameters by name; defaults fill in the rest.
        namespace: where the run goes; default: the kubeconfig context's, else `default`.
        name: the PipelineRun's name; default: `<pipeline>-<time>-<random>`.
        image: the image the run's pods use (kstep and the code's dependencies installed);
            default: the operator's.
        pack: pack the code root into an archive in the artifact store (so the image need
            not contain the code). With `pack=False` the image must contain it.
        code: a `CodeSpec` to use as is (from an earlier `pack_code`); overrides `image` and
            `pack`.
        code_root: the directory to pack and make references relative to; default: see
            `kstep.cluster.code.default_code_root`.
        exclude: glob patterns to leave out of the archive, e.g. `["data/*"]`.
        kubeconfig: the kubeconfig file; default: `$KUBECONFIG`, else `~/.kube/config`, else
            the service account of the pod this runs in.
        context: the kubeconfig context; default: its current one.
        settings: the stores the cluster shares with this process (artifact root for the code
            archive, metadata URL for `wait`); default: from the `KSTEP_*` environment.
        parallelism: invocations of the run that may run at once.
        timeout_seconds: the whole run's deadline.
        ttl_seconds_after_finished: delete the PipelineRun this long after it finished.
        service_account_name: the service account of the run's pods.
        store_secret: the Secret with the pods' store settings; default: the operator's.

    Returns:
        A `ClusterRun` for the created PipelineRun.

    Raises:
        ParameterError: the parameters do not fit the pipeline.
        PipelineDefinitionError: the pipeline cannot run on a cluster.
        CodeArchiveError: the code cannot be packed, or the artifact store is local.
        ClusterError: the cluster is unreachable or refused the PipelineRun (the server's
            message says why, e.g. a schema rule).

    Example:
        >>> run = submit(training, {"rows": 200}, namespace="ml")  # doctest: +SKIP
        >>> finished = run.wait(on_step=lambda step, phase: print(step, phase))  # doctest: +SKIP
        >>> finished.steps["evaluate"].outputs["mse"].load()  # doctest: +SKIP
    """
    from kstep._settings import Settings

    settings = settings or Settings()
    api_client, default_namespace = connect(kubeconfig, context)
    namespace = namespace or default_namespace
    try:
        manifest = _render_with_code(
            pipeline,
            parameters,
            settings,
            image=image,
            pack=pack,
            code=code,
            code_root=code_root,
            exclude=exclude,
            name=name,
            namespace=namespace,
            parallelism=parallelism,
            timeout_seconds=timeout_seconds,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
            service_account_name=service_account_name,
            store_secret=store_secret,
        )
        created = create_pipeline_run(api_client, manifest, namespace)
    except BaseException:
        api_client.close()
        raise
    run = ClusterRun(
        created["metadata"]["name"],
        namespace,
        api_client,
        settings=settings,
        uid=created["metadata"].get("uid"),
    )
    logger.debug("PipelineRun %s/%s is created.", namespace, run.name)
    return run


def _render_with_code(
    pipeline: Pipeline,
    parameters: Mapping[str, Any] | None,
    settings: Settings,
    *,
    image: str | None,
    pack: bool,
    code: CodeSpec | None,
    code_root: str | os.PathLike[str] | None,
    exclude: Sequence[str],
    **options: Any,
) -> dict[str, Any]:
    """Render the run, packing its code first when asked to."""
    # The archive is built (not uploaded) before rendering, because its URI goes in the
    # manifest; it is uploaded only once rendering has accepted the pipeline.
    archive = store = None
    if code is None and pack:
        from kstep.cluster.code import build_archive, check_shared_store, default_code_root
        from kstep.stores.artifacts import open_artifact_store

        store = open_artifact_store(settings)
        check_shared_store(store)
        if code_root is None:
            code_root = default_code_root(pipeline.fn.__module__)
        archive = build_archive(code_root, exclude=exclude)
        code = CodeSpec(
            image=image, archive=store.object_uri(archive.key), archive_sha256=archive.sha256
        )
    elif code is None and image is not None:
        code = CodeSpec(image=image)

    manifest = render_pipeline_run(pipeline, parameters, code=code, code_root=code_root, **options)
    if archive is not None and store is not None:
        from kstep.cluster.code import store_archive

        store_archive(archive, store, image=image)
    return manifest


def create_pipeline_run(
    api_client: Any, manifest: Mapping[str, Any], namespace: str
) -> dict[str, Any]:
    """Create a rendered PipelineRun; unknown fields are errors, not silently dropped.

    Raises:
        ClusterError: the API server refused it; the message is the server's.
    """
    from kubernetes import client

    body = dict(manifest)
    body["metadata"] = {**manifest["metadata"], "namespace": namespace}
    what = f"PipelineRun {namespace}/{body['metadata'].get('name')}"
    api: Any = client.CustomObjectsApi(api_client)
    try:
        created: dict[str, Any] = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    except Exception as error:
        raise api_error(error, f"creating {what}") from None
    return created


# ------------------------------------------------------------------ status


@dataclass(frozen=True)
class ClusterRunStatus:
    """A PipelineRun's status as the operator last wrote it."""

    phase: str
    """`pending` until the operator starts the run, then `running`, `completed`, `failed` or
    `cancelled`."""
    reason: str | None = None
    message: str | None = None
    step_counts: dict[str, int] = field(default_factory=dict)
    failed_step: str | None = None
    run_id: str | None = None
    start_time: str | None = None
    completion_time: str | None = None

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> ClusterRunStatus:
        """The status of a PipelineRun object."""
        status = resource.get("status") or {}
        return cls(
            phase=status.get("phase") or "pending",
            reason=_succeeded_reason(status),
            message=status.get("message"),
            step_counts=dict(status.get("stepCounts") or {}),
            failed_step=status.get("failedStep"),
            run_id=status.get("runId"),
            start_time=status.get("startTime"),
            completion_time=status.get("completionTime"),
        )

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self.phase in FINAL_PHASES


@dataclass(frozen=True)
class ClusterStepRun:
    """One StepRun of a run: an invocation's execution on the cluster."""

    name: str
    invocation_id: str
    phase: str
    attempts: int = 0
    cached: bool = False
    job_name: str | None = None
    step_run_id: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> ClusterStepRun:
        """The view of a StepRun object."""
        spec = resource.get("spec") or {}
        status = resource.get("status") or {}
        return cls(
            name=resource["metadata"]["name"],
            invocation_id=spec.get("invocationId", ""),
            phase=status.get("phase") or "pending",
            attempts=int(status.get("attempts") or 0),
            cached=bool(status.get("cached")),
            job_name=status.get("jobName"),
            step_run_id=status.get("stepRunId"),
            outputs=dict(status.get("outputs") or {}),
            reason=status.get("reason") or _succeeded_reason(status),
            message=status.get("message"),
            start_time=status.get("startTime"),
            completion_time=status.get("completionTime"),
        )


def _succeeded_reason(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Succeeded":
            return str(condition.get("reason") or "") or None
    return None


# ------------------------------------------------------------------ runs


class ClusterRun:
    """A PipelineRun on a cluster, as `submit` returns it.

    Example:
        >>> run = ClusterRun.attach("training-20260101-120000-a1b2c3", namespace="ml")
        >>> run.status().phase  # doctest: +SKIP
        'running'
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        api_client: Any,
        *,
        settings: Settings | None = None,
        uid: str | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.api_client = api_client
        self.settings = settings
        self.uid = uid

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        namespace: str | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        settings: Settings | None = None,
    ) -> ClusterRun:
        """Follow an existing PipelineRun by name.

        Raises:
            ClusterError: the cluster is unreachable or has no such PipelineRun.
        """
        api_client, default_namespace = connect(kubeconfig, context)
        run = cls(name, namespace or default_namespace, api_client, settings=settings)
        run.uid = run.get()["metadata"].get("uid")
        return run

    def __repr__(self) -> str:
        return f"<ClusterRun {self.namespace}/{self.name}>"

    def __enter__(self) -> ClusterRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the API client's connections."""
        self.api_client.close()

    @property
    def _api(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def get(self) -> dict[str, Any]:
        """The PipelineRun object as the API server has it."""
        try:
            found: dict[str, Any] = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except Exception as error:
            raise api_error(error, f"reading {self._what}") from None
        return found

    def status(self) -> ClusterRunStatus:
        """The run's phase, step counts, reason and message, as the operator last wrote them."""
        return ClusterRunStatus.of(self.get())

    def steps(self) -> list[ClusterStepRun]:
        """The run's StepRuns (those created so far), in the order they were created."""
        try:
            listing = self._api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, STEP_RUN_PLURAL, label_selector=self._selector
            )
        except Exception as error:
            raise api_error(error, f"listing the StepRuns of {self._what}") from None
        items = [i for i in listing.get("items") or [] if self._owns(i)]
        items.sort(
            key=lambda i: (i["metadata"].get("creationTimestamp", ""), i["metadata"]["name"])
        )
        return [ClusterStepRun.of(item) for item in items]

    def cancel(self) -> None:
        """Ask the operator to stop the run (`spec.status: Cancelled`); returns at once."""
        try:
            self._api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                {"spec": {"status": "Cancelled"}},
                _content_type="application/merge-patch+json",
            )
        except Exception as error:
            raise api_error(error, f"cancelling {self._what}") from None
        logger.debug("%s is asked to cancel.", self._what)

    def wait(self, timeout: float | None = None, on_step: StepCallback | None = None) -> Run:
        """Follow the run until it ends and return it from the metadata store.

        The PipelineRun and its StepRuns are watched (not polled): `on_step(invocation_id,
        phase)` is called each time a StepRun appears or changes phase, the last time once the
        run has ended.

        Args:
            timeout: seconds to wait at most; None waits as long as the run takes.
            on_step: called with each StepRun phase change.

        Returns:
            The finished run, read from the metadata store the settings name (the one the
            cluster writes to), with its steps, artifacts and logs.

        Raises:
            RunFailed: the run ended failed or cancelled (`.run` is the run).
            TimeoutError: the run did not end within `timeout`.
            NotFoundError: the metadata store has no record of the run (it is not the one
                the cluster uses).
            ClusterError: the PipelineRun was deleted, or the API server failed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        events: queue.Queue[WatchEvent] = queue.Queue()
        watches = [
            Watch(
                self._api,
                PLURAL,
                self.namespace,
                events,
                field_selector=f"metadata.name={self.name}",
            ),
            Watch(
                self._api, STEP_RUN_PLURAL, self.namespace, events, label_selector=self._selector
            ),
        ]
        phases: dict[str, str] = {}
        status = ClusterRunStatus("pending")
        try:
            for watch in watches:
                watch.start()
            final = None
            while final is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"{self._what} did not finish within {timeout:g} s; it is {status.phase}"
                    )
                try:
                    event = events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if event.plural == STEP_RUN_PLURAL:
                    self._report_step(event, phases, on_step)
                else:
                    status = self._observe_run(event, status)
                    final = event.object if status.finished else None
        finally:
            for watch in watches:
                watch.stop()

        # Events of the StepRuns may trail the run's own: report where each one ended.
        for step in self.steps():
            self._report(step.invocation_id, step.phase, phases, on_step)
        return self._finished_run(final, status)

    # -------------------------------------------------------------- internals

    @property
    def _what(self) -> str:
        return f"PipelineRun {self.namespace}/{self.name}"

    @property
    def _selector(self) -> str:
        return f"{names.LABEL_RUN}={names.label_value(self.name)}"

    def _owns(self, step_run: Mapping[str, Any]) -> bool:
        return bool((step_run.get("spec") or {}).get("pipelineRun", self.name) == self.name)

    def _observe_run(self, event: WatchEvent, status: ClusterRunStatus) -> ClusterRunStatus:
        if event.type == "error":
            assert event.error is not None
            if isinstance(event.error, ClusterError):
                raise event.error
            raise api_error(_as_exception(event.error), f"watching {self._what}")
        if event.type == "synced":
            if not event.object.get("count"):
                raise ClusterError(f"{self._what} does not exist", status=404, reason="NotFound")
            return status
        if event.type == "DELETED":
            raise ClusterError(
                f"{self._what} was deleted before it finished", status=404, reason="NotFound"
            )
        self.uid = event.object["metadata"].get("uid", self.uid)
        return ClusterRunStatus.of(event.object)

    def _report_step(
        self, event: WatchEvent, phases: dict[str, str], on_step: StepCallback | None
    ) -> None:
        if event.type == "error":
            assert event.error is not None
            if isinstance(event.error, ClusterError):
                raise event.error
            raise api_error(_as_exception(event.error), f"watching the StepRuns of {self._what}")
        if event.type in ("synced", "DELETED") or not self._owns(event.object):
            return
        step = ClusterStepRun.of(event.object)
        self._report(step.invocation_id, step.phase, phases, on_step)

    @staticmethod
    def _report(
        invocation_id: str, phase: str, phases: dict[str, str], on_step: StepCallback | None
    ) -> None:
        if phases.get(invocation_id) == phase:
            return
        phases[invocation_id] = phase
        logger.debug("Step %s is %s.", invocation_id, phase)
        if on_step is not None:
            on_step(invocation_id, phase)

    def _finished_run(self, final: Mapping[str, Any] | None, status: ClusterRunStatus) -> Run:
        from kstep.client import Client

        uid = (final or {}).get("metadata", {}).get("uid") or self.uid
        run_id = status.run_id or (names.run_id(uid) if uid else self.name)
        client = Client(self.settings)
        try:
            run = client.get_run(run_id)
        except NotFoundError:
            raise NotFoundError(
                f"{self._what} ended {status.phase}, but the metadata store "
                f"{_redacted(client.settings.metadata_url)} has no run {run_id!r}; set "
                "KSTEP_METADATA_URL to the store the cluster writes to (e.g. "
                "postgresql+psycopg://...)"
            ) from None
        if status.phase != "completed":
            detail = status.message or status.reason or "no message"
            where = f" at step {status.failed_step!r}" if status.failed_step else ""
            raise RunFailed(
                run, f"pipeline run {self.name!r} ended {status.phase}{where}: {detail}"
            )
        return run


def _as_exception(error: BaseException) -> Exception:
    return error if isinstance(error, Exception) else RuntimeError(str(error))


def _redacted(url: str) -> str:
    # Never show a password from a database URL.
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not separator or not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"
