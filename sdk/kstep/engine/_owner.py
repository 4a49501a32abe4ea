"""Which process owns a run, and whether that process is still alive.

A local run records its owner as host name, pid and the process's start time (from
`/proc`), so a later engine on the same host can tell a live owner from a dead one even
after the pid was reused.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Any


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of `/proc/<pid>/stat` after the command name (state first)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            return file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    try:
        return None if fields is None else int(fields[19])
    except (IndexError, ValueError):
        return None


@functools.cache
def current_owner() -> dict[str, Any]:
    """The owner record of this process."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def owner_is_alive(owner: dict[str, Any] | None) -> bool | None:
    """True or False for an owner on this host; None when it lives elsewhere (unknown)."""
    if not owner or owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        # A zombie has exited; it lingers only until its parent reaps it, which never
        # happens when the parent died too and nothing adopts orphans (a container
        # without an init process).
        return False
    start = owner.get("start")
    return start is None or _start_ticks(pid) == start
