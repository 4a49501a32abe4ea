"""Retry policy of a step."""

from __future__ import annotations

from dataclasses import dataclass

from kstep._errors import StepDefinitionError


@dataclass(frozen=True)
class Retry:
    """How often and how fast a failed step is tried again.

    Each attempt is recorded as its own step run. The wait before attempt `n + 1` is
    `delay * backoff ** (n - 1)` seconds.

    Args:
        max_retries: attempts after the first one (0 disables retrying).
        delay: seconds to wait before the first retry.
        backoff: factor the wait grows by with each further retry (1 keeps it constant).
    """

    max_retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise StepDefinitionError(
                f"Retry(max_retries={self.max_retries!r}) is invalid: expected an int >= 0"
            )
        if self.delay < 0:
            raise StepDefinitionError(
                f"Retry(delay={self.delay!r}) is invalid: expected seconds >= 0"
            )
        if self.backoff < 1:
            raise StepDefinitionError(
                f"Retry(backoff={self.backoff!r}) is invalid: expected a factor >= 1"
            )

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before starting `attempt` (2 is the first retry)."""
        if attempt <= 1:
            return 0.0
        return float(self.delay * self.backoff ** (attempt - 2))
