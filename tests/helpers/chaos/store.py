"""Reads back everything the system stored, straight from Valkey, for the checker.

The layout is the services' own (see services/message/keys.py and
services/notification/store.py): MessageService in DB 1, NotificationService in DB 2. Streams
and their consumer groups are discovered (``SCAN TYPE stream``), so the drain check covers
every outbox and delivery stream whatever their names; streams whose name contains ``dead``
(``outbox:notifications:dead``, ``outbox:frontend:dead``) hold dead letters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from tests.helpers.chaos.history import nonce_of

USER_DB = 0
MESSAGE_DB = 1
NOTIFICATION_DB = 2
DATABASES = (USER_DB, MESSAGE_DB, NOTIFICATION_DB)
DEAD_MARK = "dead"


@dataclass(frozen=True)
class StoredMessage:
    id: int
    sender: str
    receiver: str
    content: str

    @property
    def nonce(self) -> str | None:
        return nonce_of(self.content)


@dataclass(frozen=True)
class StoredNotification:
    id: str
    message_id: int
    receiver: str
    listed_for: str  # the user whose list holds it
    read: bool


@dataclass(frozen=True)
class GroupState:
    db: int
    stream: str
    group: str
    pending: int
    lag: int | None
    behind: bool  # entries not yet read by the group

    @property
    def drained(self) -> bool:
        return self.pending == 0 and not self.behind


@dataclass(frozen=True)
class DeadLetter:
    db: int
    stream: str
    id: str
    fields: dict[str, str]

    @property
    def reason(self) -> str:
        return next((v for k, v in self.fields.items() if "reason" in k), "")

    def describe(self) -> str:
        """``stream [message_id / id]: reason``, the reason on one line, shortened."""
        what = self.fields.get("message_id") or self.fields.get("id") or self.id
        reason = " ".join(self.reason.split())
        return f"{self.stream} [{what}]: {reason[:200]}"


@dataclass
class Snapshot:
    """Everything relevant in Valkey at one moment."""

    messages: dict[int, StoredMessage] = field(default_factory=dict)
    notifications: list[StoredNotification] = field(default_factory=list)
    conversations: set[str] = field(default_factory=set)  # conversation hash keys
    conversation_messages: dict[str, set[int]] = field(default_factory=dict)
    user_messages: dict[str, set[int]] = field(default_factory=dict)
    user_conversations: dict[str, set[str]] = field(default_factory=dict)
    groups: list[GroupState] = field(default_factory=list)
    streams_without_group: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dbsize: dict[int, int] = field(default_factory=dict)

    @property
    def drained(self) -> bool:
        """No stream entry left to deliver: every group has read everything and acked it."""
        return all(g.drained for g in self.groups) and not self.streams_without_group

    def pending(self) -> int:
        return sum(g.pending for g in self.groups)

    def notifications_of(self, email: str) -> list[StoredNotification]:
        return [n for n in self.notifications if n.listed_for == email]


def _client(url: str, db: int) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        url, db=db, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
    )


class StoreReader:
    """Snapshots of the system's Valkey at ``url``."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def dbsize(self) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for db in DATABASES:
            async with _client(self._url, db) as client:
                sizes[db] = int(await client.dbsize())
        return sizes

    async def snapshot(self) -> Snapshot:
        snap = Snapshot()
        async with _client(self._url, MESSAGE_DB) as client:
            await self._messages(client, snap)
        async with _client(self._url, NOTIFICATION_DB) as client:
            await self._notifications(client, snap)
        for db in DATABASES:
            async with _client(self._url, db) as client:
                await self._streams(client, db, snap)
                snap.dbsize[db] = int(await client.dbsize())
        return snap

    async def _messages(self, client: redis.asyncio.Redis, snap: Snapshot) -> None:
        keys = [k async for k in client.scan_iter(match="message:*", count=1000)]
        values = await client.mget(keys) if keys else []
        for key, raw in zip(keys, values, strict=True):
            if raw is None:
                continue
            data: Any = json.loads(raw)
            snap.messages[int(key.split(":", 1)[1])] = StoredMessage(
                int(data["id"]), data["sender_email"], data["receiver_email"], data["content"]
            )
        async for key in client.scan_iter(match="conversation:*", count=1000):
            if key.endswith(":messages"):
                members: list[Any] = await client.zrange(key, 0, -1)
                snap.conversation_messages[key.removesuffix(":messages")] = {
                    int(m) for m in members
                }
            else:
                snap.conversations.add(key)
        async for key in client.scan_iter(match="user:*", count=1000):
            email, _, kind = key.removeprefix("user:").rpartition(":")
            if kind == "messages":
                ids: list[Any] = await client.zrange(key, 0, -1)
                snap.user_messages[email] = {int(m) for m in ids}
            elif kind == "conversations":
                conversations: set[Any] = await client.smembers(key)
                snap.user_conversations[email] = {str(c) for c in conversations}

    async def _notifications(self, client: redis.asyncio.Redis, snap: Snapshot) -> None:
        async for key in client.scan_iter(match="notifications:*", count=1000):
            email = key.removeprefix("notifications:")
            for raw in await client.lrange(key, 0, -1):
                data: Any = json.loads(raw)
                snap.notifications.append(
                    StoredNotification(
                        str(data["id"]),
                        int(data["message_id"]),
                        data["receiver_email"],
                        email,
                        bool(data["read"]),
                    )
                )

    async def _streams(self, client: redis.asyncio.Redis, db: int, snap: Snapshot) -> None:
        async for key in client.scan_iter(_type="stream", count=1000):
            if DEAD_MARK in key.lower():
                entries: Any = await client.xrange(key)
                for entry_id, fields in entries:
                    snap.dead_letters.append(DeadLetter(db, key, entry_id, dict(fields)))
                continue
            groups = await client.xinfo_groups(key)
            if not groups:
                if int(await client.xlen(key)):
                    snap.streams_without_group.append(f"db{db} {key}")
                continue
            info = await client.xinfo_stream(key)
            last = info.get("last-generated-id")
            for group in groups:
                lag = group.get("lag")
                behind = lag != 0 if lag is not None else group["last-delivered-id"] != last
                snap.groups.append(
                    GroupState(db, key, group["name"], int(group["pending"]), lag, bool(behind))
                )
