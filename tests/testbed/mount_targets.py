"""Empty files and directories on the host that the stand-in's bind mounts need as targets.

A pod's volumes and termination-message file are bind-mounted in the process' private mount
namespace onto paths that must exist on the host, such as ``/dev/termination-log``. Missing
ones are created empty, and removed only once no test session on the machine runs a stand-in:
removing a mount target detaches the mounts on it in every namespace, which would pull volumes
from under another session's pods. Sessions register under ``/run/kstep-testbed``, so the
targets of a session that was killed outright are removed by the next one to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

REGISTRY = Path("/run/kstep-testbed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MountTargets:
    """The registry of created mount targets, shared by all sessions on the machine."""

    def __init__(self, registry: Path = REGISTRY) -> None:
        self.registry = registry
        self._session = registry / "sessions" / f"{os.getpid()}-{id(self):x}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock works across processes and across threads that open the file separately.
        (self.registry / "sessions").mkdir(parents=True, exist_ok=True)
        with open(self.registry / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def open_session(self) -> None:
        with self._locked():
            self._session.touch()

    def ensure(self, target: Path, *, directory: bool) -> None:
        """Create ``target`` (and missing parents) empty if it does not exist."""
        if target.exists():
            return
        with self._locked():
            if target.exists() or target.is_symlink():
                return
            missing = [p for p in [target, *target.parents] if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            if directory:
                target.mkdir()
            else:
                target.touch()
            # Deepest last, so that removal in reverse order empties parents bottom-up.
            with open(self.registry / "targets", "a") as targets:
                targets.writelines(f"{path}\n" for path in reversed(missing))
        logger.debug("Created mount target %s", target)

    def close_session(self) -> None:
        """Leave the registry; the last live session removes every created target."""
        with self._locked():
            self._session.unlink(missing_ok=True)
            live = []
            for session in (self.registry / "sessions").iterdir():
                if _alive(int(session.name.split("-")[0])):
                    live.append(session)
                else:
                    session.unlink(missing_ok=True)
            if live:
                return
            targets = self.registry / "targets"
            listed = targets.read_text().splitlines() if targets.exists() else []
            for entry in reversed(listed):
                self._remove_if_empty(Path(entry))
            targets.unlink(missing_ok=True)

    @staticmethod
    def _remove_if_empty(path: Path) -> None:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()
