"""When a relay tries again: backoff, the outage gate, and the count of unexpected failures.

* Every retry waits a capped exponential backoff with jitter (:meth:`RetryPolicy.backoff`).
* Transient failures never count toward dead-lettering; when several in a row fail with no
  success in between, the receiver looks down and every lane pauses together (the *gate*),
  then one attempt at a time probes it until one succeeds.
* Unexpected failures are counted per entry; the entry is dead-lettered at ``max_attempts``.
"""

from __future__ import annotations

import random
import time
from typing import Final

from services.common.delivery.config import OutboxConfig

__all__ = ["RetryPolicy", "backoff"]

_GATE_AFTER: Final = 3  # transient failures with no success in between: the receiver is down


def backoff(config: OutboxConfig, attempt: int) -> float:
    """Exponential backoff with jitter: a random delay in [d/2, d], d = initial * 2^(n-1)."""
    ceiling = min(config.backoff_max, config.backoff_initial * 2.0 ** min(attempt - 1, 30))
    return ceiling * random.uniform(0.5, 1.0)


class RetryPolicy:
    """The retry state of one relay: per-entry unexpected failures and the outage gate."""

    def __init__(self, config: OutboxConfig) -> None:
        self._config = config
        self._attempts: dict[str, int] = {}  # unexpected failures per entry id
        self.transient_streak = 0  # transient failures since the last success
        self.gate_until = 0.0  # all lanes pause until then (the receiver looks down)

    def backoff(self, attempt: int) -> float:
        return backoff(self._config, attempt)

    def outage(self) -> bool:
        """Several attempts failed transiently and none succeeded since: the receiver is down."""
        return self.transient_streak >= _GATE_AFTER

    def gated(self, now: float) -> bool:
        """Every lane is paused (the receiver looks down and the pause is not over)."""
        return now < self.gate_until

    def limit(self) -> int:
        """Attempts in flight at once: one probe during an outage, else ``concurrency``."""
        return 1 if self.outage() else self._config.concurrency

    def succeeded(self) -> None:
        """An attempt succeeded: the receiver is up."""
        self.transient_streak = 0

    def transient(self, failures: int) -> float:
        """Count a transient failure (``failures``-th in a row of its lane); the retry delay."""
        self.transient_streak += 1
        delay = self.backoff(max(failures, self.transient_streak))
        if self.outage():
            # Several attempts failed and none succeeded since: the receiver looks down.
            # Pause every lane instead of letting each one probe it.
            self.gate_until = max(self.gate_until, time.monotonic() + delay)
        return delay

    def failed_attempts(self, entry_id: str) -> int:
        """Unexpected failures of ``entry_id`` so far."""
        return self._attempts.get(entry_id, 0)

    def unexpected(self, entry_id: str) -> int:
        """Count an unexpected failure of ``entry_id``; its failures so far, this one included."""
        attempts = self._attempts.get(entry_id, 0) + 1
        self._attempts[entry_id] = attempts
        return attempts

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self._config.max_attempts

    def forget(self, entry_id: str) -> None:
        """``entry_id`` is settled."""
        self._attempts.pop(entry_id, None)
