"""The relay: delivers an outbox stream (see :mod:`services.common.outbox`) at least once.

A :class:`Relay` reads the stream through a consumer group in batches (XREADGROUP COUNT), hands
each entry to ``handler`` and XACKs what is settled in one command per round. Unacknowledged
entries stay pending: a restarted relay re-reads its own first, and entries of a crashed relay
are reclaimed (XAUTOCLAIM) by another once idle for ``claim_idle_ms``.

Outcomes of one attempt (the handler's return or exception):

* success: the entry is acknowledged;
* :class:`TransientDeliveryError` (the receiver is down, slow, shutting down, overloaded): the
  attempt is retried with capped exponential backoff and jitter, *indefinitely*, and never counts
  toward dead-lettering: an outage of any length delays delivery and loses nothing. Relay restarts
  and reclaims never count either (Redis' delivery counter is not used);
* :class:`PermanentDeliveryError` (a malformed event, a documented refusal such as
  INVALID_ARGUMENT): the entry is dead-lettered at once;
* any other exception, or a handler still running after ``handler_timeout`` (a bug, an
  undocumented status): retried with backoff, and dead-lettered after ``max_attempts`` such
  failures, so a bug hit by one event cannot block its lane forever. Dead letters keep the
  original fields plus ``dead_letter.*`` ones, and can be replayed once the bug is fixed.

Ordering and concurrency: entries are grouped in *lanes* by ``lane_key(fields)`` (e.g. the
receiver's email). Each lane is delivered strictly in stream order, one attempt at a time; a
failing or slow head holds back only its own lane. Up to ``concurrency`` lanes are delivered at
once, and at most ``max_held`` entries are read ahead in memory. When attempts of several lanes
fail transiently with no success in between (the receiver is down), all lanes pause together
(the same capped backoff) and one attempt at a time probes the receiver until one succeeds.
The order guarantee is per relay: several relays on one stream each keep their own lanes in
order, and entries reclaimed from a crashed relay may follow newer ones of the same lane.

An entry may reach a handler more than once: handlers MUST be idempotent (dedupe on a business
id carried in the event, never on the stream entry id).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from services.common.outbox import (
    DEAD_LETTER_AT_FIELD,
    DEAD_LETTER_ATTEMPTS_FIELD,
    DEAD_LETTER_CONSUMER_FIELD,
    DEAD_LETTER_ID_FIELD,
    DEAD_LETTER_OUTCOME_FIELD,
    DEAD_LETTER_REASON_FIELD,
    OUTBOX_LUA,
    OutboxConfig,
    outbox_add,
    outbox_lua_args,
)

__all__ = [
    "DEAD_LETTER_ATTEMPTS_FIELD",
    "DEAD_LETTER_AT_FIELD",
    "DEAD_LETTER_CONSUMER_FIELD",
    "DEAD_LETTER_ID_FIELD",
    "DEAD_LETTER_OUTCOME_FIELD",
    "DEAD_LETTER_REASON_FIELD",
    "OUTBOX_LUA",
    "BatchHandler",
    "Handler",
    "LaneKey",
    "OutboxConfig",
    "PermanentDeliveryError",
    "Relay",
    "TransientDeliveryError",
    "outbox_add",
    "outbox_lua_args",
]

logger = logging.getLogger(__name__)


class PermanentDeliveryError(Exception):
    """Raised by a handler when retrying can never help: the entry is dead-lettered at once."""


class TransientDeliveryError(Exception):
    """Raised by a handler when the receiver is unreachable, slow or shutting down.

    Retried with backoff until it succeeds; never counts toward dead-lettering.
    """


Handler = Callable[[str, dict[str, str]], Awaitable[None]]
"""``handler(entry_id, fields)``: deliver one event; return on success, raise otherwise.

