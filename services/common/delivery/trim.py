"""Trimming: dropping a stream's acknowledged history once it is longer than ``maxlen``."""

from __future__ import annotations

import logging
import time
from typing import Final

from services.common.delivery.config import OutboxConfig
from services.common.delivery.entries import text
from services.common.redis import RedisClient

__all__ = ["Trimmer"]

logger = logging.getLogger(__name__)

_TRIM_INTERVAL_S: Final = 1.0


class Trimmer:
    def __init__(self, redis: RedisClient, config: OutboxConfig) -> None:
        self._redis = redis
        self._config = config
        self._due = 0.0

    async def maybe_trim(self, *, force: bool) -> None:
        """Once the stream is longer than ``maxlen``, drop acknowledged history (XTRIM MINID ~).

        Entries below the oldest pending entry, or up to the group's last-delivered id if
        nothing is pending, are acknowledged; the two are read in one MULTI so an entry
        delivered concurrently cannot be missed. Skipped if the stream has other groups.
        At most once a second unless ``force``.
        """
        now = time.monotonic()
        if now < self._due and not force:
            return
        self._due = now + _TRIM_INTERVAL_S
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
        if boundary is None or text(boundary) == "0-0":
            return
        removed = await self._redis.xtrim(cfg.stream, minid=text(boundary), approximate=True)
        logger.debug("trimmed %d acknowledged entries from %s", removed, cfg.stream)
