"""One attempt at the head of a lane: call the handler and judge its outcome.

Success settles the entry for an XACK; :class:`PermanentDeliveryError` dead-letters it at once;
:class:`TransientDeliveryError` is retried forever (see :mod:`.policy`); anything else, or a
handler still running after ``handler_timeout``, is retried and dead-lettered after
``max_attempts``. A lane with a backlog goes through ``batch_handler`` several entries at a
time; after a batch fails unexpectedly the lane goes one entry at a time, so one bad entry is
found and judged alone. The heads of several lanes can also share one ``batch_handler`` call
(:meth:`Attempts.shared`); when such a call fails, each of its lanes goes on alone (its own
calls) until its head is settled, so one receiver's failing item never holds back another's.
Log lines of an attempt carry the entry id as their request id.

With tracing on, each attempt is a CONSUMER span continuing the trace stored in its event (see
:mod:`services.common.tracing`), so the call to the receiver and what the receiver does belong
to the trace of the request that wrote the event; a batch call is a span of its own trace that
links to each event's, and each event's trace gets a span for its part in the batch, linking
back.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.common.delivery.config import OutboxConfig
from services.common.delivery.dead_lettering import DeadLetter
from services.common.delivery.entries import Entry
from services.common.delivery.handlers import (
    BatchHandler,
    Handler,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.common.delivery.lanes import Lane, Lanes
from services.common.delivery.policy import RetryPolicy
from services.common.delivery.settlement import Settlement
from services.common.delivery.stats import RelayStats
from services.common.logging import request_id_scope
from services.common.tracing import (
    batch_item_spans,
    batch_span,
    delivery_span,
    record_failure,
)

__all__ = ["Attempts"]

logger = logging.getLogger(__name__)


class Attempts:
    """Delivers lane heads through the handlers; settles or schedules what they return."""

    def __init__(
        self,
        config: OutboxConfig,
        consumer: str,
        stats: RelayStats,
        *,
        handler: Handler,
        batch_handler: BatchHandler | None,
        lanes: Lanes,
        policy: RetryPolicy,
        settlement: Settlement,
    ) -> None:
        self._config = config
        self._consumer = consumer
        self._stats = stats
        self._handler = handler
        self._batch_handler = batch_handler
        self._lanes = lanes
        self._policy = policy
        self._settlement = settlement

    async def head(self, lane: Lane) -> float | None:
        """Deliver the head of ``lane`` (a batch of it, when possible); settled ones leave it.

        None once settled, else the delay before the lane's next attempt.
        """
        with request_id_scope(lane.entries[0].id):
            return await self._lane(lane)

    async def _lane(self, lane: Lane) -> float | None:
        head = lane.entries[0]
        batch = self._batch(lane)
        if len(batch) < 2:
            delay = await self._one(head, lane.failures + 1)
            if delay is None:
                lane.entries.popleft()
                lane.solo = False
            return delay
        return await self._many(lane, batch)

    def _batch(self, lane: Lane, room: int | None = None) -> list[Entry]:
        """The entries of ``lane`` to deliver in one batch call (none: one at a time)."""
        head = lane.entries[0]
        batch: list[Entry] = []
        if self._batch_handler is None or lane.solo or self._policy.failed_attempts(head.id):
            return batch
        limit = self._config.max_batch if room is None else room
        for entry in lane.entries:
            if not entry.raw or len(batch) >= limit:
                break
            batch.append(entry)
        return batch

    def shareable(self, lane: Lane, room: int) -> int:
        """How many head entries of ``lane`` (at most ``room``) may share a call with others."""
        if lane.alone or not lane.entries:
            return 0
        return len(self._batch(lane, room))

    async def shared(self, group: list[tuple[Lane, int]]) -> list[float | None]:
        """Deliver the first ``n`` entries of each lane of ``group`` in one batch call.

        Per lane, in order: None once its entries are settled, else the delay before its next
        attempt (the call failed; the lane then goes on alone until its head is settled).
        """
        batch = [lane.entries[i] for lane, n in group for i in range(n)]
        items = [(e.id, e.fields()) for e in batch]
        with request_id_scope(batch[0].id), batch_span(self._config.stream, items):
            started = time.time_ns()
            delay = await self._shared_attempt(group, batch, items)
            failure = None if delay is None else "the batch call failed; retried"
            batch_item_spans(self._config.stream, items, started, failure)
        if delay is None:
            return [None] * len(group)
        for lane, _ in group:
            lane.alone = True
        return [delay] * len(group)

    async def _shared_attempt(
        self,
        group: list[tuple[Lane, int]],
        batch: list[Entry],
        items: list[tuple[str, dict[str, str]]],
    ) -> float | None:
        cfg = self._config
        timeout = asyncio.timeout(cfg.handler_timeout)
        try:
            outcomes = await self._call_batch(items, timeout)
        except TransientDeliveryError as exc:
            record_failure(exc)
            failures = max(lane.failures for lane, _ in group) + 1
            return self._transient(batch[0], exc, failures)
        except Exception as exc:
            record_failure(exc)
            reason = _reason(exc, timeout, "batch handler", cfg.handler_timeout)
            self._stats.retried += 1
            delay = self._policy.backoff(1)
            logger.error(
                "relay %s: a batch of %d entries of %d lanes from %s failed unexpectedly (%s); "
                "retrying each lane alone in %.2fs",
                self._consumer,
                len(batch),
                len(group),
                cfg.stream,
                reason,
                delay,
            )
            return delay
        self._policy.succeeded()
        outcome_of = iter(outcomes)
        for lane, n in group:
            for _ in range(n):
                self._settle(lane.entries.popleft(), next(outcome_of))
            lane.solo = False
        return None

    async def _many(self, lane: Lane, batch: list[Entry]) -> float | None:
        items = [(e.id, e.fields()) for e in batch]
        with batch_span(self._config.stream, items):  # its log lines carry the batch's trace
            started = time.time_ns()
            delay = await self._batch_attempt(lane, batch, items)
            failure = None if delay is None else "the batch call failed; retried"
            batch_item_spans(self._config.stream, items, started, failure)
            return delay

    async def _batch_attempt(
        self, lane: Lane, batch: list[Entry], items: list[tuple[str, dict[str, str]]]
    ) -> float | None:
        cfg = self._config
        timeout = asyncio.timeout(cfg.handler_timeout)
        try:
            outcomes = await self._call_batch(items, timeout)
        except TransientDeliveryError as exc:
            record_failure(exc)
            return self._transient(batch[0], exc, lane.failures + 1)
        except Exception as exc:
            record_failure(exc)
            reason = _reason(exc, timeout, "batch handler", cfg.handler_timeout)
            lane.solo = True
            self._stats.retried += 1
            delay = self._policy.backoff(1)
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
        self._policy.succeeded()
        for entry, outcome in zip(batch, outcomes, strict=True):
            lane.entries.popleft()
            self._settle(entry, outcome)
        return None

    async def _call_batch(
        self, items: list[tuple[str, dict[str, str]]], deadline: asyncio.Timeout
    ) -> list[PermanentDeliveryError | None]:
        """The batch handler's outcome for each of ``items`` (None: delivered; an error: refused
        for good), within ``deadline``; a reply of another length is a bug of the handler."""
        assert self._batch_handler is not None
        async with deadline:
            outcomes = await self._batch_handler(items)
        if len(outcomes) != len(items):
            raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(items)}")
        return outcomes

    def _settle(self, entry: Entry, outcome: PermanentDeliveryError | None) -> None:
        """One item of a batch call: delivered, or dead-lettered with the receiver's reason."""
        if outcome is None:
            self._delivered(entry)
        else:
            self._dead_letter(entry, "permanent", f"permanent failure: {outcome}", 1)

    async def _one(self, entry: Entry, failures: int) -> float | None:
        """One attempt; None once the entry is settled, else the delay before the next one."""
        cfg = self._config
        if not entry.raw:
            logger.warning(
                "relay %s: entry %s of %s was deleted before delivery; acknowledging it",
                self._consumer,
                entry.id,
                cfg.stream,
            )
            self._delivered(entry)
            return None
        fields = entry.fields()
        with delivery_span(cfg.stream, entry.id, fields, failures):  # and so its log lines
            return await self._attempt(entry, fields, failures)

    async def _attempt(self, entry: Entry, fields: dict[str, str], failures: int) -> float | None:
        cfg = self._config
        timeout = asyncio.timeout(cfg.handler_timeout)
        try:
            async with timeout:
                await self._handler(entry.id, fields)
        except PermanentDeliveryError as exc:
            record_failure(exc)
            attempts = self._policy.failed_attempts(entry.id) + 1
            self._dead_letter(entry, "permanent", f"permanent failure: {exc}", attempts)
            return None
        except TransientDeliveryError as exc:
            record_failure(exc)
            return self._transient(entry, exc, failures)
        except Exception as exc:
            record_failure(exc)
            return self._unexpected(entry, _reason(exc, timeout, "handler", cfg.handler_timeout))
        self._policy.succeeded()
        self._delivered(entry)
        return None

    def _unexpected(self, entry: Entry, reason: str) -> float | None:
        """Count an unexpected failure: the retry delay, or None once dead-lettered."""
        cfg = self._config
        attempts = self._policy.unexpected(entry.id)
        if self._policy.exhausted(attempts):
            self._dead_letter(entry, "unexpected", reason, attempts)
            return None
        self._stats.retried += 1
        delay = self._policy.backoff(attempts)
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

    def _transient(self, entry: Entry, exc: TransientDeliveryError, failures: int) -> float:
        """Count a transient failure (``failures``-th in a row of its lane); the retry delay."""
        self._stats.retried += 1
        delay = self._policy.transient(failures)
        streak = self._policy.transient_streak
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

    def _settled(self, entry: Entry) -> None:
        self._lanes.settle(entry.id)
        self._policy.forget(entry.id)

    def _delivered(self, entry: Entry) -> None:
        self._settled(entry)
        self._settlement.ack(entry.id)

    def _dead_letter(self, entry: Entry, outcome: str, reason: str, attempts: int) -> None:
        self._settled(entry)
        self._settlement.dead_letter(DeadLetter(entry, outcome, reason, attempts))


def _reason(exc: Exception, timeout: asyncio.Timeout, what: str, seconds: float) -> str:
    """Why an attempt failed unexpectedly: cut off after ``seconds``, or the exception."""
    if isinstance(exc, TimeoutError) and timeout.expired():
        return f"{what} still running after {seconds:g}s"
    return f"unexpected error: {exc!r}"
