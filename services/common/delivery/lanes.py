"""Per-receiver lanes: the entries a relay holds, grouped by ``lane_key``, and their schedule.

Each lane is delivered strictly in stream order, one attempt at a time; a lane whose head
failed waits for its retry time in a heap, a lane that can go now waits in the ready queue.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, field

from services.common.delivery.entries import Entry
from services.common.delivery.handlers import LaneKey

__all__ = ["Lane", "Lanes"]


@dataclass(slots=True)
class Lane:
    key: str
    entries: deque[Entry] = field(default_factory=deque)
    busy: bool = False  # an attempt task owns it
    solo: bool = False  # deliver one entry at a time (a batch failed unexpectedly)
    alone: bool = False  # not mixed with other lanes in one call (a shared call failed)
    queued: bool = False  # in the ready queue
    retry_at: float = 0.0
    failures: int = 0  # consecutive failed attempts of its head (for the backoff)


class Lanes:
    """The entries read and not yet settled, by lane, with the lanes that can go and when."""

    def __init__(self, lane_key: LaneKey) -> None:
        self._lane_key = lane_key
        self._lanes: dict[str, Lane] = {}
        self.held: dict[str, Entry] = {}  # read, not yet settled
        self._ready: deque[Lane] = deque()
        self._waiting: list[tuple[float, int, Lane]] = []  # heap of (retry_at, seq, lane)
        self._seq = 0

    def enqueue(self, entries: list[Entry]) -> int:
        """Hold ``entries`` (those not held yet) at the tail of their lanes; ``len(entries)``."""
        for entry in entries:
            if entry.id in self.held:
                continue
            self.held[entry.id] = entry
            try:
                key = self._lane_key(entry.fields()) if entry.raw else entry.id
            except Exception:  # a malformed entry: alone in its lane (the handler will judge)
                key = entry.id
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(key)
            lane.entries.append(entry)
            if not lane.busy and not lane.queued and lane.retry_at <= time.monotonic():
                self._make_ready(lane)
        return len(entries)

    def settle(self, entry_id: str) -> None:
        """``entry_id`` is settled (delivered or dead-lettered): no longer held."""
        self.held.pop(entry_id, None)

    def has_ready(self) -> bool:
        return bool(self._ready)

    def has_waiting(self) -> bool:
        return bool(self._waiting)

    def promote_due(self, now: float) -> None:
        """Lanes whose retry time has come join the ready queue."""
        while self._waiting and self._waiting[0][0] <= now:
            lane = heapq.heappop(self._waiting)[2]
            if not lane.busy and not lane.queued and lane.entries:
                self._make_ready(lane)

    def take(self) -> Lane | None:
        """The next ready lane, now busy (owned by the caller until :meth:`release`)."""
        while self._ready:
            lane = self._ready.popleft()
            lane.queued = False
            if lane.busy or not lane.entries:
                continue
            lane.busy = True
            return lane
        return None

    def put_back(self, lane: Lane) -> None:
        """Undo :meth:`take`: ``lane`` is ready again, first in the queue."""
        lane.busy = False
        lane.queued = True
        self._ready.appendleft(lane)

    def next_due(self) -> float | None:
        """When a lane can go: now if one is ready, else the earliest retry; None if none."""
        if self._ready:
            return time.monotonic()
        if self._waiting:
            return self._waiting[0][0]
        return None

    def retry_later(self, lane: Lane, delay: float) -> None:
        """The head of ``lane`` failed: the lane waits ``delay`` seconds."""
        lane.failures += 1
        lane.retry_at = time.monotonic() + delay
        self._seq += 1
        heapq.heappush(self._waiting, (lane.retry_at, self._seq, lane))

    @staticmethod
    def succeeded(lane: Lane) -> None:
        """The head of ``lane`` was settled: it may share calls with other lanes again."""
        lane.failures = 0
        lane.retry_at = 0.0
        lane.alone = False

    def release(self, lane: Lane) -> None:
        """The caller is done with ``lane``: dropped if empty, else ready again if due."""
        lane.busy = False
        if not lane.entries:
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
        elif lane.retry_at <= time.monotonic() and not lane.queued:
            self._make_ready(lane)

    def _make_ready(self, lane: Lane) -> None:
        lane.queued = True
        self._ready.append(lane)
