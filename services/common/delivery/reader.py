"""Reading and claiming: how a relay gets the entries it delivers, and keeps them its own.

Order of work: its own pending entries first (from id 0, after a start or a reset), then stale
entries of other consumers (XAUTOCLAIM every ``claim_idle_ms / 2``), then new ones (XREADGROUP
``>``). Entries it holds are touched (XCLAIM JUSTID) every ``claim_idle_ms / 3`` so that no
other relay reclaims them while they wait for a retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any, Final

from redis.exceptions import ResponseError

from services.common.delivery.config import OutboxConfig
from services.common.delivery.entries import Entry, pair, stream_entries, text
from services.common.delivery.stats import RelayStats
from services.common.redis import RedisClient

__all__ = ["Reader"]

logger = logging.getLogger(__name__)

_TOUCH_CHUNK: Final = 500  # entry ids per XCLAIM JUSTID (keeping held entries from idling)


class Reader:
    """The consumer-group side of one relay: XREADGROUP, XAUTOCLAIM and XCLAIM."""

    def __init__(
        self, redis: RedisClient, config: OutboxConfig, consumer: str, stats: RelayStats
    ) -> None:
        self._redis = redis
        self._config = config
        self._consumer = consumer
        self._stats = stats
        # How often held entries are touched (their idle time reset) and stale ones looked for.
        self.touch_period = config.claim_idle_ms / 3000
        self._claim_period = max(config.claim_idle_ms / 2, config.block_ms) / 1000
        self.group_ready = False
        self._claim_due = 0.0
        self._claim_start = "0-0"
        self._touch_due = 0.0
        self._recover = True  # our own pending entries (from id 0) are read before new ones
        self._recover_cursor = "0-0"
        self.behind = False  # the last read of new entries filled its COUNT: more are waiting

    async def ensure_group(self) -> None:
        """XGROUP CREATE the consumer group at id 0 (so no earlier entry is missed), MKSTREAM."""
        cfg = self._config
        try:
            await self._redis.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.group_ready = True

    def recover(self) -> None:
        """Read our own pending entries again from id 0 before new ones (after a reset)."""
        self._recover = True
        self._recover_cursor = "0-0"
        self.behind = False

    def claim_now(self) -> None:
        """Look for stale entries of other consumers on the next :meth:`owned`."""
        self._claim_due = 0.0

    def owned_due(self) -> bool:
        """Whether :meth:`owned` would read our pending entries or claim stale ones now."""
        return self._recover or time.monotonic() >= self._claim_due

    async def owned(self, held: Collection[str]) -> list[Entry]:
        """Our own pending entries (after a start or reset), or stale ones claimed if due.

        Entries already ``held`` are left out of the claimed ones.
        """
        if self._recover:
            entries = await self._read_pending()
            if entries:
                return entries
            self._recover = False
        if time.monotonic() >= self._claim_due:
            return await self._claim(held)
        return []

    async def _read_pending(self) -> list[Entry]:
        cfg = self._config
        response = await self._redis.xreadgroup(
            cfg.group, self._consumer, {cfg.stream: self._recover_cursor}, count=cfg.batch
        )
        entries = stream_entries(response)
        if entries:
            self._recover_cursor = entries[-1].id
        return entries

    async def read_new(self, *, block: bool, held: int) -> list[Entry]:
        """New entries (XREADGROUP ``>``), as many as fit next to the ``held`` ones."""
        cfg = self._config
        count = max(1, min(cfg.batch, cfg.max_held - held))
        response = await self._redis.xreadgroup(
            cfg.group,
            self._consumer,
            {cfg.stream: ">"},
            count=count,
            block=cfg.block_ms if block else None,
        )
        entries = stream_entries(response)
        self.behind = len(entries) >= count
        return entries

    async def _claim(self, held: Collection[str]) -> list[Entry]:
        """One XAUTOCLAIM step: entries idle in crashed consumers, to join our lanes."""
        cfg = self._config
        response = await self._redis.xautoclaim(
            cfg.stream,
            cfg.group,
            self._consumer,
            min_idle_time=cfg.claim_idle_ms,
            start_id=self._claim_start,
            count=cfg.batch,
        )
        self._claim_start = text(response[0])
        if self._claim_start == "0-0":
            self._claim_due = time.monotonic() + self._claim_period
        claimed = [pair(entry) for entry in response[1] if entry]
        deleted = [text(entry_id) for entry_id in response[2]] if len(response) > 2 else []
        if deleted:
            logger.warning(
                "relay %s: %d pending entries of %s were deleted from the stream before delivery",
                self._consumer,
                len(deleted),
                cfg.stream,
            )
        fresh = [entry for entry in claimed if entry.id not in held]
        if fresh:
            self._stats.reclaimed += len(fresh)
            logger.info(
                "relay %s reclaimed %d entries of %s idle for over %d ms",
                self._consumer,
                len(fresh),
                cfg.stream,
                cfg.claim_idle_ms,
            )
        return fresh

    async def touch(self, held: Collection[str]) -> None:
        """Reset the idle time of ``held`` entries so that no other relay reclaims them."""
        now = time.monotonic()
        if now < self._touch_due:
            return
        self._touch_due = now + self.touch_period
        ids: list[Any] = list(held)
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
