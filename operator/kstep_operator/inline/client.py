"""The operator's side of the inline executor connection."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from kstep_operator.inline.protocol import decode, send

logger = logging.getLogger(__name__)

OnDone = Callable[[str, str], None]
OnLost = Callable[[list[str]], None]


class ExecutorUnavailable(RuntimeError):
    """The inline executor cannot be reached (or cannot run a worker just now)."""


class CodeNotLoadable(ValueError):
    """The run's code archive is missing or damaged: nothing of it can ever import."""


class ExecutorClient:
    """Sends inline steps to the executor and reports their ends.

    `running` holds the attempts the executor is running as far as this client knows: what
    the executor listed when it (re)connected, plus what was sent since, minus what ended.
    """

    def __init__(self, socket_path: str, on_done: OnDone, on_lost: OnLost) -> None:
        self.socket_path = socket_path
        self.on_done = on_done
        self.on_lost = on_lost
        self.running: set[str] = set()
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._writer: IO[bytes] | None = None
        self._validations: dict[str, tuple[threading.Event, dict[str, Any]]] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._connect_forever, daemon=True)

    def start(self) -> None:
        """Connect in the background, reconnecting whenever the connection drops."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reconnecting."""
        self._stopped = True

    def knows(self, step_run_id: str) -> bool:
        """Whether the executor runs (or was just sent) this attempt."""
        with self._lock:
            return step_run_id in self.running

    def submit(self, request: dict[str, Any], env: dict[str, str], code: dict[str, Any]) -> None:
        """Send an attempt to the executor."""
        if not self.ready.wait(timeout=30):
            raise ExecutorUnavailable(f"the inline executor at {self.socket_path} is unreachable")
        with self._lock:
            self.running.add(request["step_run_id"])
            self._send({"op": "run", "request": request, "env": env, "code": code})

    def validate(
        self, references: list[str], env: dict[str, str], code: dict[str, Any], timeout: float
    ) -> dict[str, str]:
        """Import each reference in a worker of that code version; return the failures.

        Raises:
            CodeNotLoadable: the code archive is missing or damaged.
            ExecutorUnavailable: the executor, or the worker, cannot answer now.
        """
        if not self.ready.wait(timeout=30):
            raise ExecutorUnavailable(f"the inline executor at {self.socket_path} is unreachable")
        request_id = os.urandom(8).hex()
        answered = threading.Event()
        answer: dict[str, Any] = {}
        with self._lock:
            self._validations[request_id] = (answered, answer)
            self._send(
                {
                    "op": "validate",
                    "id": request_id,
                    "references": references,
                    "env": env,
                    "code": code,
                }
            )
        if not answered.wait(timeout):
            with self._lock:
                self._validations.pop(request_id, None)
            raise ExecutorUnavailable("the inline executor did not answer a validation in time")
        if answer.get("code_error"):
            raise CodeNotLoadable(str(answer["code_error"]))
        if answer.get("unavailable"):
            raise ExecutorUnavailable(str(answer["unavailable"]))
        return dict(answer.get("problems") or {})

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            raise ExecutorUnavailable(f"the inline executor at {self.socket_path} is unreachable")
        try:
            send(self._writer, message)
        except OSError as error:
            raise ExecutorUnavailable(f"the inline executor connection broke: {error}") from None

    def _connect_forever(self) -> None:
        while not self._stopped:
            try:
                connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                connection.connect(self.socket_path)
            except OSError:
                time.sleep(0.2)
                continue
            self._serve(connection)
            self.ready.clear()
            time.sleep(0.2)

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        with self._lock:
            self._writer = connection.makefile("wb")
        try:
            for line in reader:
                message = decode(line)
                if message is not None:
                    self._dispatch(message)
        except OSError:
            pass
        finally:
            with self._lock:
                self._writer = None
            connection.close()
            logger.warning("The connection to the inline executor closed; reconnecting.")

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "hello":
            with self._lock:
                self.running = set(message.get("running") or [])
            self.ready.set()
        elif op == "done":
            step_run_id = str(message.get("step_run_id"))
            with self._lock:
                self.running.discard(step_run_id)
            self.on_done(step_run_id, str(message.get("status")))
        elif op == "lost":
            lost = [str(i) for i in message.get("step_run_ids") or []]
            with self._lock:
                self.running.difference_update(lost)
            self.on_lost(lost)
        elif op == "validated":
            with self._lock:
                waiting = self._validations.pop(str(message.get("id")), None)
            if waiting is not None:
                waiting[1].update(message)
                waiting[0].set()


def start_embedded_executor(socket_path: str, threads: int) -> subprocess.Popen[bytes] | None:
    """Start an executor for this operator unless one already serves `socket_path`.

    It runs in its own session, so it outlives an operator that crashes and a restarted
    operator finds it (and its running steps) again; it exits once idle without operator.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(socket_path)
        probe.close()
        return None
    except OSError:
        probe.close()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kstep_operator",
            "executor",
            "--socket",
            socket_path,
            "--threads",
            str(threads),
            "--idle-exit-seconds",
            "120",
        ],
        start_new_session=True,
    )
