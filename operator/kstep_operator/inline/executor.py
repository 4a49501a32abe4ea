"""The executor process: serves the operator on a Unix socket and keeps the warm workers.

One operator connection at a time (a new one replaces the old, as after an operator
restart). On connecting, the operator learns which steps are still running (`hello`); after
that it sends `run` and `validate` messages and receives `done`, `validated` and `lost`
(steps whose worker died). Results that arrive while no operator is connected are dropped:
the metadata store has them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from kstep_operator.inline.protocol import decode, send

logger = logging.getLogger(__name__)

# What a worker inherits from the executor's own environment: nothing secret. Not even HOME,
# where a kubeconfig (~/.kube/config) or cloud credentials may live: each worker gets its own.
_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


class _Worker:
    def __init__(self, key: str, process: subprocess.Popen[bytes]) -> None:
        self.key = key
        self.process = process
        self.running: set[str] = set()
        self.validating: set[str] = set()


class Executor:
    """Routes step requests to warm workers by code version and store settings."""

    def __init__(self, socket_path: str, *, threads_per_worker: int = 16) -> None:
        self.socket_path = socket_path
        self.threads_per_worker = threads_per_worker
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._client: IO[bytes] | None = None
        self._last_client = time.monotonic()
        self._homes = tempfile.mkdtemp(prefix="kstep-inline-homes-")

    # -------------------------------------------------------------- serving

    def serve(self, idle_exit_seconds: float | None = None) -> None:
        """Accept operator connections until stopped (or idle, if `idle_exit_seconds`)."""
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        server.listen(4)
        server.settimeout(1.0)
        logger.info("The inline executor listens on %s.", self.socket_path)
        try:
            while True:
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    if idle_exit_seconds is not None and self._idle_for() > idle_exit_seconds:
                        logger.info(
                            "No operator for %.0f s and no steps running; exiting.",
                            idle_exit_seconds,
                        )
                        return
                    continue
                threading.Thread(target=self._serve_client, args=(connection,), daemon=True).start()
        finally:
            server.close()
            self._stop_workers()
            shutil.rmtree(self._homes, ignore_errors=True)

    def _idle_for(self) -> float:
        with self._lock:
            if self._client is not None or any(w.running for w in self._workers.values()):
                self._last_client = time.monotonic()
                return 0.0
            return time.monotonic() - self._last_client

    def _serve_client(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        writer = connection.makefile("wb")
        with self._lock:
            self._client = writer
            running = sorted(i for w in self._workers.values() for i in w.running)
        self._send({"op": "hello", "running": running})
        try:
            for line in reader:
                message = decode(line)
                if message is not None:
                    self._handle(message)
        except OSError:
            pass
        finally:
            with self._lock:
                if self._client is writer:
                    self._client = None
                    self._last_client = time.monotonic()
            connection.close()

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            client = self._client
            if client is None:
                return
            try:
                send(client, message)
            except OSError:
                self._client = None

    # -------------------------------------------------------------- routing

    def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op not in ("run", "validate"):
            return
        try:
            worker = self._worker_for(message.get("code") or {}, message.get("env") or {})
        except OSError as error:
            logger.error("Starting a worker failed: %s", error)
            if op == "run":
                self._send({"op": "lost", "step_run_ids": [message["request"]["step_run_id"]]})
            return
        forwarded = {k: v for k, v in message.items() if k not in ("code", "env")}
        with self._lock:
            if op == "run":
                worker.running.add(message["request"]["step_run_id"])
            else:
                worker.validating.add(str(message.get("id")))
            try:
                assert worker.process.stdin is not None
                send(worker.process.stdin, forwarded)
            except OSError:
                logger.warning("Worker %s is gone; its steps are lost.", worker.key[:12])

    def _worker_for(self, code: dict[str, Any], env: dict[str, str]) -> _Worker:
        key = hashlib.sha256(json.dumps([code, env], sort_keys=True).encode()).hexdigest()
        with self._lock:
            worker = self._workers.get(key)
            if worker is not None and worker.process.poll() is None:
                return worker
            environment = {k: os.environ[k] for k in _INHERITED if k in os.environ}
            environment.update({k: str(v) for k, v in env.items()})
            home = os.path.join(self._homes, key[:16])
            os.makedirs(home, mode=0o700, exist_ok=True)
            environment["HOME"] = home
            environment["KSTEP_CODE"] = json.dumps(code)
            environment["KSTEP_INLINE_WORKERS"] = str(self.threads_per_worker)
            environment["KSTEP_ECHO_STEP_LOGS"] = "false"
            process = subprocess.Popen(
                [sys.executable, "-m", "kstep_operator.inline.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=environment,
                cwd=os.getcwd(),
            )
            worker = _Worker(key, process)
            self._workers[key] = worker
        threading.Thread(target=self._read_worker, args=(worker,), daemon=True).start()
        logger.info("Started inline worker %s (pid %d).", key[:12], process.pid)
        return worker

    def _read_worker(self, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        for line in worker.process.stdout:
            message = decode(line)
            if message is None:
                continue
            if message.get("op") == "done":
                with self._lock:
                    worker.running.discard(message.get("step_run_id", ""))
            elif message.get("op") == "validated":
                with self._lock:
                    worker.validating.discard(str(message.get("id")))
            self._send(message)
        code = worker.process.wait()
        with self._lock:
            lost = sorted(worker.running)
            worker.running.clear()
            unanswered = sorted(worker.validating)
            worker.validating.clear()
            if self._workers.get(worker.key) is worker:
                del self._workers[worker.key]
        logger.warning("Inline worker %s exited with %s.", worker.key[:12], code)
        if lost:
            self._send({"op": "lost", "step_run_ids": lost})
        # Whoever waits for a validation learns now that it will not come, not at a timeout.
        for request_id in unanswered:
            self._send(
                {
                    "op": "validated",
                    "id": request_id,
                    "unavailable": f"the worker of this code version exited with code {code}",
                }
            )

    def _stop_workers(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        for worker in workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()


def main(socket_path: str, threads: int, idle_exit_seconds: float | None) -> int:
    """Run an executor until it is stopped."""
    Executor(socket_path, threads_per_worker=threads).serve(idle_exit_seconds)
    return 0
