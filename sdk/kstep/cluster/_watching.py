"""Watching custom resources: list once, then follow the watch stream from that version.

A `Watch` runs on its own thread and puts what it sees on a queue that the waiting thread
reads, so one thread can follow a PipelineRun and its StepRuns at once. After each listing
it puts a `synced` event. When the server says the version is too old (410 Gone) it lists
again; when a watch request times out it resumes from the last version it saw. Stopping it
shuts the open response down, so the thread ends at once instead of at the next event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from kstep._errors import ClusterError
from kstep.cluster.specs import GROUP, VERSION

logger = logging.getLogger(__name__)

# The server ends each watch request after this long; the watch then resumes. The client's
# read timeout is longer, so a silent connection is noticed without cutting a live one.
WATCH_SECONDS = 240
_READ_TIMEOUT = WATCH_SECONDS + 30
_CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class WatchEvent:
    """One thing a watch saw: `ADDED`, `MODIFIED`, `DELETED`, `synced` or `error`."""

    plural: str
    type: str
    object: dict[str, Any]
    error: BaseException | None = None


class Watch(threading.Thread):
    """Follows the custom objects of one plural in one namespace, matching selectors."""

    def __init__(
        self,
        api: Any,
        plural: str,
        namespace: str,
        sink: queue.Queue[WatchEvent],
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        super().__init__(name=f"kstep-watch-{plural}", daemon=True)
        self.api = api
        self.plural = plural
        self.namespace = namespace
        self.sink = sink
        self.selectors: dict[str, str] = {
            key: value
            for key, value in (
                ("field_selector", field_selector),
                ("label_selector", label_selector),
            )
            if value
        }
        self._stopped = threading.Event()
        self._response: Any = None

    def stop(self) -> None:
        """Stop watching; the thread ends promptly and reports nothing more."""
        self._stopped.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                version: str | None = self._list()
                while version is not None and not self._stopped.is_set():
                    version = self._follow(version)
        except BaseException as error:
            if not self._stopped.is_set():
                self.sink.put(WatchEvent(self.plural, "error", {}, error))

    def _list(self) -> str:
        listing = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, **self.selectors
        )
        for item in listing.get("items") or []:
            self.sink.put(WatchEvent(self.plural, "ADDED", item))
        self.sink.put(WatchEvent(self.plural, "synced", {"count": len(listing.get("items") or [])}))
        return str(listing["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> str | None:
        """Stream events from `version`; return where to resume, or None to list again."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch import watch

        iter_resp_lines: Any = watch.iter_resp_lines

        try:
            self._response = self.api.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                self.plural,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=(_CONNECT_TIMEOUT, _READ_TIMEOUT),
                **self.selectors,
            )
        except ApiException as error:
            if error.status == 410:
                return None
            raise
        try:
            for line in iter_resp_lines(self._response):
                if self._stopped.is_set():
                    return None
                if not line:
                    continue
                event = json.loads(line)
                kind, found = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if found.get("code") == 410:
                        logger.debug(
                            "Watch of %s expired at %s; it lists again.", self.plural, version
                        )
                        return None
                    raise ClusterError(
                        f"watching {self.plural} in {self.namespace} failed: "
                        f"{found.get('message')} (HTTP {found.get('code')})",
                        status=found.get("code"),
                        reason=str(found.get("reason") or ""),
                    )
                version = str((found.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    self.sink.put(WatchEvent(self.plural, str(kind), found))
        finally:
            with contextlib.suppress(Exception):
                self._response.release_conn()
        return version
