"""Delivery metrics: outbox counters for the relays, end-to-end latency, and the backlog collector.

* A relay binds :class:`OutboxMetrics` once per stream and calls ``delivered(n)``,
  ``retried(n)``, ``dead_lettered(n)``; a producer calls ``added(n)`` after its write committed.
* Every hop that hands an event on calls :func:`observe_delivery_latency` with the event's
  creation time (the timestamp the event carries), so ``missive_delivery_latency_seconds{hop}``
  shows how long after ``SendMessage`` a notification reached each hop.
* :class:`OutboxCollector` reads each outbox's consumer-group lag, pending count, oldest pending
  age, length and dead-letter count every ``interval`` seconds with one pipelined round trip
  per outbox (XINFO GROUPS, XPENDING, two XLEN): nothing is read per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from redis.exceptions import RedisError, ResponseError

from services.common.metrics import families as f
from services.common.redis import RedisClient

__all__ = [
    "HOP_FRONTEND",
    "HOP_LIVE_STREAM",
    "HOP_NOTIFICATION",
    "OutboxCollector",
    "OutboxMetrics",
    "OutboxSnapshot",
    "observe_delivery_latency",
    "stream_ended_slow",
    "stream_pushed",
    "streams_open",
]

logger = logging.getLogger(__name__)

# The hops of a message's journey (label values of missive_delivery_latency_seconds).
HOP_NOTIFICATION: Final = "notification"  # MessageService relay → NotificationService stored it
HOP_FRONTEND: Final = "frontend"  # NotificationService relay → FrontendService accepted it
HOP_LIVE_STREAM: Final = "live_stream"  # FrontendService wrote it to a subscriber's stream


class OutboxMetrics:
    """The counters of one outbox stream, bound once (no label lookup per event)."""

    __slots__ = ("added", "dead_lettered", "delivered", "retried", "stream")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.added: Callable[[float], None] = f.OUTBOX_ADDED.labels(stream).inc
        self.delivered: Callable[[float], None] = f.OUTBOX_DELIVERED.labels(stream).inc
        self.retried: Callable[[float], None] = f.OUTBOX_RETRIED.labels(stream).inc
        self.dead_lettered: Callable[[float], None] = f.OUTBOX_DEAD_LETTERED.labels(stream).inc


def observe_delivery_latency(
    hop: str, created: datetime | float, now: float | None = None
) -> float:
    """Record (and return) seconds from ``created`` (a datetime, or Unix seconds) to now.

    A clock skew that would make it negative records 0.
    """
    created_at = created.timestamp() if isinstance(created, datetime) else float(created)
    seconds = max(0.0, (time.time() if now is None else now) - created_at)
    f.DELIVERY_LATENCY.labels(hop).observe(seconds)
    return seconds


# FrontendService's live streams.
streams_open: Final = f.FRONTEND_LIVE_STREAMS
stream_pushed: Final = f.FRONTEND_PUSHED.inc
stream_ended_slow: Final = f.FRONTEND_ENDED_SLOW.inc


class OutboxLike(Protocol):
    """What the collector needs of an outbox (``services.common.delivery.OutboxConfig`` fits)."""

    @property
    def stream(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def dead_letter_stream(self) -> str: ...


@dataclass(frozen=True)
class OutboxSnapshot:
    """One reading of an outbox's backlog (``lag`` is NaN when the server cannot tell)."""

    stream: str
    group: str
    length: int
    lag: float
    pending: int
    oldest_pending_age: float
    dead_letters: int


def _entry_ms(entry_id: object) -> int | None:
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    if not isinstance(entry_id, str) or "-" not in entry_id:
        return None
    return int(entry_id.split("-", 1)[0])


def _field(info: dict[Any, Any], name: str) -> Any:
    return info[name] if name in info else info.get(name.encode())


def _group_info(groups: object, group: str) -> dict[Any, Any] | None:
    if not isinstance(groups, list):
        return None
    for info in groups:
        name = _field(info, "name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return dict(info)
    return None


def _snapshot(outbox: OutboxLike, replies: Sequence[Any], now_ms: int) -> OutboxSnapshot:
    groups, summary, length, dead = replies
    length = length if isinstance(length, int) else 0
    dead = dead if isinstance(dead, int) else 0
    info = _group_info(groups, outbox.group)
    if info is None:  # no stream, or the relay has not created its group yet: all of it is lag
        return OutboxSnapshot(outbox.stream, outbox.group, length, float(length), 0, 0.0, dead)
    lag_value = _field(info, "lag")
    lag = float(lag_value) if lag_value is not None else math.nan
    pending = 0
    age = 0.0
    if isinstance(summary, dict):
        pending = int(summary.get("pending") or 0)
        oldest = _entry_ms(summary.get("min")) if pending else None
        if oldest is not None:
            age = max(0.0, (now_ms - oldest) / 1000)
    return OutboxSnapshot(outbox.stream, outbox.group, length, lag, pending, age, dead)


def _missing(reply: Exception) -> bool:
    text = str(reply)
    return isinstance(reply, ResponseError) and ("no such key" in text or "NOGROUP" in text)


class OutboxCollector:
    """Periodically reads the backlog of some outboxes into the ``missive_outbox_*`` gauges."""

    def __init__(
        self,
        client: RedisClient,
        outboxes: Iterable[OutboxLike],
        interval: float = 10.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._client = client
        self._outboxes = tuple(outboxes)
        self.interval = interval

    async def collect_once(self) -> list[OutboxSnapshot]:
        """Read every outbox now and set the gauges; an outbox that fails is counted and skipped."""
        snapshots = []
        for outbox in self._outboxes:
            try:
                snapshot = await self._read(outbox)
            except (RedisError, OSError, ValueError, TypeError) as exc:
                f.OUTBOX_COLLECTOR_ERRORS.labels(outbox.stream).inc()
                logger.warning("cannot read the backlog of %s: %s", outbox.stream, exc)
                continue
            self._publish(snapshot, outbox)
            snapshots.append(snapshot)
        return snapshots

    async def run(self) -> None:
        """Collect every ``interval`` seconds until cancelled."""
        while True:
            await self.collect_once()
            await asyncio.sleep(self.interval)

    async def _read(self, outbox: OutboxLike) -> OutboxSnapshot:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xinfo_groups(outbox.stream)
            pipe.xpending(outbox.stream, outbox.group)
            pipe.xlen(outbox.stream)
            pipe.xlen(outbox.dead_letter_stream)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            # A missing stream or group answers "no such key" / NOGROUP: nothing to read there.
            if isinstance(reply, Exception) and not _missing(reply):
                raise reply
        cleaned = [None if isinstance(reply, Exception) else reply for reply in replies]
        return _snapshot(outbox, cleaned, int(time.time() * 1000))

    @staticmethod
    def _publish(snapshot: OutboxSnapshot, outbox: OutboxLike) -> None:
        labels = (outbox.stream, outbox.group)
        f.OUTBOX_LAG.labels(*labels).set(snapshot.lag)
        f.OUTBOX_PENDING.labels(*labels).set(snapshot.pending)
        f.OUTBOX_OLDEST_PENDING_AGE.labels(*labels).set(snapshot.oldest_pending_age)
        f.OUTBOX_LENGTH.labels(outbox.stream).set(snapshot.length)
        f.OUTBOX_DEAD_LETTERS.labels(outbox.stream).set(snapshot.dead_letters)
