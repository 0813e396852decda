"""Who owns MessageService's data under an email on the cluster layout, and the erasure of a
deleted account's data: services.message.erasure's AccountData over the keys of
services.message.cluster_keys (the marker and counters in the user's slot), erasing through the
user's indexes, one slot at a time.
"""

from __future__ import annotations

from typing import Any, Protocol

from redis.asyncio import RedisCluster

from services.message import cluster_keys as ck
from services.message import cluster_lua as lua
from services.message import decoding
from services.message.erasure import AccountData, StoredMessages

__all__ = ["ClusterAccountData", "ClusterStoredMessages"]


class ClusterStoredMessages(StoredMessages, Protocol):
    """The store's reads and deletes erasure goes through on the cluster layout
    (ClusterMessageStore), with the drop of a conversation left without messages."""

    async def drop_if_empty(self, email: str, peer: str, position: int) -> None: ...


class ClusterAccountData(AccountData):
    """AccountData on the cluster layout: the marker and counters in the user's slot; erasure
    goes through the user's indexes, one slot at a time."""

    def __init__(self, redis: RedisCluster, store: ClusterStoredMessages) -> None:
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
