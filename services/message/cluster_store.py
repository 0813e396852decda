"""MessageService's storage on a Valkey/Redis Cluster: the store Protocol of the service
(services.message.service.MessageStore) over the layout of services.message.cluster_keys,
every script single-slot (services.message.cluster_lua).

A send runs in four steps, each atomic in its own slot:

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
(:meth:`ClusterMessageStore.repair`), so a crash (or an unreachable user slot) between steps 3
and 4 delays the indexes and the idempotency record until the relay has read the event, and
loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

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
from services.message.erasure import AccountData
from services.message.models import (
    Conversation,
    IdempotencyRecord,
    Message,
    SendOptions,
    SendOutcome,
)
from services.message.records import (
    decode_event,
    decode_record,
    message_tail,
    outbox_event,
    record_tail,
)
from services.message.store import MessageStoreBase, upper_bound

__all__ = ["PENDING_TTL_SECONDS", "ClusterMessageStore"]

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


class ClusterMessageStore(MessageStoreBase[RedisCluster]):
    """Messages and conversations on a Cluster; every script touches one hash slot.

    ``redis`` is a client of services.common.redis.create_cluster: it decodes replies to str,
    never re-sends a command after a timeout (a blind re-send of STORE would store the message
    twice), and runs a script a node lacks by EVAL on that node (so a master down fails only
    the scripts whose keys it serves).
    """

    def _register(self, redis: RedisCluster) -> None:
        script = redis.register_script
        self._receiver: AsyncScript = script(lua.RECEIVER)
        self._reserve: AsyncScript = script(lua.RESERVE)
        self._refund: AsyncScript = script(lua.REFUND)
        self._store: AsyncScript = script(lua.STORE)
        self._index: AsyncScript = script(lua.INDEX)
        self._delete: AsyncScript = script(lua.DELETE)
        self._unindex: AsyncScript = script(lua.UNINDEX)
        self._drop_empty: AsyncScript = script(lua.DROP_EMPTY)
        self._mark_read: AsyncScript = script(lua.MARK_READ)
        self._messages: AsyncScript = script(lua.MESSAGES)
        self._message_page_script: AsyncScript = script(lua.MESSAGE_PAGE)
        self._conversations: AsyncScript = script(lua.CONVERSATIONS)
        self._owned_range_script: AsyncScript = script(lua.OWNED_RANGE)
        self._accounts = ClusterAccountData(redis, self)

    async def ping(self) -> bool:
        """Every master answers PING."""
        return bool(await self._redis.ping(target_nodes=RedisCluster.PRIMARIES))

    async def ready(self) -> bool:
        """The readiness check: connected, and a master answers PING. With a master down, the
        requests that need its slots answer UNAVAILABLE and the others are served, so the
        process stays in service rather than taking every user's requests out with it. Not
        ready before the client has loaded the slot map (loaded here when no command has yet)."""
        await self._redis.initialize()
        masters = self._redis.get_primaries()
        answers = await asyncio.gather(
            *(self._redis.ping(target_nodes=master) for master in masters),
            return_exceptions=True,
        )
        return any(answer is True for answer in answers)

    # -- sending ------------------------------------------------------------------------------

    async def _send(
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
        stored: list[Any] = await self._store(
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
                self.quota_bytes,
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
        await self.delete(message)
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

    # -- reading ------------------------------------------------------------------------------

    async def get(self, message_id: int) -> Message | None:
        found = await self.messages([message_id])
        return found[0] if found else None

    async def messages(self, ids: Sequence[int]) -> list[Message]:
        """The messages with these ids, in order, with read flags; missing ones skipped.

        One round trip per bucket the ids name (in parallel)."""
        if not ids:
            return []
        return decoding.decode_messages(ids, await self._load_messages(ids))

    async def _load_messages(self, ids: Sequence[int]) -> list[Any]:
        """lua.MESSAGES' reply for ``ids`` (flat: text, read_upto per id), run per bucket."""
        by_bucket: dict[int, list[int]] = defaultdict(list)
        for message_id in dict.fromkeys(ids):
            by_bucket[ck.bucket_of_id(message_id)].append(message_id)
        buckets = list(by_bucket)
        replies: list[list[Any]] = await asyncio.gather(
            *(
                self._messages(
                    keys=[ck.message_key(i) for i in by_bucket[b]],
                    args=[ck.conversation_prefix(b)],
                )
                for b in buckets
            )
        )
        loaded: dict[int, tuple[Any, Any]] = {}
        for bucket, reply in zip(buckets, replies, strict=True):
            for message_id, text, upto in zip(
                by_bucket[bucket], reply[0::2], reply[1::2], strict=True
            ):
                loaded[message_id] = (text, upto)
        flat: list[Any] = []
        for message_id in ids:
            flat.extend(loaded[message_id])
        return flat

    async def _owned_range(
        self, index: str, email: str, before: int | None, count: int, account_id: str, scores: bool
    ) -> list[Any] | None:
        """Up to ``count`` members of one of ``email``'s indexes below ``before``, newest
        first (flat with their scores with ``scores``): one script in the user's slot, with
        the check that ``account_id`` (when given) owns the data; None if it does not."""
        script_keys = [index]
        args: list[str | int] = [upper_bound(before), count, "1" if scores else "0"]
        if account_id:
            script_keys.append(ck.account_key(email))
            args.append(account_id)
        reply: Any = await self._owned_range_script(keys=script_keys, args=args)
        return list(reply[0]) if reply else None

    async def _message_page(
        self, email: str, peer: str | None, before: int | None, size: int, account_id: str
    ) -> tuple[list[Message], int | None] | None:
        """One page of ``email``'s messages (with ``peer`` only), newest first, as
        RedisMessageStore.message_page. With a peer: one script in the conversation's bucket
        (and the account check in the user's slot, sent with it: the page is dropped unless
        the account owns the data); without: the user's index (with the account check), then
        the messages per bucket. Index entries whose message is gone are skipped and
        removed."""
        if peer is not None:
            bucket = ck.bucket_of(email, peer)
            read = self._message_page_script(
                keys=[ck.conversation_messages_key(email, peer)],
                args=[
                    upper_bound(before),
                    size,
                    ck.message_prefix(bucket),
                    ck.conversation_prefix(bucket),
                ],
            )
            if account_id:
                marker, reply = await asyncio.gather(self._redis.get(ck.account_key(email)), read)
                if marker is None or decoding.text(marker) != account_id:
                    return None
            else:
                reply = await read
            found, loaded = reply
            ids = [int(member) for member in found]
            page = ids[:size]
            return decoding.decode_messages(page, loaded), page[-1] if len(ids) > size else None
        index = ck.user_messages_key(email)
        members = await self._owned_range(index, email, before, size + 1, account_id, False)
        if members is None:
            return None
        ids = [int(member) for member in members]
        page = ids[:size]
        loaded = await self._load_messages(page)
        gone = [i for i, text in zip(page, loaded[0::2], strict=True) if text is None]
        if gone:
            await self._redis.zrem(index, *(str(i) for i in gone))
        return decoding.decode_messages(page, loaded), page[-1] if len(ids) > size else None

    async def _conversation_page(
        self, email: str, before: int | None, size: int, account_id: str
    ) -> tuple[list[Conversation], int | None] | None:
        """One page of ``email``'s conversations, most recent first, as
        RedisMessageStore.conversation_page: the user's list (with the account check), then
        the conversations per bucket. An entry whose conversation is gone is skipped and
        removed."""
        entries = await self._owned_range(
            ck.user_conversations_by_time_key(email), email, before, size + 1, account_id, True
        )
        if entries is None:
            return None
        refs = [
            (decoding.text(entries[i]), decoding.position(entries[i + 1]))
            for i in range(0, len(entries) - 1, 2)
        ]
        page = refs[:size]
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for peer, _ in page:
            by_bucket[ck.bucket_of(email, peer)].append(peer)
        buckets = list(by_bucket)
        replies: list[list[Any]] = await asyncio.gather(
            *(
                self._conversations(
                    keys=[ck.conversation_key(email, peer) for peer in by_bucket[b]],
                    args=[ck.message_prefix(b), email, *by_bucket[b]],
                )
                for b in buckets
            )
        )
        loaded: dict[str, Any] = {}
        for bucket, reply in zip(buckets, replies, strict=True):
            loaded.update(zip(by_bucket[bucket], reply, strict=True))
        conversations: list[Conversation] = []
        for peer, position in page:
            item = loaded[peer]
            if not item:  # the conversation is gone: a stale entry
                await self._forget_conversation(email, peer, position)
                continue
            conversation = decoding.conversation_of(email, peer, item)
            if conversation is not None:
                conversations.append(conversation)
        return conversations, page[-1][1] if len(refs) > size else None

    async def _forget_conversation(self, email: str, peer: str, upto: int) -> None:
        await self._unindex(
            keys=[ck.user_messages_key(email), ck.user_conversations_by_time_key(email)],
            args=["", peer, upto, 0],
        )

    # -- changing -----------------------------------------------------------------------------

    async def mark_read(self, email: str, peer: str) -> Conversation | None:
        """Mark what ``peer`` sent to ``email`` read: one script in the conversation's bucket."""
        reply: Any = await self._mark_read(
            keys=[ck.conversation_key(email, peer), ck.conversation_messages_key(email, peer)],
            args=[email, ck.message_prefix(ck.bucket_of(email, peer)), peer],
        )
        return decoding.conversation_of(email, peer, reply) if reply else None

    async def delete(self, message: Message) -> bool:
        """Delete ``message`` (DELETE in the bucket), then out of both users' indexes with its
        bytes given back to the sender (UNINDEX); False if it was already gone. Should the
        second step fail, the message stays deleted: readers drop the index entries."""
        sender, receiver = message.sender_email, message.receiver_email
        reply: Any = await self._delete(
            keys=[
                ck.message_key(message.id),
                ck.conversation_key(sender, receiver),
                ck.conversation_messages_key(sender, receiver),
            ],
            args=[str(message.id), receiver],
        )
        if not reply:
            return False
        size, gone = int(reply[0]), decoding.text(reply[1])
        refund = ck.charge(size, message.id)
        calls = [self._unindex_user(sender, receiver, message.id, gone, refund)]
        if receiver != sender:
            calls.append(self._unindex_user(receiver, sender, message.id, gone, None))
        try:
            await asyncio.gather(*calls)
        except RedisError as exc:
            logger.warning("message %d deleted, its index entries left: %s", message.id, exc)
        return True

    async def _unindex_user(
        self, email: str, peer: str, message_id: int, gone: str, refund: int | None
    ) -> None:
        script_keys = [ck.user_messages_key(email), ck.user_conversations_by_time_key(email)]
        if refund is not None:
            script_keys.append(ck.stored_bytes_key(email))
        await self._unindex(keys=script_keys, args=[message_id, peer, gone, refund or 0])

    async def drop_if_empty(self, email: str, peer: str, position: int) -> None:
        """The conversation of ``email`` and ``peer`` deleted if it has no message left, and
        out of both users' lists (erasure)."""
        last: Any = await self._drop_empty(
            keys=[ck.conversation_key(email, peer), ck.conversation_messages_key(email, peer)]
        )
        if last is None or last is False:
            return
        upto = max(int(decoding.text(last) or 0), position)
        await asyncio.gather(
            *(self._forget_conversation(user, other, upto) for user, other in _both(email, peer))
        )

    # -- accounts -----------------------------------------------------------------------------

    async def claim(self, email: str, account_id: str) -> bool:
        return await self._accounts.claim(email, account_id)

    async def erase_account(self, email: str, account_id: str) -> int:
        return await self._accounts.erase_account(email, account_id)


