"""Transactional outbox on a Redis Stream, and the relay that delivers it (at-least-once).

* Producers queue :func:`outbox_add` into the MULTI/EXEC of their business writes (or XADD from
  their Lua script, see :data:`OUTBOX_LUA`): the event is recorded iff the writes commit.
* A :class:`Relay` reads it through a consumer group and XACKs only after the handler returned;
  unacknowledged entries stay pending, are re-read by the same consumer after a restart and are
  reclaimed (XAUTOCLAIM) by other relays once idle for ``claim_idle_ms``.
* Failures are retried in order with exponential backoff and jitter; after ``max_attempts``
  deliveries, or on :class:`PermanentDeliveryError`, the entry moves to a dead-letter stream.
* Outages of Redis or of the receiver only delay delivery; trimming keeps unacknowledged entries.
* An entry may reach a handler more than once: handlers MUST be idempotent (dedupe on a business
  id carried in the event, never on the stream entry id).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio
import redis.asyncio.client
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

__all__ = [
    "DEAD_LETTER_ATTEMPTS_FIELD",
    "DEAD_LETTER_CONSUMER_FIELD",
    "DEAD_LETTER_ID_FIELD",
    "DEAD_LETTER_REASON_FIELD",
    "OUTBOX_LUA",
    "Handler",
    "OutboxConfig",
    "PermanentDeliveryError",
    "Relay",
    "outbox_add",
    "outbox_lua_args",
]

logger = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, str]], Awaitable[None]]
"""``handler(entry_id, fields)``: deliver one event; return on success, raise to retry.

Must be idempotent (the relay is at-least-once): dedupe on a business id carried in the fields
(e.g. ``message_id``), not on ``entry_id`` - a producer that retries its transaction writes a
second entry with a new id. Must bound its own run time (e.g. a gRPC deadline) well below
``claim_idle_ms``, or another relay reclaims the entry and delivers it concurrently.
"""

# Fields added to an entry when it is copied to the dead-letter stream (next to the original ones).
DEAD_LETTER_ID_FIELD: Final = "dead_letter.id"
DEAD_LETTER_REASON_FIELD: Final = "dead_letter.reason"
DEAD_LETTER_ATTEMPTS_FIELD: Final = "dead_letter.attempts"
DEAD_LETTER_CONSUMER_FIELD: Final = "dead_letter.consumer"

_TRIM_INTERVAL_S: Final = 1.0

OUTBOX_LUA: Final = """
-- Missive outbox: XADD an event from inside a Lua script, atomically with the script's writes.
-- stream_key must come from KEYS (e.g. KEYS[3]); argv[first] holds the number of field/value
-- strings that follow it, i.e. the list returned by delivery.outbox_lua_args(event).
local function outbox_xadd(stream_key, argv, first)
  local n = tonumber(argv[first])
  return redis.call('XADD', stream_key, '*', unpack(argv, first + 1, first + n))
end
"""
"""Lua snippet to paste at the top of a script that writes business data and an outbox event.

