"""The one state machine shared by runs and step runs, locally and on a cluster."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Status of a pipeline run or a step run.

    `pending -> running -> completed | failed | cached | skipped | cancelled`, with `retrying`
    recorded on an attempt that failed and will be followed by another.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CACHED = "cached"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    RETRYING = "retrying"

    @property
    def is_finished(self) -> bool:
        """Whether nothing more will happen to this run or step run."""
        return self in _FINISHED

    @property
    def is_successful(self) -> bool:
        """Whether the outputs are available (ran to completion or came from the cache)."""
        return self in (Status.COMPLETED, Status.CACHED)


_FINISHED = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CACHED, Status.SKIPPED, Status.CANCELLED}
)
