"""MessageService's Redis storage (DB 1): reads and the atomic writes.

Key names live in services.message.keys, the scripts in services.message.lua, the stored
forms in services.message.records and account ownership with erasure in
services.message.erasure; the layout is documented in this service's README.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from redis.asyncio import Redis

from services.common.metrics import OutboxMetrics
from services.common.outbox import outbox_lua_args
from services.common.redis import pipelined_command, pipelined_script
from services.common.timestamps import format_timestamp
from services.message import decoding, keys, lua
from services.message.erasure import AccountData
from services.message.models import (
    Conversation,
    IdempotencyRecord,
    Message,
    MessageSender,
    SendOptions,
    SendOutcome,
)
from services.message.records import (
    decode_record,
    message_tail,
    outbox_event,
    record_tail,
)
from services.message.settings import DEFAULT_QUOTA_BYTES

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "IDEMPOTENCY_TTL_SECONDS",
    "MessageStoreBase",
    "RedisMessageStore",
]

logger = logging.getLogger(__name__)

IDEMPOTENCY_TTL_SECONDS: Final = 24 * 3600

_OUTBOX: Final = OutboxMetrics(keys.OUTBOX_STREAM)
_PARTICIPANTS: Final = json.JSONEncoder()  # json.dumps's own encoder, built once


def upper_bound(before: int | None) -> str:
    return f"({before}" if before else "+inf"


ClientT = TypeVar("ClientT")


class MessageStoreBase(MessageSender, Generic[ClientT]):
    """What the stores of both layouts share: the limits, checked once, and send_message
    (MessageSender); each registers its scripts in :meth:`_register`."""

    def __init__(
        self,
        redis: ClientT,
        *,
        idempotency_ttl: int = IDEMPOTENCY_TTL_SECONDS,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
    ) -> None:
        if idempotency_ttl < 1:
            raise ValueError("idempotency_ttl must be at least 1 second")
        if quota_bytes < 1:
            raise ValueError("quota_bytes must be at least 1")
        self._redis = redis
        self._idempotency_ttl = idempotency_ttl
        self.quota_bytes = quota_bytes
        self._register(redis)

    @abstractmethod
    def _register(self, redis: ClientT) -> None:
        """Register the layout's scripts (and its account data) on ``redis``."""

    @abstractmethod
    async def claim(self, email: str, account_id: str) -> bool:
        """Make ``account_id`` the owner of ``email``'s data (AccountData.claim)."""

    @abstractmethod
    async def _message_page(
        self, email: str, peer: str | None, before: int | None, size: int, account_id: str
    ) -> tuple[list[Message], int | None] | None:
        """:meth:`message_page`, or None if ``account_id`` (when given) does not own
        ``email``'s data as it stands (a claim is needed first)."""

    @abstractmethod
    async def _conversation_page(
        self, email: str, before: int | None, size: int, account_id: str
    ) -> tuple[list[Conversation], int | None] | None:
        """:meth:`conversation_page`, or None as :meth:`_message_page`."""

    async def message_page(
        self, email: str, peer: str | None, before: int | None, size: int
    ) -> tuple[list[Message], int | None]:
        """One page of ``email``'s messages (with ``peer`` only), newest first, below
        ``before`` when given, with read flags; and the position the next page starts below
        (None on the last page). An index entry without its message is skipped."""
        page = await self._message_page(email, peer, before, size, "")
        assert page is not None  # no account to check
        return page

    async def conversation_page(
        self, email: str, before: int | None, size: int
    ) -> tuple[list[Conversation], int | None]:
        """One page of ``email``'s conversations, most recent first, below position ``before``
        when given (the position is the id of the last message sent); and the position the
        next page starts below (None on the last page). A conversation without messages left
        is skipped."""
        page = await self._conversation_page(email, before, size, "")
        assert page is not None  # no account to check
        return page

    async def owned_message_page(
        self, email: str, account_id: str, peer: str | None, before: int | None, size: int
    ) -> tuple[list[Message], int | None] | None:
        """:meth:`message_page` for the account ``account_id``, which must own ``email``'s
        data: None if that account was deleted (:meth:`claim` says False).

        The ownership check rides with the page read (one round trip on a standalone Redis)
        while the data is already the account's; otherwise (its first read, an earlier
        account's data to erase, a deleted account) the claim runs first, then the page."""
        page = await self._message_page(email, peer, before, size, account_id)
        if page is None:
            if not await self.claim(email, account_id):
                return None
            page = await self.message_page(email, peer, before, size)
        return page

    async def owned_conversation_page(
        self, email: str, account_id: str, before: int | None, size: int
    ) -> tuple[list[Conversation], int | None] | None:
        """:meth:`conversation_page` for the account ``account_id``, as
        :meth:`owned_message_page`."""
        page = await self._conversation_page(email, before, size, account_id)
        if page is None:
            if not await self.claim(email, account_id):
                return None
            page = await self.conversation_page(email, before, size)
        return page


