"""The dead letters of the cluster layout's bucket outboxes, as one list for the admin RPCs.

Each bucket stream ``m:outbox:{mb<k>}`` has its own dead-letter stream in its slot
(services.message.cluster_keys); the operator sees them merged, oldest first, and replays or
drops them by id. A dead-letter id is a stream entry id: should two buckets hold the same one
(two masters dead-lettering in the same millisecond), a replay or drop of that id acts on both,
and a page that ends on it continues after it in every bucket.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence

from services.common.dead_letters import (
    DeadLetterPage,
    DeadLetters,
    Outcome,
    _dead_letter,
    _decode_token,
    _encode_token,
    _validated_ids,
)
from services.common.delivery import OutboxConfig
from services.common.domain import InvalidArgument
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from services.common.redis import RedisClient

__all__ = ["BucketDeadLetters"]


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class BucketDeadLetters(DeadLetters):
    """DeadLetters over several outboxes (the first one's names stand for all of them)."""

    def __init__(self, redis_client: RedisClient, outboxes: Sequence[OutboxConfig]) -> None:
        if not outboxes:
            raise ValueError("at least one outbox")
        super().__init__(redis_client, outboxes[0])
        self.buckets = [DeadLetters(redis_client, outbox) for outbox in outboxes]

    async def page(self, page_size: int, page_token: str) -> DeadLetterPage:
        size = page_size or DEFAULT_PAGE_SIZE
        if size < 0 or size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}"
            )
        start = f"({_decode_token(page_token)}" if page_token else "-"
        streams = [bucket.dead_letter_stream for bucket in self.buckets]
        ranges = await asyncio.gather(
            *(self._redis.xrange(stream, start, "+", count=size + 1) for stream in streams)
        )
        lengths = await asyncio.gather(*(self._redis.xlen(stream) for stream in streams))
        # Ordered by entry id, then bucket: equal ids never compare the entries themselves.
        merged = heapq.merge(
            *(
                ((_order(str(entry_id)), bucket, str(entry_id), raw) for entry_id, raw in r or [])
                for bucket, r in enumerate(ranges)
            )
        )
        entries = [(entry_id, raw) for _, _, entry_id, raw in merged][: size + 1]
        page = [_dead_letter(entry_id, raw) for entry_id, raw in entries[:size]]
        token = _encode_token(page[-1].id) if len(entries) > size and page else ""
        return DeadLetterPage(page, token, sum(int(n) for n in lengths))

    async def replay(self, ids: Sequence[str], everything: bool = False) -> Outcome:
        _validated_ids(ids, everything)
        outcomes = await asyncio.gather(*(b.replay(ids, everything) for b in self.buckets))
        return _merged(ids, everything, outcomes)

    async def drop(self, ids: Sequence[str], everything: bool = False) -> Outcome:
        _validated_ids(ids, everything)
        outcomes = await asyncio.gather(*(b.drop(ids, everything) for b in self.buckets))
        return _merged(ids, everything, outcomes)


def _merged(ids: Sequence[str], everything: bool, outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome over every bucket: an id is missing if no bucket had it."""
    count = sum(outcome.count for outcome in outcomes)
    if everything:
        return Outcome(count, [])
    missing = set.intersection(*(set(outcome.not_found) for outcome in outcomes))
    return Outcome(count, [entry_id for entry_id in dict.fromkeys(ids) if entry_id in missing])
