"""Settling what the relay delivered or gave up on: XACK, and XADD to the dead-letter stream."""

from __future__ import annotations

import logging
import time

from services.common.delivery.config import OutboxConfig
from services.common.delivery.dead_lettering import DeadLetter
from services.common.delivery.stats import RelayStats
from services.common.logging import request_id_scope
from services.common.redis import RedisClient
from services.common.tracing import event_context

__all__ = ["Settlement"]

logger = logging.getLogger(__name__)


class Settlement:
    """Collects the entries settled since the last flush and settles them in one round trip."""

    def __init__(
        self, redis: RedisClient, config: OutboxConfig, consumer: str, stats: RelayStats
    ) -> None:
        self._redis = redis
        self._config = config
        self._consumer = consumer
        self._stats = stats
        self._acks: list[str] = []  # delivered, to XACK
        self._dead: list[DeadLetter] = []  # to dead-letter, then XACK

    def ack(self, entry_id: str) -> None:
        self._acks.append(entry_id)

    def dead_letter(self, letter: DeadLetter) -> None:
        self._dead.append(letter)

    def clear(self) -> None:
        """Forget what was not flushed (it stays pending in Redis, and will be read again)."""
        self._acks, self._dead = [], []

    async def flush(self) -> int:
        """Dead-letter, then XACK, what was settled since the last flush: one round trip.

        XADD to the dead-letter stream precedes the XACK, so a crash in between leaves a
        duplicate dead letter (same ``dead_letter.id``), never a lost entry.
        """
        acks, dead = self._acks, self._dead
        if not acks and not dead:
            return 0
        self.clear()
        cfg = self._config
        now_ms = str(int(time.time() * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            for letter in dead:
                fields = letter.fields(self._consumer, now_ms)
                pipe.xadd(cfg.dead_letter_stream, fields, maxlen=cfg.maxlen, approximate=True)
            if dead:
                pipe.xack(cfg.stream, cfg.group, *(letter.entry.id for letter in dead))
            if acks:
                pipe.xack(cfg.stream, cfg.group, *acks)
            results = await pipe.execute()
        if acks:
            delivered = int(results[-1])
            self._stats.delivered += delivered
            self._stats.already_acked += len(acks) - delivered
        for letter in dead:
            self._log_dead_letter(letter)
        return len(acks) + len(dead)

    def _log_dead_letter(self, letter: DeadLetter) -> None:
        cfg = self._config
        self._stats.dead_lettered += 1
        # The line carries the trace id of the request that wrote the event (tracing on).
        with request_id_scope(letter.entry.id), event_context(letter.entry.fields()):
            logger.error(
                "relay %s: dead-lettered entry %s of %s to %s after %d attempt(s): %s",
                self._consumer,
                letter.entry.id,
                cfg.stream,
                cfg.dead_letter_stream,
                letter.attempts,
                letter.reason,
            )
