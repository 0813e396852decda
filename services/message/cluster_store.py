"""MessageService's storage on a Valkey/Redis Cluster: the store Protocol of the service
(services.message.service.MessageStore) over the layout of services.message.cluster_keys,
every script single-slot (services.message.cluster_lua).

The store reads pages and messages per bucket and deletes in two steps (DELETE in the bucket,
UNINDEX in each user's slot); a send runs in four single-slot steps in
services.message.cluster_send (ClusterSender, with the relay's repair of its last step), and
account claims and erasure are services.message.cluster_erasure's (ClusterAccountData).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from services.message import cluster_keys as ck
from services.message import cluster_lua as lua
from services.message import decoding
from services.message.cluster_erasure import ClusterAccountData
from services.message.cluster_send import PENDING_TTL_SECONDS, ClusterSender
from services.message.models import (
    Conversation,
    IdempotencyRecord,
    Message,
    SendOptions,
    SendOutcome,
)
from services.message.store import MessageStoreBase, upper_bound

__all__ = ["PENDING_TTL_SECONDS", "ClusterMessageStore"]

logger = logging.getLogger(__name__)


class ClusterMessageStore(MessageStoreBase[RedisCluster]):
    """Messages and conversations on a Cluster; every script touches one hash slot.

    ``redis`` is a client of services.common.redis.create_cluster: it decodes replies to str,
    never re-sends a command after a timeout (a blind re-send of STORE would store the message
    twice), and runs a script a node lacks by EVAL on that node (so a master down fails only
    the scripts whose keys it serves).
    """

    def _register(self, redis: RedisCluster) -> None:
        script = redis.register_script
        self._delete: AsyncScript = script(lua.DELETE)
        self._unindex: AsyncScript = script(lua.UNINDEX)
        self._drop_empty: AsyncScript = script(lua.DROP_EMPTY)
        self._mark_read: AsyncScript = script(lua.MARK_READ)
        self._messages: AsyncScript = script(lua.MESSAGES)
        self._message_page_script: AsyncScript = script(lua.MESSAGE_PAGE)
        self._conversations: AsyncScript = script(lua.CONVERSATIONS)
        self._owned_range_script: AsyncScript = script(lua.OWNED_RANGE)
        self._sender = ClusterSender(redis, self, self._idempotency_ttl)
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
        """A send in the four steps of services.message.cluster_send (ClusterSender.send)."""
        return await self._sender.send(sender, receiver, content, timestamp, options)

    async def repair(self, fields: Mapping[str, str]) -> None:
        """Step 4 of a send again, from its outbox event (the relay, before notifying):
        idempotent (ClusterSender.repair)."""
        await self._sender.repair(fields)

    async def idempotency_record(self, sender: str, request_id: str) -> IdempotencyRecord | None:
        """The record of ``request_id``; None if there is none yet (or its send is pending)."""
        return await self._sender.idempotency_record(sender, request_id)

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
