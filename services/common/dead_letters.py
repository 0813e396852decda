"""Dead letters an operator can act on: list them, replay them to their outbox, or drop them.

The relay of :mod:`services.common.delivery` copies an event it gives up on (a permanent
failure) to the outbox's dead-letter stream, with ``dead_letter.*`` fields next to the original
ones. This module serves the admin RPCs (ListDeadLetters, ReplayDeadLetters, DropDeadLetters)
of the services that own an outbox:

* **list** - oldest first, each with its reason, attempts, consumer and original fields;
* **replay** - in one Lua script per entry: XADD the original fields (``dead_letter.*``
  removed) to the outbox stream as a new entry, then XDEL the dead letter. A dead letter is
  therefore replayed at most once (a second replay of its id finds nothing), and an event
  delivered again is harmless: the receivers dedupe by the business id it carries;
* **drop** - XDEL, for good.

``all`` acts on the entries present when the call starts (up to the stream's last id then), so
an event that fails again and is dead-lettered anew during a replay is not replayed in a loop.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from services.common.delivery import (
    DEAD_LETTER_ATTEMPTS_FIELD,
    DEAD_LETTER_CONSUMER_FIELD,
    DEAD_LETTER_ID_FIELD,
    DEAD_LETTER_REASON_FIELD,
    OutboxConfig,
)
from services.common.domain import InvalidArgument, Unavailable
from services.common.grpc_edge import Context, caller
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_TOKEN_LENGTH
from services.common.redis import RedisClient
from services.common.timestamps import set_proto_timestamp

__all__ = [
    "MAX_IDS",
    "AdminRpcs",
    "DeadLetter",
    "DeadLetterPage",
    "DeadLetterRpcs",
    "DeadLetters",
    "Outcome",
    "encode_token",
]

MAX_IDS: Final = 100
_BATCH: Final = 100
_PREFIX: Final = "dead_letter."
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_TOKEN_PREFIX: Final = "d1:"

# KEYS[1] dead-letter stream, KEYS[2] outbox stream; ARGV the dead-letter ids.
# Returns the ids that were not found (or had no original field left to replay).
_REPLAY_LUA: Final = """
local missing = {}
for _, id in ipairs(ARGV) do
  local entries = redis.call('XRANGE', KEYS[1], id, id)
  local kept = {}
  if #entries == 1 then
    local fields = entries[1][2]
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 12) ~= 'dead_letter.' then
        kept[#kept + 1] = fields[i]
        kept[#kept + 1] = fields[i + 1]
      end
    end
  end
  if #kept == 0 then
    missing[#missing + 1] = id
  else
    redis.call('XADD', KEYS[2], '*', unpack(kept))
    redis.call('XDEL', KEYS[1], id)
  end
end
return missing
"""

# KEYS[1] dead-letter stream; ARGV the ids. Returns the ids that were not found.
_DROP_LUA: Final = """
local missing = {}
for _, id in ipairs(ARGV) do
  if redis.call('XDEL', KEYS[1], id) == 0 then
    missing[#missing + 1] = id
  end
end
return missing
"""


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter stream."""

    id: str
    original_id: str
    reason: str
    attempts: int
    consumer: str
    dead_lettered_at: datetime
    fields: dict[str, str]


@dataclass(frozen=True)
class DeadLetterPage:
    dead_letters: list[DeadLetter]
    next_page_token: str
    total: int


@dataclass(frozen=True)
class Outcome:
    """How many entries a replay or drop acted on, and the requested ids it did not find."""

    count: int
    not_found: list[str]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry_time(entry_id: str) -> datetime:
    millis = int(entry_id.partition("-")[0])
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(0, UTC)


def _dead_letter(entry_id: Any, raw: Any) -> DeadLetter:
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=False))
    fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
    attempts = fields.get(DEAD_LETTER_ATTEMPTS_FIELD, "0")
    return DeadLetter(
        id=_text(entry_id),
        original_id=fields.get(DEAD_LETTER_ID_FIELD, ""),
        reason=fields.get(DEAD_LETTER_REASON_FIELD, ""),
        attempts=int(attempts) if attempts.isdigit() and len(attempts) < 10 else 0,
        consumer=fields.get(DEAD_LETTER_CONSUMER_FIELD, ""),
        dead_lettered_at=_entry_time(_text(entry_id)),
        fields={k: v for k, v in fields.items() if not k.startswith(_PREFIX)},
    )


def encode_token(last_id: str) -> str:
    """The page token of a page that ends on the entry ``last_id``: the next page starts after
    it (:mod:`services.common.bucket_dead_letters` pages each bucket's stream with these)."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last_id}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument("page_token is malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument("page_token is malformed") from exc
    last_id = raw.removeprefix(_TOKEN_PREFIX)
    if not raw.startswith(_TOKEN_PREFIX) or not _ENTRY_ID.fullmatch(last_id):
        raise InvalidArgument("page_token is malformed")
    return last_id


def _validated_ids(ids: Sequence[str], everything: bool) -> list[str]:
    if everything and ids:
        raise InvalidArgument("give either ids or all, not both")
    if not everything and not ids:
        raise InvalidArgument("give the ids of the dead letters, or all")
    if len(ids) > MAX_IDS:
        raise InvalidArgument(f"at most {MAX_IDS} ids per call, got {len(ids)}")
    for entry_id in ids:
        if not _ENTRY_ID.fullmatch(entry_id):
            shown = entry_id if len(entry_id) <= 45 else entry_id[:42] + "..."
            raise InvalidArgument(
                f"{shown!r} is not a dead-letter id (<milliseconds>-<sequence>, e.g. 1700000000-0)"
            )
    return list(dict.fromkeys(ids))


class DeadLetters:
    """The dead letters of one outbox (its ``dead_letter_stream``), for the admin RPCs."""

    def __init__(self, redis_client: RedisClient, outbox: OutboxConfig) -> None:
        self._redis = redis_client
        self.stream = outbox.stream
        self.dead_letter_stream = outbox.dead_letter_stream
        self._replay = redis_client.register_script(_REPLAY_LUA)
        self._drop = redis_client.register_script(_DROP_LUA)

    async def page(self, page_size: int, page_token: str) -> DeadLetterPage:
        """One page, oldest first; InvalidArgument for a bad page size or token."""
        size = page_size or DEFAULT_PAGE_SIZE
        if size < 0 or size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}"
            )
        start = f"({_decode_token(page_token)}" if page_token else "-"
        entries = (
            await self._redis.xrange(self.dead_letter_stream, start, "+", count=size + 1) or []
        )
        total = int(await self._redis.xlen(self.dead_letter_stream))
        page = [_dead_letter(entry_id, raw) for entry_id, raw in entries[:size]]
        token = encode_token(page[-1].id) if len(entries) > size and page else ""
        return DeadLetterPage(page, token, total)

    async def replay(self, ids: Sequence[str], everything: bool = False) -> Outcome:
        """Put the original events back on the outbox stream and remove the dead letters."""
        wanted = _validated_ids(ids, everything)
        if everything:
            return await self._each_batch(self._replay, [self.dead_letter_stream, self.stream])
        missing = [
            _text(m) for m in await self._replay([self.dead_letter_stream, self.stream], wanted)
        ]
        return Outcome(len(wanted) - len(missing), missing)

    async def drop(self, ids: Sequence[str], everything: bool = False) -> Outcome:
        """Remove dead letters for good."""
        wanted = _validated_ids(ids, everything)
        if everything:
            return await self._each_batch(self._drop, [self.dead_letter_stream])
        missing = [_text(m) for m in await self._drop([self.dead_letter_stream], wanted)]
        return Outcome(len(wanted) - len(missing), missing)

    async def _each_batch(self, script: Any, keys: list[str]) -> Outcome:
        """Run ``script`` over every entry present now, in batches of ids."""
        last = await self._redis.xrevrange(self.dead_letter_stream, "+", "-", count=1)
        if not last:
            return Outcome(0, [])
        end = _text(last[0][0])
        start = "-"
        done = 0
        while True:
            entries = await self._redis.xrange(self.dead_letter_stream, start, end, count=_BATCH)
            entries = entries or []
            if not entries:
                return Outcome(done, [])
            batch = [_text(entry_id) for entry_id, _ in entries]
            missing = await script(keys, batch)
            done += len(batch) - len(missing)
            start = f"({batch[-1]}"


class AdminRpcs:
    """The three admin RPCs, for a servicer whose proto package defines their messages.

    ``pb2`` is that package's generated module (``message_pb2``, ``notification_pb2``,
    ``user_pb2``): each defines DeadLetter and the request and response messages alike.
    Without ``dead_letters`` (a process wired without Redis, as in some tests) the calls
    answer UNAVAILABLE.
    """

    def __init__(self, dead_letters: DeadLetters | None, pb2: Any) -> None:
        self._dead_letters = dead_letters
        self._pb2 = pb2

    def _require(self) -> DeadLetters:
        if self._dead_letters is None:
            raise Unavailable("dead letters are not available in this process")
        return self._dead_letters

    async def list(self, request: Any) -> Any:
        page = await self._require().page(request.page_size, request.page_token)
        reply = self._pb2.ListDeadLettersResponse(
            next_page_token=page.next_page_token, total=page.total
        )
        for item in page.dead_letters:
            entry = reply.dead_letters.add(
                id=item.id,
                original_id=item.original_id,
                reason=item.reason,
                attempts=item.attempts,
                consumer=item.consumer,
            )
            set_proto_timestamp(entry.dead_lettered_at, item.dead_lettered_at)
            entry.fields.update(item.fields)
        return reply

    async def replay(self, request: Any) -> Any:
        outcome = await self._require().replay(list(request.ids), request.all)
        return self._pb2.ReplayDeadLettersResponse(
            replayed=outcome.count, not_found=outcome.not_found
        )

    async def drop(self, request: Any) -> Any:
        outcome = await self._require().drop(list(request.ids), request.all)
        return self._pb2.DropDeadLettersResponse(dropped=outcome.count, not_found=outcome.not_found)


class DeadLetterRpcs:
    """ListDeadLetters, ReplayDeadLetters and DropDeadLetters of a servicer that owns an outbox.

    Put it before the generated servicer base (``class X(DeadLetterRpcs, x_pb2_grpc.XServicer)``)
    and set ``self._admin`` to the :class:`AdminRpcs` of the servicer's proto package. The edge
    admits only the operator credential (``admin``) to these methods.
    """

    _admin: AdminRpcs

    async def ListDeadLetters(self, request: Any, context: Context) -> Any:
        caller()
        return await self._admin.list(request)

    async def ReplayDeadLetters(self, request: Any, context: Context) -> Any:
        caller()
        return await self._admin.replay(request)

    async def DropDeadLetters(self, request: Any, context: Context) -> Any:
        caller()
        return await self._admin.drop(request)
