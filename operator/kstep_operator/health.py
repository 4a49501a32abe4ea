"""Liveness and readiness of the operator process, served on the metrics port.

One HTTP listener answers the kubelet's probes and Prometheus:

- `/healthz`, liveness: 200 while every thread that must run is running. A failure makes the
  kubelet restart the container.
- `/readyz`, readiness: 200 once the replica can do its work. A standby that waits for the
  leader Lease is ready: it is ready to take over. A leader is ready once its inline executor
  is connected.
- `/metrics`: the operator's metrics in Prometheus' text format.

Each answer lists the checks with `ok` or `failed`, one per line, as kube-apiserver's do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

Check = Callable[[], bool]


class Health:
    """Named checks of liveness and readiness; with none registered, both pass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}

    def add_liveness(self, name: str, check: Check) -> None:
        """Fail `/healthz` whenever `check` returns False or raises."""
        with self._lock:
            self._liveness[name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        """Fail `/readyz` whenever `check` returns False or raises."""
        with self._lock:
            self._readiness[name] = check

    def live(self) -> tuple[bool, str]:
        """Whether every liveness check passes, and a report of each."""
        with self._lock:
            checks = dict(self._liveness)
        return _evaluate(checks)

    def ready(self) -> tuple[bool, str]:
        """Whether every readiness check passes, and a report of each."""
        with self._lock:
            checks = dict(self._readiness)
        return _evaluate(checks)


def _evaluate(checks: dict[str, Check]) -> tuple[bool, str]:
    lines = []
    passed = True
    for name, check in sorted(checks.items()):
        try:
            ok = check()
        except Exception as error:
            logger.debug("The health check %r raised %r.", name, error)
            ok = False
        passed = passed and ok
        lines.append(f"[{'+' if ok else '-'}]{name} {'ok' if ok else 'failed'}")
    lines.append("ok" if passed else "failed")
    return passed, "\n".join(lines) + "\n"


def serve(host: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    """Serve `/metrics`, `/healthz` and `/readyz` on a background thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez", "/readyz"):
                passed, report = health.ready() if path == "/readyz" else health.live()
                self._answer(200 if passed else 503, report.encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes and scrapes arrive every few seconds: not worth a log line each.
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kstep-http", daemon=True).start()
    logger.info("Serving /metrics, /healthz and /readyz on %s:%d.", host, server.server_port)
    return server
