"""A small JSON client of the Kubernetes API, for the kubelet stand-in's hot paths.

The stand-in handles every pod of a benchmark, so it avoids the official client's model
(de)serialization and works on plain dicts over one urllib3 connection pool.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

logger = logging.getLogger(__name__)

Json = dict[str, Any]


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        self.reason = str(parsed.get("reason", ""))
        self.message = str(parsed.get("message", body[:500].decode("utf-8", "replace")))
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


class WatchExpiredError(RuntimeError):
    """The resource version a watch started from is too old (410 Gone): list again."""


def path(*segments: str) -> str:
    """Join URL path segments, quoting each."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class RestClient:
    """JSON requests to one API server with a bearer token."""

    def __init__(self, server: str, *, token: str, ca_path: str, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = timeout
        # One pool for requests; watches take their own connections so that a long-lived
        # stream never holds up a status write.
        self._pool = urllib3.PoolManager(
            num_pools=2, maxsize=64, block=False, cert_reqs="CERT_REQUIRED", ca_certs=ca_path
        )
        self._watch_lock = threading.Lock()
        self._watches: set[urllib3.BaseHTTPResponse] = set()

    def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        url = self.server + url_path + (f"?{urlencode(params)}" if params else "")
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        response = self._pool.request(
            method, url, body=data, headers=headers, timeout=self._timeout, retries=False
        )
        if response.status >= 400:
            raise ApiError(method, url_path, response.status, response.data)
        return dict(json.loads(response.data)) if response.data else {}

    def get(self, url_path: str, **params: str) -> Json:
        return self.request("GET", url_path, params=params or None)

    def post(self, url_path: str, body: Mapping[str, Any]) -> Json:
        return self.request("POST", url_path, body=body)

    def patch(self, url_path: str, body: Mapping[str, Any], *, strategic: bool = True) -> Json:
        kind = "strategic-merge-patch" if strategic else "merge-patch"
        return self.request("PATCH", url_path, body=body, content_type=f"application/{kind}+json")

    def delete(self, url_path: str, body: Mapping[str, Any] | None = None) -> Json:
        return self.request("DELETE", url_path, body=body)

    def watch(self, url_path: str, **params: str) -> Iterator[Json]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends the stream.

        Raises:
            WatchExpiredError: the requested resource version is gone; list again.
        """
        query = urlencode({**params, "watch": "true"})
        response = self._pool.request(
            "GET",
            f"{self.server}{url_path}?{query}",
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=self._timeout, read=None),
            retries=False,
        )
        with self._watch_lock:
            self._watches.add(response)
        try:
            if response.status >= 400:
                raise ApiError("WATCH", url_path, response.status, response.read())
            buffer = b""
            # Chunked reads hand over each event as soon as the server flushes it.
            for chunk in response.stream(64 * 1024):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object", {})
                        if status.get("code") == 410:
                            raise WatchExpiredError(
                                status.get("message", "resource version expired")
                            )
                        raise ApiError("WATCH", url_path, int(status.get("code", 500)), line)
                    yield event
        finally:
            with self._watch_lock:
                self._watches.discard(response)
            response.release_conn()

    def close(self) -> None:
        """End open watches (their iterators stop) and close all connections."""
        with self._watch_lock:
            watches = list(self._watches)
        for response in watches:
            try:
                response.shutdown()
            except Exception:  # an already closed stream is fine
                logger.debug("Closing a watch stream failed", exc_info=True)
        self._pool.clear()
