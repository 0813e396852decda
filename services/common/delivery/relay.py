"""The relay loop: reads an outbox stream, dispatches lanes to attempts, settles, repeats.

:class:`Relay` ties the parts together: :class:`~.reader.Reader` (reading and claiming),
:class:`~.lanes.Lanes` (per-receiver lanes), :class:`~.attempts.Attempts` (one attempt and
its outcome), :class:`~.policy.RetryPolicy` (backoff and the outage gate),
:class:`~.settlement.Settlement` (XACK and dead letters) and :class:`~.trim.Trimmer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.delivery.attempts import Attempts
from services.common.delivery.config import OutboxConfig
from services.common.delivery.entries import Entry
from services.common.delivery.gathering import Gathering
from services.common.delivery.handlers import BatchHandler, Handler, LaneKey, single_lane
from services.common.delivery.lanes import Lane, Lanes
from services.common.delivery.metered import MeteredRelayStats
from services.common.delivery.policy import RetryPolicy, backoff
from services.common.delivery.reader import Reader
from services.common.delivery.settlement import Settlement
from services.common.delivery.stats import RelayStats
from services.common.delivery.trim import Trimmer
from services.common.redis import RedisClient, socket_timeout_of

__all__ = ["Relay"]

logger = logging.getLogger(__name__)

_LANE_BURST: Final = 32  # entries one lane delivers before giving its slot to another lane
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


class Relay:
    """Delivers the entries of one outbox stream to ``handler``, at least once.

    Several relays (processes) can share one consumer group; give each a *stable* consumer name
    (e.g. service + pod/host name) so a restarted relay finds its own pending entries first.
    The ``redis`` client should have automatic retries disabled (redis-py's retries re-send
    writes); this class handles connection errors itself. ``handler`` must be idempotent.
    ``lane_key`` groups entries whose order matters (default: one lane, the stream's order).
    With ``batch_handler``, the heads of the ready lanes go together in one call (up to
    ``config.max_batch`` entries, several of a lane in its order), ``config.shared_calls`` such
    calls at once, so that events arriving while a call runs gather for the next one; a call
    running longer than ``config.stall_after`` no longer counts, nor do calls while a whole
    call's worth is held or the last read filled its COUNT (a backlog: nothing to gather), up
    to ``config.max_shared_calls`` in flight. Under load (the next call would carry
    ``config.gather_after`` entries anyway) the next call also waits ``config.gather_seconds``
    after the previous one ends, gathering what arrives meanwhile. A lone
    entry still goes through ``handler``. A lane whose shared call failed goes on alone (its
    own calls, as without ``batch_handler``) until its head is settled, so a receiver whose
    items fail or hang never holds back the others.
    """

    def __init__(
        self,
        redis: RedisClient,
        config: OutboxConfig,
        consumer: str,
        handler: Handler,
        *,
        lane_key: LaneKey = single_lane,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        if not consumer:
            raise ValueError("consumer name must be non-empty")
        socket_timeout = socket_timeout_of(redis)
        if socket_timeout is not None and config.block_ms >= float(socket_timeout) * 1000:
            raise ValueError("config.block_ms must be below the client's socket_timeout")
        self._redis = redis
        self._config = config
        self._consumer = consumer
        self._handler = handler
        self._batch_handler = batch_handler
        self._lane_key = lane_key
        self._stats: RelayStats = MeteredRelayStats(config.stream)
        self._reader = Reader(redis, config, consumer, self._stats)
        self._trimmer = Trimmer(redis, config)
        self._reset_state()

    def _reset_state(self) -> None:
        """Fresh in-memory state: nothing held, no attempt running, no outage known."""
        self._lanes = Lanes(self._lane_key)
        self._policy = RetryPolicy(self._config)
        self._settlement = Settlement(self._redis, self._config, self._consumer, self._stats)
        self._attempts = Attempts(
            self._config,
            self._consumer,
            self._stats,
            handler=self._handler,
            batch_handler=self._batch_handler,
            lanes=self._lanes,
            policy=self._policy,
            settlement=self._settlement,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # Shared calls in flight: number -> (when started, entries carried).
        self._calls: dict[int, tuple[float, int]] = {}
        self._call_number = 0
        self._gathering = Gathering(self._config)
        self._may_gather = False  # only the blocking loop gathers (drain_once never waits)
        self._reading: asyncio.Task[list[Entry]] | None = None
        self._wake = asyncio.Event()
        self._reader.recover()  # our own pending entries (from id 0) are read before new ones

    def stats(self) -> dict[str, int]:
        """Counters: delivered, retried, dead_lettered, reclaimed, already_acked."""
        return self._stats.as_dict()

    async def ensure_group(self) -> None:
        """XGROUP CREATE the consumer group at id 0 (so no earlier entry is missed), MKSTREAM."""
        await self._reader.ensure_group()

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
                except Exception as exc:
                    if time.monotonic() - started > _HEALTHY_AFTER_S and _unavailable(exc):
                        failures = 0  # it had been working: a new outage starts over
                    failures += 1
                    delay = backoff(cfg, failures)
                    self._log_failure(exc, delay)
                await self._reset()
                _raise_if_cancel_swallowed()
                await asyncio.sleep(delay)
        finally:
            await self._reset()

    def _log_failure(self, exc: Exception, delay: float) -> None:
        """Log why a pass of :meth:`run` ended (``delay``: until the next one)."""
        where = (self._consumer, self._config.stream)
        if _unavailable(exc):
            logger.warning(
                "relay %s on %s: Redis unavailable (%s); retrying in %.2fs", *where, exc, delay
            )
        elif isinstance(exc, ResponseError):
            self._reader.group_ready = False  # NOGROUP, or the stream was deleted: re-create
            logger.warning("relay %s on %s: Redis error %s; retrying in %.2fs", *where, exc, delay)
        else:
            logger.exception("relay %s on %s: unexpected error; retrying in %.2fs", *where, delay)

    async def drain_once(self) -> int:
        """Process what is available now (own pending, stale ones, new ones) without blocking.

        Waits out the earliest scheduled retry first if nothing is ready. Returns once every
        entry read is settled or waiting for a retry, with the number of entries acknowledged
        (delivered or dead-lettered) by this call. Redis errors propagate.
        """
        if not self._lanes.has_ready() and not self._tasks and self._lanes.has_waiting():
            due = self._next_due()
            if due is not None:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        self._reader.claim_now()
        try:
            acked = await self._serve(block=False)
        except BaseException:
            await self._reset()
            raise
        if acked:
            await self._trimmer.maybe_trim(force=True)
        return acked

    async def _reset(self) -> None:
        """Forget everything held in memory (it stays pending in Redis) and stop the attempts."""
        tasks = [*self._tasks, *([self._reading] if self._reading else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._reset_state()

    # -- the scheduling loop ------------------------------------------------------------------

    async def _serve(self, *, block: bool) -> int:
        """Read, dispatch and settle. With ``block``, forever; else until nothing is runnable."""
        if not self._reader.group_ready:
            await self._reader.ensure_group()
            self._reader.recover()
        acked = 0
        self._may_gather = block
        while True:
            _raise_if_cancel_swallowed()
            self._dispatch()
            if block and not self._reader.owned_due():
                self._start_reading()  # before the XACK: both round trips at once
            acked += await self._settlement.flush()
            await self._reader.touch(self._lanes.held)
            if block:
                await self._trimmer.maybe_trim(force=False)
            if len(self._lanes.held) < self._config.max_held and await self._fetch_owned():
                continue
            if not block:
                if len(self._lanes.held) < self._config.max_held and await self._fetch_new():
                    continue
                if not self._tasks and not self._runnable():
                    return acked + await self._settlement.flush()
            else:
                self._start_reading()
            await self._wait()

    def _start_reading(self) -> None:
        """Start the next blocking XREADGROUP, unless one runs or it must wait.

        While every shared call runs, new entries wait in Redis: the next read, once one ends,
        takes all that arrived in one XREADGROUP.
        """
        if (
            self._reading is None
            and len(self._lanes.held) < self._config.max_held
            and not self._saturated()
        ):
            self._reading = asyncio.create_task(self._read_new(block=True))

    async def _fetch_owned(self) -> bool:
        """Our own pending entries, or stale ones claimed, joined our lanes."""
        entries = await self._reader.owned(self._lanes.held)
        if entries:
            self._lanes.enqueue(entries)
            return True
        return False

    async def _fetch_new(self) -> bool:
        """New entries (without blocking) joined our lanes."""
        return self._lanes.enqueue(await self._read_new(block=False)) > 0

    async def _read_new(self, *, block: bool) -> list[Entry]:
        return await self._reader.read_new(block=block, held=len(self._lanes.held))

    def _runnable(self) -> bool:
        due = self._next_due()
        return due is not None and due <= time.monotonic()

    async def _wait(self) -> None:
        """Until an attempt settles, new entries arrive or the next retry falls due."""
        if self._wake.is_set():
            self._wake.clear()
            return
        timeout = self._reader.touch_period
        now = time.monotonic()
        due = self._next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, due - now))
        stall = self._next_stall(now)
        if stall is not None:
            timeout = min(timeout, max(0.0, stall - now))
        if self._gathering.until:
            timeout = min(timeout, max(0.0, self._gathering.until - now))
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if self._reading is not None:
            waiters.append(self._reading)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters[0].cancel()
        self._wake.clear()
        reading = self._reading
        if reading is not None and reading.done():
            self._reading = None
            self._lanes.enqueue(reading.result())  # a Redis error propagates from here

    # -- delivering ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start attempts for ready lanes, up to ``concurrency``.

        During an outage, one lane at a time probes the receiver once the pause is over; its
        first success ends the outage and every lane resumes.
        """
        now = time.monotonic()
        self._lanes.promote_due(now)
        if self._policy.gated(now):
            return
        limit = self._policy.limit()
        while len(self._tasks) < limit:
            if self._saturated() or self._waiting_to_gather():
                return
            sharing = self._sharing()
            lane = self._lanes.take()
            if lane is None:
                return
            size = self._attempts.shareable(lane, self._config.max_batch) if sharing else 0
            if not size:
                self._start(self._work(lane))
                continue
            group = self._group(lane, size, limit)
            self._call_number += 1
            self._calls[self._call_number] = (time.monotonic(), sum(n for _, n in group))
            self._start(self._share(self._call_number, group))

    def _group(self, lane: Lane, size: int, limit: int) -> list[tuple[Lane, int]]:
        """``lane`` and the heads of other ready lanes, for one shared call (busy, all)."""
        group = [(lane, size)]
        room = self._config.max_batch - size
        while room > 0:
            other = self._lanes.take()
            if other is None:
                break
            size = self._attempts.shareable(other, room)
            if size:
                group.append((other, size))
                room -= size
            elif len(self._tasks) + 1 < limit:  # a lane going alone, next to the group
                self._start(self._work(other))
            else:
                self._lanes.put_back(other)
                break
        return group

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sharing(self) -> bool:
        """Lanes share batch calls (there is a batch handler and the receiver is not down)."""
        return self._batch_handler is not None and not self._policy.outage()

    def _saturated(self) -> bool:
        """Every shared call is in flight: ready lanes (and new entries, still in Redis) wait
        for one of them to end, or to run ``stall_after`` (then it no longer counts), unless
        a whole call's worth is already held (a backlog: nothing to gather), up to
        ``max_shared_calls`` in flight."""
        if not self._calls or not self._sharing():
            return False
        cfg = self._config
        if len(self._calls) >= cfg.max_shared_calls:
            return True
        if self._reader.behind:  # the last read filled its COUNT: more are waiting
            return False
        carried = sum(size for _, size in self._calls.values())
        if len(self._lanes.held) - carried >= cfg.max_batch:
            return False
        since = time.monotonic() - cfg.stall_after
        running = sum(1 for started, _ in self._calls.values() if started > since)
        return running >= cfg.shared_calls

    def _waiting_to_gather(self) -> bool:
        """The next shared call waits, gathering (services.common.delivery.gathering)."""
        return self._gathering.waiting(
            held=len(self._lanes.held), behind=self._reader.behind, sharing=self._sharing()
        )

    def _next_stall(self, now: float) -> float | None:
        """When a shared call in flight will have stalled, if that frees a slot."""
        if len(self._calls) >= self._config.max_shared_calls or not self._saturated():
            return None
        since = now - self._config.stall_after
        running = [started for started, _ in self._calls.values() if started > since]
        return min(running) + self._config.stall_after if running else None

    def _next_due(self) -> float | None:
        """When :meth:`_dispatch` can next start an attempt; None if only a settling one tells."""
        if (
            len(self._tasks) >= self._policy.limit()
            or self._saturated()
            or self._waiting_to_gather()
        ):
            return None
        due = self._lanes.next_due()
        return None if due is None else max(due, self._policy.gate_until)

    async def _work(self, lane: Lane) -> None:
        """Deliver the head of ``lane`` (and up to a burst after it) in order."""
        try:
            for _ in range(_LANE_BURST):
                if not lane.entries or self._policy.gated(time.monotonic()):
                    break
                delay = await self._attempts.head(lane)
                if delay is not None:
                    self._lanes.retry_later(lane, delay)
                    return
                self._lanes.succeeded(lane)
                self._wake.set()  # acknowledge what settled without waiting for the burst
        finally:
            self._lanes.release(lane)
            self._wake.set()

    async def _share(self, number: int, group: list[tuple[Lane, int]]) -> None:
        """Deliver the heads of the lanes of ``group`` in one call (one lane: its own call)."""
        try:
            if len(group) == 1:
                delays = [await self._attempts.head(group[0][0])]
            else:
                delays = await self._attempts.shared(group)
            for (lane, _), delay in zip(group, delays, strict=True):
                if delay is None:
                    self._lanes.succeeded(lane)
                else:
                    lane.alone = True
                    self._lanes.retry_later(lane, delay)
        finally:
            started, carried = self._calls.pop(number)
            if self._may_gather:
                self._gathering.call_ended(started, carried)
            for lane, _ in group:
                self._lanes.release(lane)
            self._wake.set()


def _unavailable(exc: Exception) -> bool:
    """A connection-level Redis failure (as opposed to an error reply or a bug)."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)
