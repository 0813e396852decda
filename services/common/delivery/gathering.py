"""When a relay's next shared call waits to gather: under load, fewer and larger calls.

After a shared call ends, the relay estimates how many entries the next call would carry
without waiting: the rate at which they arrived (the entries the call carried, over the time
since the previous call started) times the length of the call that just ended. When that is
``gather_after`` or more, the next shared call waits ``gather_seconds`` after this one ended,
and carries what arrived meanwhile as well; less CPU per entry on both sides of the call.
The rate decides, not the size alone: a size that the waiting itself made large must not
keep the waiting going at a lighter load. A backlog never waits (a whole call's worth held, or
a read that filled its COUNT), nor does a relay that is not sharing calls.
"""

from __future__ import annotations

import time

from services.common.delivery.config import OutboxConfig

__all__ = ["Gathering"]


class Gathering:
    """The gathering state of one relay (monotonic clock)."""

    def __init__(self, config: OutboxConfig) -> None:
        self._after = config.gather_after
        self._seconds = config.gather_seconds
        self._max_batch = config.max_batch
        self._last_start: float | None = None
        self.until = 0.0  # no shared call starts before this (0: none waits)

    def call_ended(self, started: float, carried: int) -> None:
        """A shared call that started at ``started`` with ``carried`` entries just ended."""
        previous, self._last_start = self._last_start, started
        if previous is None or started <= previous:
            return
        now = time.monotonic()
        expected = carried / (started - previous) * (now - started)
        if expected >= self._after:
            self.until = now + self._seconds

    def waiting(self, *, held: int, behind: bool, sharing: bool) -> bool:
        """Whether the next shared call waits now (``held``: entries in memory; ``behind``:
        the last read filled its COUNT; ``sharing``: lanes share calls)."""
        if not self.until:
            return False
        if time.monotonic() >= self.until or held >= self._max_batch or behind or not sharing:
            self.until = 0.0
            return False
        return True
