"""The operator's small API layer over the Kubernetes client.

Requests go through the official client's configuration (kubeconfig or in-cluster service
account, TLS, token refresh) but bodies stay plain dicts: no model classes are built, which
keeps each call cheap when hundreds of steps move at once.
"""

from __future__ import annotations

import datetime
import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from kstep.cluster._kube import throttle_token_checks
from kstep.cluster.specs import GROUP, VERSION

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """A namespaced resource kind and where its API lives."""

    api_path: str
    plural: str
    kind: str
    api_version: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection, an object, or a subresource of it."""
        path = f"{self.api_path}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


PIPELINE_RUNS = Kind(
    f"/apis/{GROUP}/{VERSION}", "pipelineruns", "PipelineRun", f"{GROUP}/{VERSION}"
)
STEP_RUNS = Kind(f"/apis/{GROUP}/{VERSION}", "stepruns", "StepRun", f"{GROUP}/{VERSION}")
JOBS = Kind("/apis/batch/v1", "jobs", "Job", "batch/v1")
PODS = Kind("/api/v1", "pods", "Pod", "v1")
SECRETS = Kind("/api/v1", "secrets", "Secret", "v1")
SERVICE_ACCOUNTS = Kind("/api/v1", "serviceaccounts", "ServiceAccount", "v1")
EVENTS = Kind("/api/v1", "events", "Event", "v1")
LEASES = Kind("/apis/coordination.k8s.io/v1", "leases", "Lease", "coordination.k8s.io/v1")


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP status."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


class Kube:
    """Create, read, patch and delete objects as dicts."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self._event_lock = threading.Lock()
        self._events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=10_000)
        self._event_poster: threading.Thread | None = None

    @classmethod
    def from_environment(cls, connections: int = 16) -> Kube:
        """A client configured from KUBECONFIG, ~/.kube/config or the in-cluster account."""
        from kubernetes import client, config

        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = connections
        throttle_token_checks(configuration)
        return cls(client.ApiClient(configuration))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """Send one request; return the decoded JSON answer or raise `ApiError`."""
        _, url, headers, _, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        response = self.api_client.rest_client.request(
            method, url, headers=headers, body=body, _request_timeout=timeout
        )
        data = response.read()
        if not 200 <= response.status <= 299:
            raise _error(response.status, data)
        return json.loads(data) if data else None

    # -------------------------------------------------------------- objects

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """An object, or None if it does not exist."""
        try:
            return dict(self.request("GET", kind.path(namespace, name)))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str, label_selector: str | None = None) -> list[Any]:
        """Objects of a kind in a namespace, optionally selected by labels."""
        query = [("labelSelector", label_selector)] if label_selector else []
        answer = self.request("GET", kind.path(namespace), query=query)
        return list(answer.get("items", []))

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object; raises `ApiError` with status 409 if it already exists."""
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **body}
        return dict(self.request("POST", kind.path(namespace), body=body))

    def create_or_get(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object, or adopt the one that already has its (deterministic) name.

        An existing object owned by another parent (a deleted one, whose children wait for
        garbage collection) is not adopted: it is deleted and the object created anew.
        """
        return self.create_or_adopt(kind, namespace, body)[0]

    def create_or_adopt(
        self, kind: Kind, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """`create_or_get`, also saying whether the object was created by this call."""
        try:
            return self.create(kind, namespace, body), True
        except ApiError as error:
            if error.status != 409:
                raise
        name = body["metadata"]["name"]
        existing = self.get(kind, namespace, name)
        if existing is not None and _same_owner(existing, body):
            return existing, False
        if existing is not None:
            logger.info(
                "%s %s/%s belongs to a deleted parent; it is replaced.", kind.kind, namespace, name
            )
            self.request(
                "DELETE",
                kind.path(namespace, name),
                body={
                    "propagationPolicy": "Background",
                    "preconditions": {"uid": existing["metadata"]["uid"]},
                },
            )
        return self.create(kind, namespace, body), True

    def replace(
        self, kind: Kind, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace an object whole.

        With `metadata.resourceVersion` in `body`, the write succeeds only if nobody changed
        the object since that version was read; otherwise it raises `ApiError` with status 409.
        """
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **body}
        return dict(self.request("PUT", kind.path(namespace, name), body=body))

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch an object."""
        return dict(
            self.request("PATCH", kind.path(namespace, name), body=patch, content_type=MERGE_PATCH)
        )

    def patch_status(
        self, kind: Kind, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource."""
        return dict(
            self.request(
                "PATCH",
                kind.path(namespace, name, "status"),
                body={"status": status},
                content_type=MERGE_PATCH,
            )
        )

    def delete(
        self, kind: Kind, namespace: str, name: str, propagation: str = "Background"
    ) -> bool:
        """Delete an object (its dependants follow); False if it was already gone."""
        try:
            self.request(
                "DELETE",
                kind.path(namespace, name),
                body={"propagationPolicy": propagation},
            )
            return True
        except ApiError as error:
            if error.status == 404:
                return False
            raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's values, decoded; None if it does not exist."""
        import base64

        secret = self.get(SECRETS, namespace, name)
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    # -------------------------------------------------------------- events

    def post_event(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        event_type: str = "Normal",
    ) -> None:
        """Post a Kubernetes Event about an object, soon and in order, from another thread.

        Events only inform: a reconcile does not wait for them (each is a request to the API
        server), and one that cannot be posted, or that overflows the queue, is dropped with
        a debug message.
        """
        metadata = involved.get("metadata", {})
        namespace = metadata.get("namespace", "default")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"generateName": f"{metadata.get('name', 'kstep')}."},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata.get("name"),
                "namespace": namespace,
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": "kstep-operator"},
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
        }
        with self._event_lock:
            if self._event_poster is None:
                self._event_poster = threading.Thread(
                    target=self._post_events, name="kstep-events", daemon=True
                )
                self._event_poster.start()
        try:
            self._events.put_nowait((namespace, body))
        except queue.Full:
            logger.debug("Event %s is dropped: too many are waiting to be posted.", reason)

    def _post_events(self) -> None:
        while True:
            namespace, body = self._events.get()
            try:
                self.create(EVENTS, namespace, body)
            except Exception as error:
                logger.debug("Posting event %s failed: %s", body.get("reason"), error)


def _same_owner(existing: dict[str, Any], body: dict[str, Any]) -> bool:
    wanted = {o["uid"] for o in body["metadata"].get("ownerReferences") or []}
    found = {o["uid"] for o in existing["metadata"].get("ownerReferences") or []}
    return not wanted or bool(wanted & found)


def _error(status: int, data: bytes) -> ApiError:
    try:
        decoded = json.loads(data)
        return ApiError(status, str(decoded.get("message", ""))[:2000], decoded.get("reason", ""))
    except ValueError:
        return ApiError(status, data[:500].decode(errors="replace"))


def now_iso() -> str:
    """The current UTC time as an RFC 3339 timestamp with microseconds."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    """Parse an RFC 3339 timestamp (with or without fraction)."""
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
