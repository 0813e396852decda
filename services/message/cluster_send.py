"""The send of MessageService's cluster store (services.message.cluster_store): the steps of a
send, each atomic in its own slot, and their repair by the relay.

1. RECEIVER in the receiver's slot (unless it is a note to self): the claim of the receiver's
   data (with ``claim_receiver``) and the newest id in the receiver's index;
2. RESERVE in the sender's slot: the idempotency key (a repeat is answered, a send of the same
   key still in flight is waited for), the sender's account, one rate-limit hit, the quota,
   then the message's bytes reserved, the idempotency key marked pending, and the newest id in
   the sender's index;
3. STORE in the conversation's bucket: a new id above both newest ids (so the message lists
   first for both users, whatever the clocks of the masters say), the message, the
   conversation, its outbox event. If it refuses (no free id) the reservation is given back
   (REFUND);
4. INDEX in the sender's slot (with the idempotency record) and in the receiver's slot.

The record is written before its indexes, so an index never names a message that was not
stored; an index entry whose message is gone (deleted, or erased) is skipped by readers and
removed. Step 4 is repeated by the relay from the outbox event before it notifies
(:meth:`ClusterSender.repair`), so a crash (or an unreachable user slot) between steps 3 and 4
delays the indexes and the idempotency record until the relay has read the event, and loses
nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Protocol

from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from services.common.domain import Unavailable
from services.common.metrics import OutboxMetrics
from services.common.outbox import outbox_lua_args
from services.common.timestamps import format_timestamp
from services.message import cluster_keys as ck
from services.message import cluster_lua as lua
from services.message import decoding
from services.message.models import IdempotencyRecord, Message, SendOptions, SendOutcome
from services.message.records import (
    decode_event,
    decode_record,
    message_tail,
    outbox_event,
    record_tail,
)

__all__ = ["PENDING_TTL_SECONDS", "ClusterSender", "SentMessages"]

logger = logging.getLogger(__name__)

PENDING_TTL_SECONDS: Final = 60
"""How long an idempotency key stays marked pending when its send stops between RESERVE and
INDEX (a crash): a repeat of the key waits for it meanwhile, and the relay's repair writes the
record if the message was stored."""

_PENDING_POLLS: Final = 20
_PENDING_POLL_SECONDS: Final = 0.05

# Event fields that let the relay write the indexes and the idempotency record as the send
# would have (cluster layout only; NotificationService ignores them).
SENDER_ACCOUNT_FIELD: Final = "sender_account_id"
REQUEST_ID_FIELD: Final = "client_request_id"
DIGEST_FIELD: Final = "content_sha256"

_OUTBOXES: Final = tuple(OutboxMetrics(ck.outbox_stream(b)) for b in range(ck.BUCKETS))
_DOCUMENT_FRAME: Final = len('{"id":,')


def _charge(tail: str) -> int:
    """The quota charge of a message whose stored JSON after the id is ``tail``."""
    return _DOCUMENT_FRAME + ck.ID_WIDTH + len(tail.encode())


class SentMessages(Protocol):
    """What a send needs of its store (ClusterMessageStore): the quota, and the delete of a
    message whose sender or receiver was erased while it was being stored."""

    quota_bytes: int

    async def delete(self, message: Message) -> bool: ...


class ClusterSender:
    """The sends of a ClusterMessageStore, in the steps of the module docstring, and their
    repair from the outbox event; ``redis`` is the store's client (see ClusterMessageStore)."""

    def __init__(self, redis: RedisCluster, store: SentMessages, idempotency_ttl: int) -> None:
        self._redis = redis
        self._store = store
        self._idempotency_ttl = idempotency_ttl
        script = redis.register_script
        self._receiver: AsyncScript = script(lua.RECEIVER)
        self._reserve: AsyncScript = script(lua.RESERVE)
        self._refund: AsyncScript = script(lua.REFUND)
        self._store_script: AsyncScript = script(lua.STORE)
        self._index: AsyncScript = script(lua.INDEX)

    async def send(
        self, sender: str, receiver: str, content: str, timestamp: datetime, options: SendOptions
    ) -> SendOutcome:
        """A send in the steps of the module docstring; the outcomes of
        RedisMessageStore.send_message. Unavailable if a send with the same ``request_id``
        is still being stored after a second."""
        floor = 0  # the new id exceeds every id in both users' indexes: it lists first
        if receiver != sender:
            claim = options.receiver_account_id if options.claim_receiver else ""
            checked: list[Any] = await self._receiver(
                keys=[ck.account_key(receiver), ck.user_messages_key(receiver)], args=[claim]
            )
            if decoding.text(checked[0]) == "erase":
                return SendOutcome("erase", erase_email=receiver)
            floor = int(checked[1])
        draft = Message(0, sender, receiver, content, timestamp)
        tail = message_tail(draft)
        charge = _charge(tail)
        idempotency = (
            ck.idempotency_key(sender, options.request_id)
            if options.request_id is not None
            else None
        )
        reserved = await self._reserve_send(
            sender, options.sender_account_id, idempotency, charge, options.rate_limit
        )
        if isinstance(reserved, SendOutcome):
            if reserved.outcome == "pending" and options.request_id is not None:
                return await self._await_record(sender, options.request_id)
            return reserved
        floor = max(floor, reserved)
        event = outbox_event(draft, options.receiver_account_id, options.sender_name)
        if options.sender_account_id:
            event[SENDER_ACCOUNT_FIELD] = options.sender_account_id
        if options.request_id is not None:
            event[REQUEST_ID_FIELD] = options.request_id
            event[DIGEST_FIELD] = options.content_sha256
        bucket = ck.bucket_of(sender, receiver)
        stored: list[Any] = await self._store_script(
            keys=[
                ck.conversation_key(sender, receiver),
                ck.conversation_messages_key(sender, receiver),
                ck.id_sequence_key(bucket),
                ck.outbox_stream(bucket),
            ],
            args=[
                tail,
                receiver,
                format_timestamp(timestamp),
                json.dumps(sorted((sender, receiver))),
                bucket,
                ck.BUCKETS,
                ck.message_prefix(bucket),
                floor,
                *outbox_lua_args(event),  # message_id first: the script sets it
            ],
        )
        if decoding.text(stored[0]) != "stored":
            await self._refund(
                keys=[ck.stored_bytes_key(sender), *([idempotency] if idempotency else [])],
                args=[charge, ck.PENDING],
            )
            return SendOutcome(decoding.text(stored[0]))
        _OUTBOXES[bucket].added(1)  # the script appended the event with the message
        message = draft._replace(id=int(stored[1]), read=bool(int(stored[2])))
        record = (
            record_tail(receiver, options.content_sha256)
            if options.request_id is not None
            else None
        )
        return await self._index_sent(
            message,
            (options.sender_account_id, options.receiver_account_id),
            options.request_id,
            record,
        )

    async def _index_sent(
        self,
        message: Message,
        accounts: tuple[str, str],
        request_id: str | None,
        record: str | None,
    ) -> SendOutcome:
        """Step 4 of a send: ``stored``; ``stale`` if the sender's account was erased
        meanwhile (the message went with it)."""
        try:
            indexed = await self._index_message(message, accounts, request_id, record)
            if not indexed and await self._stale(message.sender_email, accounts[0]):
                return SendOutcome("stale")
        except RedisError as exc:  # stored: the relay writes the indexes from the event
            logger.warning("message %d stored, its indexes left to the relay: %s", message.id, exc)
        return SendOutcome("stored", message=message)

    async def _stale(self, email: str, account_id: str) -> bool:
        """Whether ``account_id`` no longer owns ``email``'s data (erased, or a later one)."""
        marker = decoding.text(await self._redis.get(ck.account_key(email)) or "")
        owner = marker.removesuffix(":erased")
        erased = marker != owner
        return bool(account_id) and (owner > account_id or (owner == account_id and erased))

    async def _reserve_send(
        self,
        sender: str,
        account_id: str,
        idempotency: str | None,
        charge: int,
        rate_limit: tuple[int, int] | None,
    ) -> SendOutcome | int:
        """RESERVE; the newest id in the sender's index once reserved, else the outcome that
        ends the send."""
        messages, window = rate_limit if rate_limit is not None else ("", "")
        reply: list[Any] = await self._reserve(
            keys=[
                ck.account_key(sender),
                ck.stored_bytes_key(sender),
                ck.send_rate_key(sender),
                ck.user_messages_key(sender),
                *([idempotency] if idempotency else []),
            ],
            args=[
                account_id,
                messages,
                window,
                self._store.quota_bytes,
                charge,
                PENDING_TTL_SECONDS,
                ck.PENDING,
            ],
        )
        outcome = decoding.text(reply[0])
        if outcome == "reserved":
            return int(reply[1])
        if outcome == "duplicate":
            return SendOutcome(outcome, existing=decode_record(decoding.text(reply[1])))
        if outcome == "erase":
            return SendOutcome(outcome, erase_email=sender)
        if outcome == "rate":
            return SendOutcome(outcome, retry_after=int(reply[1]))
        if outcome == "quota":
            return SendOutcome(outcome, quota_used=int(reply[1]))
        return SendOutcome(outcome)  # stale, pending

    async def _await_record(self, sender: str, request_id: str) -> SendOutcome:
        """The outcome of a repeat of a key whose first send is being stored: its record once
        written (a duplicate); Unavailable if that takes too long or the first send failed."""
        for _ in range(_PENDING_POLLS):
            await asyncio.sleep(_PENDING_POLL_SECONDS)
            record = await self.idempotency_record(sender, request_id)
            if record is not None:
                return SendOutcome("duplicate", existing=record)
        raise Unavailable(
            f"a message with client_request_id {request_id} is still being stored; retry"
        )

    async def _index_message(
        self,
        message: Message,
        accounts: tuple[str, str],
        request_id: str | None = None,
        record: str | None = None,
    ) -> bool:
        """INDEX in the sender's slot (with the idempotency record) and the receiver's.
        ``accounts`` are the sender's and the receiver's accounts when it was sent ("" if
        unknown). Should one of them be gone by now (erased while the message was being
        stored), the message is deleted as erasure would have done: False."""
        sender, receiver = message.sender_email, message.receiver_email
        calls = [self._index_user(sender, receiver, message.id, accounts[0], request_id, record)]
        if receiver != sender:
            calls.append(self._index_user(receiver, sender, message.id, accounts[1]))
        if all(await asyncio.gather(*calls)):
            return True
        logger.info("message %d belongs to an erased account: deleted", message.id)
        await self._store.delete(message)
        return False

    async def _index_user(
        self,
        email: str,
        peer: str,
        message_id: int,
        account_id: str,
        request_id: str | None = None,
        record: str | None = None,
    ) -> bool:
        script_keys = [
            ck.user_messages_key(email),
            ck.user_conversations_by_time_key(email),
            ck.account_key(email),
        ]
        args: list[str | int] = [message_id, peer, account_id]
        if request_id is not None and record is not None:
            script_keys.append(ck.idempotency_key(email, request_id))
            args += [f'{{"message_id":{message_id},{record}', self._idempotency_ttl, ck.PENDING]
        return bool(await self._index(keys=script_keys, args=args))

    async def repair(self, fields: Mapping[str, str]) -> None:
        """Step 4 of a send again, from its outbox event (the relay, before notifying):
        idempotent. A malformed event is left to the relay (it dead-letters it)."""
        try:
            event = decode_event(dict(fields))
        except ValueError:
            return
        request_id = fields.get(REQUEST_ID_FIELD)
        record = (
            record_tail(event.receiver_email, fields.get(DIGEST_FIELD, "")) if request_id else None
        )
        message = Message(
            event.message_id, event.sender_email, event.receiver_email, "", event.timestamp
        )
        accounts = (fields.get(SENDER_ACCOUNT_FIELD, ""), event.receiver_account_id)
        await self._index_message(message, accounts, request_id or None, record)

    async def idempotency_record(self, sender: str, request_id: str) -> IdempotencyRecord | None:
        """The record of ``request_id``; None if there is none yet (or its send is pending)."""
        text = await self._redis.get(ck.idempotency_key(sender, request_id))
        if text is None or decoding.text(text) == ck.PENDING:
            return None
        return decode_record(decoding.text(text))