Raise :class:`TransientDeliveryError` for an outage (retried forever) and
:class:`PermanentDeliveryError` when retrying can never help (dead-lettered at once); anything
else counts toward ``max_attempts``. Must be idempotent (the relay is at-least-once): dedupe on a
business id carried in the fields (e.g. ``message_id``), not on ``entry_id``. Must bound its own
run time (e.g. a gRPC deadline) well below ``handler_timeout`` and ``claim_idle_ms``.
"""

BatchHandler = Callable[
    [list[tuple[str, dict[str, str]]]], Awaitable[list[PermanentDeliveryError | None]]
]
"""``batch_handler(entries)``: deliver several consecutive entries of one lane, in order.

Returns one outcome per entry, in order: None (delivered) or a :class:`PermanentDeliveryError`
(that entry is dead-lettered, the others are not affected). Raising fails the whole batch, with
the same classification as a :data:`Handler`'s exceptions; after an unexpected error the lane
retries its entries one at a time (through ``handler``), so one bad entry is found and judged
alone. Same idempotency and run-time rules as ``handler``.
"""

LaneKey = Callable[[dict[str, str]], str]
"""``lane_key(fields)``: entries with the same key are delivered in stream order, one at a time."""

_TRIM_INTERVAL_S: Final = 1.0
_LANE_BURST: Final = 32  # entries one lane delivers before giving its slot to another lane
_TOUCH_CHUNK: Final = 500  # entry ids per XCLAIM JUSTID (keeping held entries from idling)
_GATE_AFTER: Final = 3  # transient failures with no success in between: the receiver is down
_HEALTHY_AFTER_S: Final = 5.0  # a pass this long resets the Redis backoff


def _raise_if_cancel_swallowed() -> None:
    """Re-raise a cancellation of the current task that something swallowed.

    On Python 3.11, ``asyncio.wait_for`` (which redis-py uses to send every command) returns the
    result instead of raising if the task is cancelled just as the send completes
    (cpython gh-86296, fixed in 3.12): measured ~2% of ``task.cancel()`` calls on a task looping
    over redis-py commands. Without this check ``Relay.run`` would then never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _single_lane(fields: dict[str, str]) -> str:
    return ""


@dataclass(slots=True)
class _Entry:
    id: str
    raw: dict[Any, Any]  # as returned by redis-py (bytes or str); empty if the entry was deleted

    def fields(self) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.raw.items()}


@dataclass(slots=True)
class _Lane:
    key: str
    entries: deque[_Entry] = field(default_factory=deque)
    busy: bool = False  # an attempt task owns it
    solo: bool = False  # deliver one entry at a time (a batch failed unexpectedly)
    queued: bool = False  # in the ready queue
    retry_at: float = 0.0
    failures: int = 0  # consecutive failed attempts of its head (for the backoff)


@dataclass(slots=True)
class _DeadLetter:
    entry: _Entry
    outcome: str
    reason: str
    attempts: int


def _stream_entries(response: Any) -> list[tuple[str, dict[Any, Any]]]:
    """Entries of the single stream in an XREADGROUP reply (RESP2/RESP3, legacy or not)."""
    if not response:
        return []
    items: Any = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    first = items[0] if items else None
    if isinstance(first, list) and (not first or isinstance(first[0], tuple | list)):
        items = first  # RESP3 legacy shape: {stream: [[entry, ...]]}
    return [_pair(entry) for entry in items]


def _pair(entry: Any) -> tuple[str, dict[Any, Any]]:
    entry_id, fields = entry
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return _text(entry_id), dict(fields or {})