Example (the stream name travels in KEYS, the event in ARGV after the script's own arguments)::

    script = OUTBOX_LUA + '''
    redis.call('SET', KEYS[1], ARGV[1])
    outbox_xadd(KEYS[2], ARGV, 2)
    '''
    await r.eval(script, 2, "message:42", config.stream, payload, *outbox_lua_args(event))

Put the XADD last: neither MULTI nor Lua rolls back writes that ran before a failing command.
On Redis Cluster the stream key and the business keys must share a hash slot (hash tags).
"""


@dataclass(frozen=True)
class OutboxConfig:
    """One outbox stream, its relay consumer group and its dead-letter stream."""

    stream: str  # e.g. "outbox:notifications"
    group: str  # e.g. "notification-relay"
    dead_letter_stream: str  # e.g. "outbox:notifications:dead"
    max_attempts: int = 8  # deliveries before dead-lettering (a relay crash mid-entry counts)
    maxlen: int = 100_000  # above this length, acknowledged history is trimmed (approximately)
    claim_idle_ms: int = 15_000  # XAUTOCLAIM entries idle longer than this (crashed consumer)
    block_ms: int = 1_000  # XREADGROUP BLOCK; must stay below the client's socket_timeout
    batch: int = 32
    backoff_initial: float = 0.1
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if not self.stream or not self.group or not self.dead_letter_stream:
            raise ValueError("stream, group and dead_letter_stream must be non-empty")
        if self.dead_letter_stream == self.stream:
            raise ValueError("dead_letter_stream must differ from stream")
        for name in ("max_attempts", "maxlen", "claim_idle_ms", "block_ms", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")


class PermanentDeliveryError(Exception):
    """Raised by a handler when retrying can never help: the entry is dead-lettered at once."""


def _validated(event: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    if not event:
        raise ValueError("an outbox event needs at least one field")
    fields: dict[FieldT, EncodableT] = {}
    for key, value in event.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise TypeError("outbox event fields must be non-empty str keys with str values")
        fields[key] = value
    return fields


def outbox_add(
    pipe: redis.asyncio.client.Pipeline, config: OutboxConfig, event: Mapping[str, str]
) -> None:
    """Queue an XADD of ``event`` into a MULTI/EXEC pipeline (transactional outbox).

    The caller queues its business writes on the same ``pipe`` (created with
    ``transaction=True``; after ``WATCH``, call ``pipe.multi()`` first) and executes it: the event
    is stored iff the transaction commits. If EXEC is aborted (WATCH conflict, queue-time error,
    connection lost before EXEC) neither is written. Redis has no rollback for commands failing at
    run time (e.g. WRONGTYPE), so queue the outbox XADD last. No MAXLEN here: trimming on the
    producer side could drop entries not yet delivered; the relay trims acknowledged history.

    The event must carry its own idempotency key (e.g. ``message_id``) for the handlers; the
    stream entry id is not one (a retried EXEC writes a second entry).
    """
    if pipe.watching and not pipe.explicit_transaction:
        raise ValueError("pipeline is WATCHing in immediate mode: call pipe.multi() first")
    if not (pipe.is_transaction or pipe.explicit_transaction):
        raise ValueError("outbox_add needs a transactional pipeline (pipeline(transaction=True))")
    pipe.xadd(config.stream, _validated(event))


def outbox_lua_args(event: Mapping[str, str]) -> list[str]:
    """ARGV tail for :data:`OUTBOX_LUA`: the field count, then field, value, field, value..."""
    flat: list[str] = [str(2 * len(event))]
    for key, value in _validated(event).items():
        flat.extend((str(key), str(value)))
    return flat


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


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    raw: dict[Any, Any]  # as returned by redis-py (bytes or str); empty if the entry was deleted
    deliveries: int  # XPENDING delivery counter, including this delivery

    def fields(self) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.raw.items()}


def _stream_entries(response: Any) -> list[tuple[str, dict[Any, Any]]]:
    """Entries of the single stream in an XREADGROUP reply (RESP2/RESP3, legacy or not)."""
    if not response:
        return []
    items: Any = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    first = items[0] if items else None
    if isinstance(first, list) and (not first or isinstance(first[0], tuple | list)):
        items = first  # RESP3 legacy shape: {stream: [[entry, ...]]}
    out: list[tuple[str, dict[Any, Any]]] = []
    for entry_id, fields in items:
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append((_text(entry_id), dict(fields or {})))
    return out


class Relay:
    """Delivers the entries of one outbox stream to ``handler``, at least once.

    Several relays (processes) can share one consumer group; give each a *stable* consumer name
    (e.g. service + pod/host name) so a restarted relay finds its own pending entries first.
    The ``redis`` client should have automatic retries disabled (redis-py's retries re-send
    writes); this class handles connection errors itself. ``handler`` must be idempotent.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        config: OutboxConfig,
        consumer: str,
        handler: Handler,
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
        self._stats = {
            "delivered": 0,  # handler succeeded and our XACK removed the entry
            "retried": 0,  # handler failures scheduled for a retry
            "dead_lettered": 0,  # entries moved to the dead-letter stream
            "reclaimed": 0,  # entries taken over from idle consumers (XAUTOCLAIM)
            "already_acked": 0,  # handler succeeded but another relay had acked it meanwhile
        }
        # Half the claim threshold: how often to scan for stale entries, and how long an
        # in-memory batch may be worked on before it is re-read (which resets its idle time).
        self._claim_period = max(config.claim_idle_ms / 2, config.block_ms) / 1000
        self._stale_after = config.claim_idle_ms / 2000
        self._group_ready = False
        self._recover = True  # next read is our own pending entries (id 0), not new ones
        self._probe = False  # after a failure: re-read only the head entry until it succeeds
        self._retry_at = 0.0
        self._skipped: dict[str, int] = {}  # deliveries of an entry that did not run the handler
        self._claim_due = 0.0
        self._claim_start = "0-0"
        self._trim_due = 0.0

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
        Redis errors never end the loop: it logs, backs off and resumes (re-creating the group if
        Redis lost it). Cancelling leaves the entry in progress pending, for a later re-read.
        """
        cfg = self._config
        failures = 0
        logger.info("relay %s starting on %s (group %s)", self._consumer, cfg.stream, cfg.group)
        while True:
            _raise_if_cancel_swallowed()
            try:
                await self._pass(block=True, force_claim=False)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
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
                if "NOGROUP" in str(exc):
                    self._group_ready = False
                    self._skipped.clear()
                    self._claim_start = "0-0"
                    logger.warning(
                        "relay %s: group %s on %s is gone; re-creating it",
                        self._consumer,
                        cfg.group,
                        cfg.stream,
                    )
                else:
                    logger.error(
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
            else:
                if failures:
                    logger.info("relay %s on %s: Redis is back", self._consumer, cfg.stream)
                failures = 0
                continue
            self._recover = True  # the in-memory batch may be stale: re-read what we own
            _raise_if_cancel_swallowed()
            await asyncio.sleep(delay)

    async def drain_once(self) -> int:
        """Process what is available now (own pending, stale ones, new ones) without blocking.

        Waits out the backoff of a previously failed entry first; stops at the first failure
        (scheduling its retry) or when nothing is left. Returns the number of entries acked
        (delivered or dead-lettered) by this call. Redis errors propagate (``run`` handles them).
        """
        return await self._pass(block=False, force_claim=True)

    # -- one pass -----------------------------------------------------------------------------

    async def _pass(self, *, block: bool, force_claim: bool) -> int:
        if not self._group_ready:
            await self.ensure_group()
            self._recover = True
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if force_claim:
            self._claim_due = 0.0
        acked = 0
        ok = True
        while ok:
            entries = await self._fetch(block=block)
            _raise_if_cancel_swallowed()
            if not entries:
                break
            done, ok = await self._process(entries)
            acked += done
            if done:
                await self._maybe_trim(force=False)
        if acked and not block:  # drain_once leaves the stream trimmed
            await self._maybe_trim(force=True)
        return acked

    async def _fetch(self, *, block: bool) -> list[_Entry]:
        while True:
            if self._recover:
                entries = await self._read_own_pending()
                if entries:
                    return entries
                # Everything we owned is done; ids still in _skipped belong to others now.
                self._recover = False
                self._probe = False
                self._skipped.clear()
            if time.monotonic() >= self._claim_due:
                if await self._claim():
                    self._recover = True
                continue
            return await self._read_new(block=block)

    async def _read_own_pending(self) -> list[_Entry]:
        cfg = self._config
        count = 1 if self._probe else cfg.batch
        async with self._redis.pipeline(transaction=True) as pipe:
            # Same selection twice (our PEL from the start, `count` entries), atomically:
            # the entries and their delivery counters.
            pipe.xreadgroup(cfg.group, self._consumer, {cfg.stream: "0"}, count=count)
            pipe.xpending_range(cfg.stream, cfg.group, "-", "+", count, self._consumer)
            read, pending = await pipe.execute()
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [
            _Entry(entry_id, raw, deliveries.get(entry_id, 1))
            for entry_id, raw in _stream_entries(read)
        ]

    async def _read_new(self, *, block: bool) -> list[_Entry]:
        cfg = self._config
        response = await self._redis.xreadgroup(
            cfg.group,
            self._consumer,
            {cfg.stream: ">"},
            count=cfg.batch,
            block=cfg.block_ms if block else None,
        )
        return [_Entry(entry_id, raw, 1) for entry_id, raw in _stream_entries(response)]

    async def _claim(self) -> int:
        """One XAUTOCLAIM step; claimed entries are then re-read through our pending list."""
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
        claimed = [_text(entry[0]) for entry in response[1]]
        deleted = [_text(entry_id) for entry_id in response[2]] if len(response) > 2 else []
        if deleted:
            logger.warning(
                "relay %s: %d pending entries of %s were deleted from the stream before delivery",
                self._consumer,
                len(deleted),
                cfg.stream,
            )
        for entry_id in claimed:  # the claim was a delivery that will not run the handler
            self._skipped[entry_id] = self._skipped.get(entry_id, 0) + 1
        if claimed:
            self._stats["reclaimed"] += len(claimed)
            logger.info(
                "relay %s reclaimed %d entries of %s idle for over %d ms",
                self._consumer,
                len(claimed),
                cfg.stream,
                cfg.claim_idle_ms,
            )
        return len(claimed)

    # -- delivering ---------------------------------------------------------------------------

    async def _process(self, entries: list[_Entry]) -> tuple[int, bool]:
        """Deliver ``entries`` in order. Returns (acked, ok); ok is False after a failure."""
        fetched_at = time.monotonic()
        acked = 0
        for index, entry in enumerate(entries):
            if index and time.monotonic() - fetched_at > self._stale_after:
                # Slow batch: its tail may be reclaimable by now. Re-read what is still ours.
                self._give_back(entries[index:])
                return acked, True
            try:
                result = await self._deliver(entry)
            except BaseException:
                self._give_back(entries[index + 1 :])
                raise
            if result is None:
                self._give_back(entries[index + 1 :])
                return acked, False
            acked += result
        return acked, True

    def _give_back(self, entries: list[_Entry]) -> None:
        """Entries read but not attempted stay pending; remember that this delivery was free."""
        for entry in entries:
            self._skipped[entry.id] = self._skipped.get(entry.id, 0) + 1
        if entries:
            self._recover = True

    async def _deliver(self, entry: _Entry) -> int | None:
        """Deliver one entry; returns the number acked (0/1), or None if a retry is scheduled."""
        cfg = self._config
        if not entry.raw:
            logger.warning(
                "relay %s: entry %s of %s was deleted before delivery; acknowledging it",
                self._consumer,
                entry.id,
                cfg.stream,
            )
            return await self._ack(entry.id)
        attempt = max(1, entry.deliveries - self._skipped.get(entry.id, 0))
        if attempt > cfg.max_attempts:
            return await self._dead_letter(
                entry,
                attempt - 1,
                f"delivered {attempt - 1} times without acknowledgement "
                "(handler hung or relay crashed)",
            )
        try:
            await self._handler(entry.id, entry.fields())
        except PermanentDeliveryError as exc:
            return await self._dead_letter(entry, attempt, f"permanent failure: {exc!r}")
        except Exception as exc:
            if attempt >= cfg.max_attempts:
                return await self._dead_letter(entry, attempt, f"failed: {exc!r}")
            delay = self._backoff(attempt)
            self._retry_at = time.monotonic() + delay
            self._probe = True
            self._recover = True
            self._stats["retried"] += 1
            logger.warning(
                "relay %s: delivery of %s from %s failed (attempt %d/%d), retrying in %.2fs: %r",
                self._consumer,
                entry.id,
                cfg.stream,
                attempt,
                cfg.max_attempts,
                delay,
                exc,
            )
            return None
        acked = await self._ack(entry.id)
        self._stats["delivered" if acked else "already_acked"] += 1
        return acked

    async def _ack(self, entry_id: str) -> int:
        cfg = self._config
        acked = int(await self._redis.xack(cfg.stream, cfg.group, entry_id))
        self._skipped.pop(entry_id, None)
        self._probe = False  # the head entry is settled: read whole batches again
        return acked

    async def _dead_letter(self, entry: _Entry, attempts: int, reason: str) -> int:
        """Copy the entry to the dead-letter stream, then XACK it.

        Two commands, in this order, rather than one MULTI: a crash in between leaves a duplicate
        dead letter (same ``dead_letter.id``), never a lost entry, and the two streams need not
        share a Redis Cluster hash slot.
        """
        cfg = self._config
        fields: dict[FieldT, EncodableT] = {_text(k): v for k, v in entry.raw.items()}
        fields[DEAD_LETTER_ID_FIELD] = entry.id
        fields[DEAD_LETTER_REASON_FIELD] = reason
        fields[DEAD_LETTER_ATTEMPTS_FIELD] = str(attempts)
        fields[DEAD_LETTER_CONSUMER_FIELD] = self._consumer
        await self._redis.xadd(cfg.dead_letter_stream, fields, maxlen=cfg.maxlen, approximate=True)
        acked = await self._ack(entry.id)
        self._stats["dead_lettered"] += 1
        logger.error(
            "relay %s: dead-lettered entry %s of %s to %s after %d attempt(s): %s",
            self._consumer,
            entry.id,
            cfg.stream,
            cfg.dead_letter_stream,
            attempts,
            reason,
        )
        return acked

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