def _both(email: str, peer: str) -> list[tuple[str, str]]:
    return [(email, peer)] if email == peer else [(email, peer), (peer, email)]


class ClusterAccountData(AccountData):
    """AccountData on the cluster layout: the marker and counters in the user's slot; erasure
    goes through the user's indexes, one slot at a time."""

    def __init__(self, redis: RedisCluster, store: ClusterMessageStore) -> None:
        super().__init__(redis, store)
        self._claim = redis.register_script(lua.CLAIM)
        self._take_over = redis.register_script(lua.TAKE_OVER)
        self._cluster = redis
        self._store = store

    def _account_key(self, email: str) -> str:
        return ck.account_key(email)

    def _owned_counters(self, email: str) -> list[str]:
        return [ck.account_key(email), ck.stored_bytes_key(email), ck.send_rate_key(email)]

    async def erase(self, email: str) -> int:
        """Delete every message ``email`` sent or received that its index holds up to the
        newest one there when the call began (for both participants), then its conversations
        left without messages; how many messages were deleted."""
        index = ck.user_messages_key(email)
        newest: Any = await self._cluster.zrevrange(index, 0, 0)
        upto = int(newest[0]) if newest else 0
        erased = 0
        while upto:
            members: Any = await self._cluster.zrangebyscore(index, "-inf", upto, start=0, num=100)
            ids = [int(member) for member in members]
            if not ids:
                break
            found = await self._store.messages(ids)
            for message in found:
                erased += int(await self._store.delete(message))
            # DELETE's UNINDEX removed them; entries without a message (or whose UNINDEX
            # failed) go too, so each round makes progress.
            await self._cluster.zrem(index, *members)
        entries: Any = await self._cluster.zrange(
            ck.user_conversations_by_time_key(email), 0, -1, withscores=True
        )
        for peer, position in entries:
            await self._store.drop_if_empty(email, decoding.text(peer), int(position))
        return erased
