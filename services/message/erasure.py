"""Who owns MessageService's data under an email, and the erasure of a deleted account's data.

Each email's data carries an account marker (keys.account_key): the id of the account that owns
it, ``{id}:erased`` once that account was deleted and its data erased. A later account of the
email takes the data over only after the earlier account's messages are erased, so it never
sees them, whether or not UserService's erasure event has arrived yet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Protocol

from redis.commands.core import AsyncScript

from services.common.domain import Unavailable
from services.common.redis import RedisClient, pipelined_script
from services.message import decoding, keys, lua
from services.message.models import Message

__all__ = ["AccountData"]

logger = logging.getLogger(__name__)

_LOAD_ATTEMPTS: Final = 3


class StoredMessages(Protocol):
    """The store's reads and deletes erasure goes through (RedisMessageStore)."""

    async def messages(self, ids: Sequence[int]) -> list[Message]: ...

    async def delete(self, message: Message) -> bool: ...


class AccountData:
    """Claims of an email's data for an account, and erasure of a deleted account's data.

    The key names and :meth:`erase` are the standalone layout's; the cluster layout's subclass
    (services.message.cluster_erasure) overrides them."""

    def __init__(self, redis: RedisClient, messages: StoredMessages) -> None:
        self._redis = redis
        self._messages = messages
        # The check before every user request: through the client's auto-pipeline.
        self._claim = pipelined_script(redis, lua.CLAIM)
        self._take_over: AsyncScript = redis.register_script(lua.TAKE_OVER)

    def _account_key(self, email: str) -> str:
        return keys.account_key(email)

    def _owned_counters(self, email: str) -> list[str]:
        """The account marker of ``email`` and the counters that belong to its account, not
        to the address: a later account of the email starts with them reset."""
        return [keys.account_key(email), keys.stored_bytes_key(email), keys.send_rate_key(email)]

    async def claim(self, email: str, account_id: str) -> bool:
        """Make ``account_id`` the owner of ``email``'s data here; False if that account was
        deleted (a later account owns the email, or its data was erased).

        Data of an earlier account of the email is erased first, so a new account never sees
        anything of a deleted one, whether or not the erasure event has arrived yet."""
        for _ in range(_LOAD_ATTEMPTS):
            reply: list[Any] = await self._claim(keys=[self._account_key(email)], args=[account_id])
            outcome = decoding.text(reply[0])
            if outcome == "ok":
                return True
            if outcome == "stale":
                return False
            marker = decoding.text(reply[1])
            erased = await self.erase(email)
            if await self._take_over(keys=self._owned_counters(email), args=[marker, account_id]):
                logger.info(
                    "account %s of %s took over; %d messages of %s erased",
                    account_id,
                    email,
                    erased,
                    marker,
                )
                return True
        raise Unavailable(f"the data of {email} is being changed concurrently; retry")

    async def erase_account(self, email: str, account_id: str) -> int:
        """Erase the data of the deleted account ``account_id`` of ``email`` (idempotent);
        how many messages were deleted. Nothing is touched if a later account owns the email.
        An empty ``account_id`` (an account from before ids) erases only unclaimed data."""
        for _ in range(_LOAD_ATTEMPTS):
            marker = decoding.text(await self._redis.get(self._account_key(email)) or "")
            owner = marker.removesuffix(":erased")
            if marker and (not account_id or owner > account_id):
                return 0  # a later account owns the email; its claim erased what was here
            erased = await self.erase(email)
            tombstone = f"{account_id}:erased" if account_id else ""
            if await self._take_over(keys=self._owned_counters(email), args=[marker, tombstone]):
                return erased
        raise Unavailable(f"the data of {email} is being changed concurrently; retry")

    async def erase(self, email: str) -> int:
        """Delete every message ``email`` sent or received (for both participants, with their
        conversations); how many. Messages stored after this call began are kept."""
        upto = int(await self._redis.get(keys.MESSAGE_ID_COUNTER) or 0)
        index = keys.user_messages_key(email)
        erased = 0
        while True:
            members: Any = await self._redis.zrangebyscore(index, "-inf", upto, start=0, num=100)
            ids = [int(member) for member in members]
            if not ids:
                break
            found = await self._messages.messages(ids)
            for message in found:
                erased += int(await self._messages.delete(message))
            gone = set(ids) - {message.id for message in found}
            if gone:  # index entries without a readable message
                await self._redis.zrem(index, *(str(i) for i in gone))
        await self._drop_empty_conversations(email)
        return erased

    async def _drop_empty_conversations(self, email: str) -> None:
        """Conversations of ``email`` left without messages: hash and list entries removed."""
        conversations: Any = await self._redis.smembers(keys.user_conversations_key(email))
        for conversation in (decoding.text(c) for c in conversations):
            try:
                peer = keys.peer_in(conversation, email)
            except ValueError:
                continue
            if await self._redis.zcard(keys.conversation_messages_key(email, peer)):
                continue
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(conversation)
                for user in {email, peer}:
                    pipe.srem(keys.user_conversations_key(user), conversation)
                    pipe.zrem(keys.user_conversations_by_time_key(user), conversation)
                await pipe.execute()