class Relay:
    """Delivers the entries of one outbox stream to ``handler``, at least once.

    Several relays (processes) can share one consumer group; give each a *stable* consumer name
    (e.g. service + pod/host name) so a restarted relay finds its own pending entries first.
    The ``redis`` client should have automatic retries disabled (redis-py's retries re-send
    writes); this class handles connection errors itself. ``handler`` must be idempotent.
    ``lane_key`` groups entries whose order matters (default: one lane, the stream's order).
    With ``batch_handler``, a lane with several entries waiting (a backlog) delivers up to
    ``config.max_batch`` of them in one call; a lone entry still goes through ``handler``.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        config: OutboxConfig,
        consumer: str,
        handler: Handler,
        *,
        lane_key: LaneKey = _single_lane,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        if not consumer:
            raise ValueError("consumer name must be non-empty")
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        if socket_timeout is not None and config.block_ms >= float(socket_timeout) * 1000:
            raise ValueError("config.block_ms must be below the client's socket_timeout")
        self._redis = redis
        self._config = config
        self._consumer = consumer
        self._handler = handler
        self._lane_key = lane_key
        self._batch_handler = batch_handler
        self._stats = {
            "delivered": 0,  # handler succeeded and our XACK removed the entry
            "retried": 0,  # failed attempts scheduled for a retry (transient or not)
            "dead_lettered": 0,  # entries moved to the dead-letter stream
            "reclaimed": 0,  # entries taken over from idle consumers (XAUTOCLAIM)
            "already_acked": 0,  # handler succeeded but another relay had acked it meanwhile
        }
        # How often held entries are touched (their idle time reset) and stale ones looked for.
        self._touch_period = config.claim_idle_ms / 3000
        self._claim_period = max(config.claim_idle_ms / 2, config.block_ms) / 1000
        self._group_ready = False
        self._claim_due = 0.0
        self._claim_start = "0-0"
        self._trim_due = 0.0
        self._touch_due = 0.0
        self._reset_state()

    def _reset_state(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[str, _Entry] = {}  # read, not yet settled
        self._attempts: dict[str, int] = {}  # unexpected failures per entry id
        self._ready: deque[_Lane] = deque()
        self._waiting: list[tuple[float, int, _Lane]] = []  # heap of (retry_at, seq, lane)
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[list[_Entry]] | None = None
        self._acks: list[str] = []  # delivered, to XACK
        self._dead: list[_DeadLetter] = []  # to dead-letter, then XACK
        self._wake = asyncio.Event()
        self._recover = True  # our own pending entries (from id 0) are read before new ones
        self._recover_cursor = "0-0"
        self._transient_streak = 0  # transient failures since the last success
        self._gate_until = 0.0  # all lanes pause until then (the receiver looks down)

    def stats(self) -> dict[str, int]:
        """Counters: delivered, retried, dead_lettered, reclaimed, already_acked."""
        return dict(self._stats)

    async def ensure_group(self) -> None:
        """XGROUP CREATE the consumer group at id 0 (so no earlier entry is missed), MKSTREAM."""
        cfg = self._config
        try:
            await self._redis.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def run(self) -> None:
        """Deliver forever, until the task is cancelled.

        Order of work: own pending entries (id 0), then stale entries of other consumers
        (XAUTOCLAIM every ``claim_idle_ms / 2``), then new ones (XREADGROUP ``>``, blocking).
        Redis errors never end the loop: it logs, drops what it holds in memory (still pending
        in Redis), backs off and resumes from its own pending entries (re-creating the group if
        Redis lost it). Cancelling leaves the entries in progress pending, for a later re-read.
        """
        cfg = self._config
        failures = 0
        logger.info("relay %s starting on %s (group %s)", self._consumer, cfg.stream, cfg.group)
        try:
            while True:
                _raise_if_cancel_swallowed()
                started = time.monotonic()
                try:
                    await self._serve(block=True)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    if time.monotonic() - started > _HEALTHY_AFTER_S:
                        failures = 0  # it had been working: a new outage starts over
                    failures += 1
                    delay = self._backoff(failures)
                    logger.warning(
                        "relay %s on %s: Redis unavailable (%s); retrying in %.2fs",
                        self._consumer,
                        cfg.stream,
                        exc,
                        delay,
                    )
                except ResponseError as exc:
                    failures += 1
                    delay = self._backoff(failures)
                    self._group_ready = False  # NOGROUP, or the stream was deleted: re-create
                    logger.warning(
                        "relay %s on %s: Redis error %s; retrying in %.2fs",
                        self._consumer,
                        cfg.stream,
                        exc,
                        delay,
                    )
                except Exception:
                    failures += 1
                    delay = self._backoff(failures)
                    logger.exception(
                        "relay %s on %s: unexpected error; retrying in %.2fs",
                        self._consumer,
                        cfg.stream,
                        delay,
                    )
                await self._reset()
                _raise_if_cancel_swallowed()
                await asyncio.sleep(delay)
        finally:
            await self._reset()

    async def drain_once(self) -> int:
        """Process what is available now (own pending, stale ones, new ones) without blocking.

        Waits out the earliest scheduled retry first if nothing is ready. Returns once every
        entry read is settled or waiting for a retry, with the number of entries acknowledged
        (delivered or dead-lettered) by this call. Redis errors propagate.
        """
        if not self._ready and not self._tasks and self._waiting:
            due = self._next_due()
            if due is not None:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        self._claim_due = 0.0
        try:
            acked = await self._serve(block=False)
        except BaseException:
            await self._reset()
            raise
        if acked:
            await self._maybe_trim(force=True)
        return acked

    async def _reset(self) -> None:
        """Forget everything held in memory (it stays pending in Redis) and stop the attempts."""
        tasks = [*self._tasks, *([self._reader] if self._reader else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._reset_state()

    # -- the scheduling loop ------------------------------------------------------------------

    async def _serve(self, *, block: bool) -> int:
        """Read, dispatch and settle. With ``block``, forever; else until nothing is runnable."""
        if not self._group_ready:
            await self.ensure_group()
            self._recover = True
            self._recover_cursor = "0-0"
        acked = 0
        while True:
            _raise_if_cancel_swallowed()
            self._dispatch()
            acked += await self._flush()
            await self._touch()
            if block:
                await self._maybe_trim(force=False)
            room = len(self._held) < self._config.max_held
            if room and await self._fetch_owned():
                continue
            if not block:
                if room and self._enqueue(await self._read_new(block=False)):
                    continue
                if not self._tasks and not self._runnable():
                    return acked + await self._flush()
            elif room and self._reader is None:
                self._reader = asyncio.create_task(self._read_new(block=True))
            await self._wait()

    def _runnable(self) -> bool:
        due = self._next_due()
        return due is not None and due <= time.monotonic()

    async def _wait(self) -> None:
        """Until an attempt settles, new entries arrive or the next retry falls due."""
        if self._wake.is_set():
            self._wake.clear()
            return
        timeout = self._touch_period
        due = self._next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, due - time.monotonic()))
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if self._reader is not None:
            waiters.append(self._reader)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters[0].cancel()
        self._wake.clear()
        reader = self._reader
        if reader is not None and reader.done():
            self._reader = None
            self._enqueue(reader.result())  # a Redis error propagates from here

    # -- reading ------------------------------------------------------------------------------

    async def _fetch_owned(self) -> bool:
        """Read our own pending entries (after a start or reset), or claim stale ones if due."""
        cfg = self._config
        if self._recover:
            response = await self._redis.xreadgroup(
                cfg.group, self._consumer, {cfg.stream: self._recover_cursor}, count=cfg.batch
            )
            entries = [_Entry(entry_id, raw) for entry_id, raw in _stream_entries(response)]
            if entries:
                self._recover_cursor = entries[-1].id
                self._enqueue(entries)
                return True
            self._recover = False
        if time.monotonic() >= self._claim_due:
            return await self._claim() > 0
        return False

    async def _read_new(self, *, block: bool) -> list[_Entry]:
        cfg = self._config
        count = max(1, min(cfg.batch, cfg.max_held - len(self._held)))
        response = await self._redis.xreadgroup(
            cfg.group,
            self._consumer,
            {cfg.stream: ">"},
            count=count,
            block=cfg.block_ms if block else None,
        )
        return [_Entry(entry_id, raw) for entry_id, raw in _stream_entries(response)]

    async def _claim(self) -> int:
        """One XAUTOCLAIM step: entries idle in crashed consumers join our lanes."""
        cfg = self._config
        response = await self._redis.xautoclaim(
            cfg.stream,
            cfg.group,
            self._consumer,
            min_idle_time=cfg.claim_idle_ms,
            start_id=self._claim_start,
            count=cfg.batch,
        )
        self._claim_start = _text(response[0])
        if self._claim_start == "0-0":
            self._claim_due = time.monotonic() + self._claim_period
        claimed = [_Entry(*_pair(entry)) for entry in response[1] if entry]
        deleted = [_text(entry_id) for entry_id in response[2]] if len(response) > 2 else []
        if deleted:
            logger.warning(
                "relay %s: %d pending entries of %s were deleted from the stream before delivery",
                self._consumer,
                len(deleted),
                cfg.stream,
            )
        fresh = [entry for entry in claimed if entry.id not in self._held]
        if fresh:
            self._stats["reclaimed"] += len(fresh)
            logger.info(
                "relay %s reclaimed %d entries of %s idle for over %d ms",
                self._consumer,
                len(fresh),
                cfg.stream,
                cfg.claim_idle_ms,
            )
        return self._enqueue(fresh)

    def _enqueue(self, entries: list[_Entry]) -> int:
        for entry in entries:
            if entry.id in self._held:
                continue
            self._held[entry.id] = entry
            try:
                key = self._lane_key(entry.fields()) if entry.raw else entry.id
            except Exception:  # a malformed entry: alone in its lane (the handler will judge)
                key = entry.id
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(key)
            lane.entries.append(entry)
            if not lane.busy and not lane.queued and lane.retry_at <= time.monotonic():
                lane.queued = True
                self._ready.append(lane)
        return len(entries)

    # -- delivering ---------------------------------------------------------------------------

    def _outage(self) -> bool:
        """Several attempts failed transiently and none succeeded since: the receiver is down."""
        return self._transient_streak >= _GATE_AFTER

    def _dispatch(self) -> None:
        """Start attempts for ready lanes, up to ``concurrency``.

        During an outage, one lane at a time probes the receiver once the pause is over; its
        first success ends the outage and every lane resumes.
        """
        now = time.monotonic()
        while self._waiting and self._waiting[0][0] <= now:
            lane = heapq.heappop(self._waiting)[2]
            if not lane.busy and not lane.queued and lane.entries:
                lane.queued = True
                self._ready.append(lane)
        if now < self._gate_until:
            return
        limit = 1 if self._outage() else self._config.concurrency
        while self._ready and len(self._tasks) < limit:
            lane = self._ready.popleft()
            lane.queued = False
            if lane.busy or not lane.entries:
                continue
            lane.busy = True
            task = asyncio.create_task(self._work(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_due(self) -> float | None:
        """When :meth:`_dispatch` can next start an attempt; None if only a settling one tells."""
        limit = 1 if self._outage() else self._config.concurrency
        if len(self._tasks) >= limit:
            return None
        if self._ready:
            due = time.monotonic()
        elif self._waiting:
            due = self._waiting[0][0]
        else:
            return None
        return max(due, self._gate_until)

    async def _work(self, lane: _Lane) -> None:
        """Deliver the head of ``lane`` (and up to a burst after it) in order."""
        try:
            for _ in range(_LANE_BURST):
                if not lane.entries or time.monotonic() < self._gate_until:
                    break
                delay = await self._attempt_lane(lane)
                if delay is not None:
                    lane.failures += 1
                    lane.retry_at = time.monotonic() + delay
                    self._seq += 1
                    heapq.heappush(self._waiting, (lane.retry_at, self._seq, lane))
                    return
                lane.failures = 0
                lane.retry_at = 0.0
                self._wake.set()  # acknowledge what settled without waiting for the burst
        finally:
            lane.busy = False
            if not lane.entries:
                if self._lanes.get(lane.key) is lane:
                    del self._lanes[lane.key]
            elif lane.retry_at <= time.monotonic() and not lane.queued:
                lane.queued = True
                self._ready.append(lane)
            self._wake.set()

    async def _attempt_lane(self, lane: _Lane) -> float | None:
        """Deliver the head of ``lane`` (a batch of it, when possible); settled ones leave it."""
        head = lane.entries[0]
        batch: list[_Entry] = []
        if self._batch_handler is not None and not lane.solo and not self._attempts.get(head.id):
            for entry in lane.entries:
                if not entry.raw or len(batch) >= self._config.max_batch:
                    break
                batch.append(entry)
        if len(batch) < 2:
            delay = await self._attempt(head, lane.failures + 1)
            if delay is None:
                lane.entries.popleft()
                lane.solo = False
            return delay
        return await self._attempt_batch(lane, batch)

    async def _attempt_batch(self, lane: _Lane, batch: list[_Entry]) -> float | None:
        cfg = self._config
        assert self._batch_handler is not None
        timeout = asyncio.timeout(cfg.handler_timeout)
        try:
            async with timeout:
                outcomes = await self._batch_handler([(e.id, e.fields()) for e in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except TransientDeliveryError as exc:
            return self._transient(batch[0], exc, lane.failures + 1)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timeout.expired():
                reason = f"batch handler still running after {cfg.handler_timeout:g}s"
            else:
                reason = f"unexpected error: {exc!r}"
            lane.solo = True
            self._stats["retried"] += 1
            delay = self._backoff(1)
            logger.error(
                "relay %s: a batch of %d entries from %s failed unexpectedly (%s); "
                "retrying them one at a time in %.2fs",
                self._consumer,
                len(batch),
                cfg.stream,
                reason,
                delay,
            )
            return delay
        self._transient_streak = 0
        for entry, outcome in zip(batch, outcomes, strict=True):
            lane.entries.popleft()
            if outcome is None:
                self._settle(entry.id)
                self._acks.append(entry.id)
            else:
                self._dead_letter(entry, "permanent", f"permanent failure: {outcome}", 1)
        return None

    async def _attempt(self, entry: _Entry, failures: int = 1) -> float | None:
        """One attempt; None once the entry is settled, else the delay before the next one."""
        cfg = self._config
        if not entry.raw:
            logger.warning(
                "relay %s: entry %s of %s was deleted before delivery; acknowledging it",
                self._consumer,
                entry.id,
                cfg.stream,
            )
            self._settle(entry.id)
            self._acks.append(entry.id)
            return None
        attempts = self._attempts.get(entry.id, 0) + 1
        timeout = asyncio.timeout(cfg.handler_timeout)
        try:
            async with timeout:
                await self._handler(entry.id, entry.fields())
        except PermanentDeliveryError as exc:
            self._dead_letter(entry, "permanent", f"permanent failure: {exc}", attempts)
            return None
        except TransientDeliveryError as exc:
            return self._transient(entry, exc, failures)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timeout.expired():
                reason = f"handler still running after {cfg.handler_timeout:g}s"
            else:
                reason = f"unexpected error: {exc!r}"
            if attempts >= cfg.max_attempts:
                self._dead_letter(entry, "unexpected", reason, attempts)
                return None
            self._attempts[entry.id] = attempts
            self._stats["retried"] += 1
            delay = self._backoff(attempts)
            logger.error(
                "relay %s: delivery of %s from %s failed unexpectedly "
                "(attempt %d/%d), retrying in %.2fs: %s",
                self._consumer,
                entry.id,
                cfg.stream,
                attempts,
                cfg.max_attempts,
                delay,
                reason,
            )
            return delay
        self._transient_streak = 0
        self._settle(entry.id)
        self._acks.append(entry.id)
        return None

    def _transient(self, entry: _Entry, exc: TransientDeliveryError, failures: int) -> float:
        """Count a transient failure (``failures``-th in a row of its lane); the retry delay."""
        self._stats["retried"] += 1
        self._transient_streak += 1
        delay = self._backoff(max(failures, self._transient_streak))
        if self._transient_streak >= _GATE_AFTER:
            # Several attempts failed and none succeeded since: the receiver looks down.
            # Pause every lane instead of letting each one probe it.
            self._gate_until = max(self._gate_until, time.monotonic() + delay)
        streak = self._transient_streak
        level = logging.WARNING if streak == 1 or streak % 20 == 0 else logging.DEBUG
        logger.log(
            level,
            "relay %s: delivery of %s from %s failed transiently (%d in a row), "
            "retrying in %.2fs: %s",
            self._consumer,
            entry.id,
            self._config.stream,
            streak,
            delay,
            exc,
        )
        return delay

    def _settle(self, entry_id: str) -> None:
        self._held.pop(entry_id, None)
        self._attempts.pop(entry_id, None)

    def _dead_letter(self, entry: _Entry, outcome: str, reason: str, attempts: int) -> None:
        self._settle(entry.id)
        self._dead.append(_DeadLetter(entry, outcome, reason, attempts))

    async def _flush(self) -> int:
        """Dead-letter, then XACK, what was settled since the last flush: one round trip.

        XADD to the dead-letter stream precedes the XACK, so a crash in between leaves a
        duplicate dead letter (same ``dead_letter.id``), never a lost entry.
        """
        acks, dead = self._acks, self._dead
        if not acks and not dead:
            return 0
        self._acks, self._dead = [], []
        cfg = self._config
        now_ms = str(int(time.time() * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            for letter in dead:
                fields: dict[FieldT, EncodableT] = {
                    _text(k): v for k, v in letter.entry.raw.items()
                }
                fields[DEAD_LETTER_ID_FIELD] = letter.entry.id
                fields[DEAD_LETTER_REASON_FIELD] = letter.reason
                fields[DEAD_LETTER_ATTEMPTS_FIELD] = str(letter.attempts)
                fields[DEAD_LETTER_CONSUMER_FIELD] = self._consumer
                fields[DEAD_LETTER_OUTCOME_FIELD] = letter.outcome
                fields[DEAD_LETTER_AT_FIELD] = now_ms
                pipe.xadd(cfg.dead_letter_stream, fields, maxlen=cfg.maxlen, approximate=True)
            if dead:
                pipe.xack(cfg.stream, cfg.group, *(letter.entry.id for letter in dead))
            if acks:
                pipe.xack(cfg.stream, cfg.group, *acks)
            results = await pipe.execute()
        if acks:
            delivered = int(results[-1])
            self._stats["delivered"] += delivered
            self._stats["already_acked"] += len(acks) - delivered
        for letter in dead:
            self._stats["dead_lettered"] += 1
            logger.error(
                "relay %s: dead-lettered entry %s of %s to %s after %d attempt(s): %s",
                self._consumer,
                letter.entry.id,
                cfg.stream,
                cfg.dead_letter_stream,
                letter.attempts,
                letter.reason,
            )
        return len(acks) + len(dead)

    async def _touch(self) -> None:
        """Reset the idle time of held entries so that no other relay reclaims them."""
        now = time.monotonic()
        if now < self._touch_due:
            return
        self._touch_due = now + self._touch_period
        ids: list[Any] = list(self._held)
        cfg = self._config
        for start in range(0, len(ids), _TOUCH_CHUNK):
            await self._redis.xclaim(
                cfg.stream,
                cfg.group,
                self._consumer,
                0,
                ids[start : start + _TOUCH_CHUNK],
                justid=True,
            )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: a random delay in [d/2, d], d = initial * 2^(n-1)."""
        cfg = self._config
        ceiling = min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** min(attempt - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)

    # -- trimming -----------------------------------------------------------------------------

    async def _maybe_trim(self, *, force: bool) -> None:
        """Once the stream is longer than ``maxlen``, drop acknowledged history (XTRIM MINID ~).

        Entries below the oldest pending entry, or up to the group's last-delivered id if
        nothing is pending, are acknowledged; the two are read in one MULTI so an entry
        delivered concurrently cannot be missed. Skipped if the stream has other groups.
        At most once a second unless ``force``.
        """
        now = time.monotonic()
        if now < self._trim_due and not force:
            return
        self._trim_due = now + _TRIM_INTERVAL_S
        cfg = self._config
        if await self._redis.xlen(cfg.stream) <= cfg.maxlen:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xinfo_groups(cfg.stream)
            pipe.xpending(cfg.stream, cfg.group)
            groups, summary = await pipe.execute()
        if len(groups) != 1:
            logger.debug("not trimming %s: it has %d consumer groups", cfg.stream, len(groups))
            return
        boundary = summary["min"] if summary["pending"] else groups[0]["last-delivered-id"]
        if boundary is None or _text(boundary) == "0-0":
            return
        removed = await self._redis.xtrim(cfg.stream, minid=_text(boundary), approximate=True)
        logger.debug("trimmed %d acknowledged entries from %s", removed, cfg.stream)
