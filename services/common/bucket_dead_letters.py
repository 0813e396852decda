"""The dead letters of an outbox sharded into bucket streams (the cluster layouts, see
:mod:`services.common.buckets`), behind the one set of admin RPCs.

The admin RPCs (ListDeadLetters, ReplayDeadLetters, DropDeadLetters) keep their contract: a
page lists the dead letters of every bucket merged in entry-id order (then bucket order), and
its token names the last one listed (id and bucket), so no entry is skipped or listed twice
across pages; a replay or drop by id acts on that id in whichever bucket holds it; ``all``
acts on every bucket. A replayed event goes back to its own bucket's stream. Entry ids are per
stream, so two buckets can hold the same id (two dead letters in one millisecond): a replay or
drop of that id acts on both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Sequence
from typing import Final

from services.common.dead_letters import (
    DeadLetter,
    DeadLetterPage,
    DeadLetters,
    Outcome,
    encode_token,
)
from services.common.delivery import OutboxConfig
from services.common.domain import InvalidArgument
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_TOKEN_LENGTH
from services.common.redis import RedisClient

__all__ = ["BucketDeadLetters"]

_TOKEN: Final = re.compile(r"b1:([0-9]{1,20})-([0-9]{1,20}):([0-9]{1,5})")
_MAX_SEQUENCE: Final = 2**64 - 1

Position = tuple[int, int, int]
"""Where an entry sorts: milliseconds and sequence of its id, then its bucket."""


def _position(letter: DeadLetter, index: int) -> Position:
    milliseconds, _, sequence = letter.id.partition("-")
    return int(milliseconds), int(sequence), index


def _encode(position: Position) -> str:
    milliseconds, sequence, index = position
    raw = f"b1:{milliseconds}-{sequence}:{index}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str, buckets: int) -> Position:
    malformed = InvalidArgument("page_token is malformed")
    if len(token) > MAX_TOKEN_LENGTH:
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise malformed from exc
    match = _TOKEN.fullmatch(raw)
    if match is None:
        raise malformed
    milliseconds, sequence, index = (int(part) for part in match.groups())
    if sequence > _MAX_SEQUENCE or milliseconds > _MAX_SEQUENCE or index >= buckets:
        raise malformed
    return milliseconds, sequence, index


def _bucket_token(after: Position | None, index: int) -> str:
    """The page token of bucket ``index``'s own stream that starts just after ``after``."""
    if after is None:
        return ""
    milliseconds, sequence, last = after
    if index <= last:  # this bucket's entry at that id (if any) was listed already
        return encode_token(f"{milliseconds}-{sequence}")
    # A later bucket still lists its entry at that very id: start just before it.
    if sequence > 0:
        return encode_token(f"{milliseconds}-{sequence - 1}")
    if milliseconds > 0:
        return encode_token(f"{milliseconds - 1}-{_MAX_SEQUENCE}")
    return ""


class BucketDeadLetters(DeadLetters):
    """The dead letters of several bucket streams of one outbox, as one :class:`DeadLetters`."""

    def __init__(self, redis_client: RedisClient, outboxes: Sequence[OutboxConfig]) -> None:
        if not outboxes:
            raise ValueError("need at least one bucket")
        super().__init__(redis_client, outboxes[0])
        self.buckets = [DeadLetters(redis_client, outbox) for outbox in outboxes]

    async def page(self, page_size: int, page_token: str) -> DeadLetterPage:
        """One page, oldest first over every bucket; InvalidArgument for a bad size or token."""
        size = page_size or DEFAULT_PAGE_SIZE
        if size < 0 or size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}"
            )
        after = _decode(page_token, len(self.buckets)) if page_token else None
        pages = await asyncio.gather(
            *(
                bucket.page(size, _bucket_token(after, index))
                for index, bucket in enumerate(self.buckets)
            )
        )
        merged = sorted(
            (
                (_position(letter, index), letter)
                for index, page in enumerate(pages)
                for letter in page.dead_letters
            ),
            key=lambda item: item[0],
        )
        more = len(merged) > size or any(page.next_page_token for page in pages)
        listed = merged[:size]
        token = _encode(listed[-1][0]) if more and listed else ""
        return DeadLetterPage(
            [letter for _, letter in listed], token, sum(page.total for page in pages)
        )

    async def replay(self, ids: Sequence[str], everything: bool = False) -> Outcome:
        return self._merged(
            ids, await asyncio.gather(*(b.replay(ids, everything) for b in self.buckets))
        )

    async def drop(self, ids: Sequence[str], everything: bool = False) -> Outcome:
        return self._merged(
            ids, await asyncio.gather(*(b.drop(ids, everything) for b in self.buckets))
        )

    @staticmethod
    def _merged(ids: Sequence[str], outcomes: Sequence[Outcome]) -> Outcome:
        """How many entries the buckets acted on, and the ids none of them held."""
        held_nowhere = set.intersection(*(set(outcome.not_found) for outcome in outcomes))
        not_found = [i for i in dict.fromkeys(ids) if i in held_nowhere]
        return Outcome(sum(outcome.count for outcome in outcomes), not_found)