class RedisMessageStore(MessageStoreBase[Redis]):
    """Messages and conversations in one Redis database; every multi-key write is one script.

    ``redis`` must decode replies to str and must not retry commands by itself
    (services.common.redis.create_redis): a blind re-send of INCR would skip an id, and of a
    store script without an idempotency key would store the message twice.
    """

    def _register(self, redis: Redis) -> None:
        # Every script of a call and the idempotency look-up go out with the others that
        # concurrent calls issue in the same loop tick, in one write on one connection
        # (services.common.autopipeline); redis-py's own path where the client has none.
        self._send_message = pipelined_script(redis, lua.SEND_MESSAGE)
        self._delete = pipelined_script(redis, lua.DELETE)
        self._mark_read = pipelined_script(redis, lua.MARK_READ)
        self._messages = pipelined_script(redis, lua.MESSAGES)
        self._message_page_script = pipelined_script(redis, lua.MESSAGE_PAGE)
        self._conversation_page_script = pipelined_script(redis, lua.CONVERSATION_PAGE)
        self._accounts = AccountData(redis, self)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    # -- sending ------------------------------------------------------------------------------

    async def _send(
        self, sender: str, receiver: str, content: str, timestamp: datetime, options: SendOptions
    ) -> SendOutcome:
        """A whole send in one round trip (lua.SEND_MESSAGE): the idempotency check, the
        claims of the sender's (``sender_account_id``) and, with ``claim_receiver``, the
        receiver's data, one hit on the sender's rate limit (``rate_limit`` = (messages,
        window seconds)), a new id, the quota check, and the message with its indexes,
        idempotency record (with ``request_id``) and outbox event, atomically."""
        draft = Message(0, sender, receiver, content, timestamp)
        when = format_timestamp(timestamp)
        event = outbox_event(draft, options.receiver_account_id, options.sender_name, when)
        conversation = keys.conversation_key(sender, receiver)
        script_keys = [
            conversation,
            keys.conversation_messages_key(sender, receiver),
            keys.user_conversations_key(sender),
            keys.user_conversations_key(receiver),
            keys.user_conversations_by_time_key(sender),
            keys.user_conversations_by_time_key(receiver),
            keys.user_messages_key(sender),
            keys.user_messages_key(receiver),
            keys.OUTBOX_STREAM,
            keys.stored_bytes_key(sender),
            keys.MESSAGE_ID_COUNTER,
            keys.account_key(sender),
            keys.account_key(receiver),
            keys.send_rate_key(sender),
        ]
        if options.request_id is not None:
            script_keys.append(keys.idempotency_key(sender, options.request_id))
        messages, window = options.rate_limit if options.rate_limit is not None else ("", "")
        reply: list[Any] = await self._send_message(
            keys=script_keys,
            args=[
                message_tail(draft, when),
                receiver,
                when,
                conversation,
                _PARTICIPANTS.encode(sorted((sender, receiver))),
                record_tail(receiver, options.content_sha256)
                if options.request_id is not None
                else "",
                self._idempotency_ttl,
                options.sender_account_id,
                options.receiver_account_id if options.claim_receiver else "",
                messages,
                window,
                self.quota_bytes,
                keys.MESSAGE_PREFIX,
                *outbox_lua_args(event),  # message_id first: the script sets it
            ],
        )
        outcome = decoding.text(reply[0])
        if outcome == "stored":
            _OUTBOX.added(1)  # the script appended the event with the message
            read = bool(int(reply[2]))
            message = Message(int(reply[1]), sender, receiver, content, timestamp, read)
            return SendOutcome(outcome, message=message)
        if outcome == "duplicate":
            return SendOutcome(outcome, existing=decode_record(decoding.text(reply[1])))
        if outcome == "erase":
            return SendOutcome(
                outcome, erase_email=sender if decoding.text(reply[1]) == "sender" else receiver
            )
        if outcome == "rate":
            return SendOutcome(outcome, retry_after=int(reply[1]))
        if outcome == "quota":
            return SendOutcome(outcome, quota_used=int(reply[1]))
        return SendOutcome(outcome)

    async def idempotency_record(self, sender: str, request_id: str) -> IdempotencyRecord | None:
        key = keys.idempotency_key(sender, request_id)
        text = await pipelined_command(self._redis, "GET", key)
        return decode_record(decoding.text(text)) if text is not None else None

    # -- reading ------------------------------------------------------------------------------

    async def get(self, message_id: int) -> Message | None:
        """The message with its read flag, or None."""
        found = await self.messages([message_id])
        return found[0] if found else None

    async def messages(self, ids: Sequence[int]) -> list[Message]:
        """The messages with these ids, in order, with read flags; missing ones are skipped.

        One round trip: a script reads each message and its receiver's read marker."""
        if not ids:
            return []
        loaded: list[Any] = await self._messages(
            keys=[keys.message_key(i) for i in ids], args=[keys.CONVERSATION_PREFIX]
        )
        return decoding.decode_messages(ids, loaded)

    async def _message_page(
        self, email: str, peer: str | None, before: int | None, size: int, account_id: str
    ) -> tuple[list[Message], int | None] | None:
        """One round trip: a script checks the account marker (with ``account_id``), then
        reads the index, the messages and their read markers."""
        index = _message_index(email, peer)
        args: list[str | int] = [
            upper_bound(before),
            size,
            keys.MESSAGE_PREFIX,
            keys.CONVERSATION_PREFIX,
        ]
        if account_id:
            reply: Any = await self._message_page_script(
                keys=[index, keys.account_key(email)], args=[*args, account_id]
            )
            if not reply:
                return None
        else:
            reply = await self._message_page_script(keys=[index], args=args)
        members, loaded = reply
        ids = [int(member) for member in members]
        page = ids[:size]
        return decoding.decode_messages(page, loaded), page[-1] if len(ids) > size else None

    async def _conversation_page(
        self, email: str, before: int | None, size: int, account_id: str
    ) -> tuple[list[Conversation], int | None] | None:
        """One round trip: a script checks the account marker (with ``account_id``), then
        reads the list, each hash and each last message."""
        script_keys = [keys.user_conversations_by_time_key(email)]
        args: list[str | int] = [
            upper_bound(before),
            size,
            keys.MESSAGE_PREFIX,
            keys.CONVERSATION_PREFIX,
            email,
        ]
        if account_id:
            script_keys.append(keys.account_key(email))
            args.append(account_id)
        reply: Any = await self._conversation_page_script(keys=script_keys, args=args)
        if not reply:
            return None
        entries, loaded = reply
        refs = [
            (keys.peer_in(decoding.text(entries[i]), email), decoding.position(entries[i + 1]))
            for i in range(0, len(entries) - 1, 2)
        ]
        page = refs[:size]
        return decoding.decode_conversations(email, [p for p, _ in page], loaded), (
            page[-1][1] if len(refs) > size else None
        )

    # -- changing -----------------------------------------------------------------------------

    async def mark_read(self, email: str, peer: str) -> Conversation | None:
        """Mark what ``peer`` sent to ``email`` read; the conversation, or None if it has none."""
        reply: Any = await self._mark_read(
            keys=[
                keys.conversation_key(email, peer),
                keys.conversation_messages_key(email, peer),
            ],
            args=[email, keys.MESSAGE_PREFIX, peer],
        )
        return decoding.conversation_of(email, peer, reply) if reply else None

    async def delete(self, message: Message) -> bool:
        """Delete ``message`` and update its conversation; False if it was already gone."""
        sender, receiver = message.sender_email, message.receiver_email
        conversation = keys.conversation_key(sender, receiver)
        deleted = await self._delete(
            keys=[
                keys.message_key(message.id),
                conversation,
                keys.conversation_messages_key(sender, receiver),
                keys.user_messages_key(sender),
                keys.user_messages_key(receiver),
                keys.user_conversations_key(sender),
                keys.user_conversations_key(receiver),
                keys.user_conversations_by_time_key(sender),
                keys.user_conversations_by_time_key(receiver),
                keys.stored_bytes_key(sender),
            ],
            args=[str(message.id), receiver, conversation],
        )
        return bool(deleted)

    # -- accounts -----------------------------------------------------------------------------

    async def claim(self, email: str, account_id: str) -> bool:
        """Make ``account_id`` the owner of ``email``'s data here, erasing an earlier
        account's data first; False if that account was deleted (AccountData.claim)."""
        return await self._accounts.claim(email, account_id)

    async def erase_account(self, email: str, account_id: str) -> int:
        """Erase the data of the deleted account ``account_id`` of ``email`` (idempotent); how
        many messages were deleted (AccountData.erase_account)."""
        return await self._accounts.erase_account(email, account_id)


def _message_index(email: str, peer: str | None) -> str:
    if peer is None:
        return keys.user_messages_key(email)
    return keys.conversation_messages_key(email, peer)
