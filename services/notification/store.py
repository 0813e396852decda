"""NotificationService's Redis storage (DB 2, or a Valkey Cluster): reads and the atomic writes.

Key names (both layouts) live in services.notification.keys, the scripts in
services.notification.lua and the stored forms in services.notification.records.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from services.common.metrics import OutboxMetrics
from services.common.outbox import outbox_lua_args
from services.common.redis import pipelined_script
from services.notification import keys, lua
from services.notification.models import (
    CreateResult,
    NewNotification,
    Notification,
)
from services.notification.records import (
    decode_notification,
    decode_notifications,
    encode_notification,
    outbox_event,
)

__all__ = ["DEDUPE_TTL_SECONDS", "RedisNotificationStore"]

logger = logging.getLogger(__name__)

DEDUPE_TTL_SECONDS: Final = 7 * 24 * 3600
SUBSCRIBED: Final = "1"
UNSUBSCRIBED: Final = "0"

_UNREAD_SUFFIX: Final = '"read":false}'
_READ_SUFFIX: Final = '"read":true}'
_STORED_PREFIX: Final = '{"id":"'


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_prefix(notification_id: str) -> str:
    return '{"id":' + json.dumps(notification_id) + ","


class RedisNotificationStore:
    """Notifications and subscriptions in one Redis database; every multi-key write is one script.

    ``redis`` must decode replies to str and must not retry commands by itself
    (services.common.redis.create_redis): the scripts are idempotent per message id, but a
    blind re-send of other writes is not this class's decision.

    ``layout`` names the keys: keys.STANDALONE (DB 2, today's names) or, on a Valkey Cluster
    (a RedisCluster client), keys.CLUSTER, where every script touches the keys of one
    receiver's bucket (one slot) and a batch is split into one script per bucket.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        retention: int,
        dedupe_ttl_seconds: int = DEDUPE_TTL_SECONDS,
        layout: keys.Layout = keys.STANDALONE,
    ) -> None:
        if retention < 1 or dedupe_ttl_seconds < 1:
            raise ValueError("retention and dedupe_ttl_seconds must be at least 1")
        self._redis = redis
        self._keys = layout
        self._outboxes = {stream: OutboxMetrics(stream) for stream in layout.streams}
        self.retention = retention
        self._dedupe_ttl = dedupe_ttl_seconds
        self._create = pipelined_script(redis, lua.CREATE)
        self._create_many = pipelined_script(redis, lua.CREATE_MANY)
        self._mark_read = pipelined_script(redis, lua.MARK_READ)
        self._mark_all_read = pipelined_script(redis, lua.MARK_ALL_READ)
        self._claim = pipelined_script(redis, lua.CLAIM)
        self._erase = pipelined_script(redis, lua.ERASE)
        self._page = pipelined_script(redis, lua.PAGE)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def create(self, new: NewNotification) -> CreateResult:
        """Store the notification of a message once, and queue its push, atomically.

        A repeat for the same message returns the stored notification (or, if retention has
        already dropped it, the one the request describes) with created=False; an unsubscribed
        receiver gets nothing stored and nothing pushed.
        """
        notification, script_keys, item_args = self._item(new)
        reply: list[Any] = await self._create(keys=script_keys, args=[*self._common(), *item_args])
        return self._result(new, notification, reply)

    async def create_many(self, batch: Sequence[NewNotification]) -> list[CreateResult]:
        """:meth:`create` of each notification, in order, in one round trip (one script per
        group of receivers sharing a slot - one in the standalone layout - sent concurrently;
        each item has the outcome it would have alone, a repeat within the batch included)."""
        if not batch:
            return []
        groups: dict[int, list[int]] = {}
        for at, new in enumerate(batch):
            groups.setdefault(self._keys.group(new.receiver_email), []).append(at)
        if len(groups) == 1:
            return await self._create_group(batch)
        replies = await asyncio.gather(
            *(self._create_group([batch[at] for at in members]) for members in groups.values())
        )
        results: list[CreateResult | None] = [None] * len(batch)
        for members, group_results in zip(groups.values(), replies, strict=True):
            for at, result in zip(members, group_results, strict=True):
                results[at] = result
        return [result for result in results if result is not None]

    async def _create_group(self, batch: Sequence[NewNotification]) -> list[CreateResult]:
        """:meth:`create` of each notification of ``batch`` (receivers of one slot) in order,
        in one script."""
        script_keys: list[str] = []
        script_args: list[Any] = self._common()
        notifications = []
        for new in batch:
            notification, item_keys, item_args = self._item(new)
            notifications.append(notification)
            script_keys += item_keys
            script_args += [len(item_args), *item_args]
        replies: list[Any] = await self._create_many(keys=script_keys, args=script_args)
        return [
            self._result(new, notification, reply)
            for new, notification, reply in zip(batch, notifications, replies, strict=True)
        ]

    def _common(self) -> list[Any]:
        return [self.retention, self._dedupe_ttl, UNSUBSCRIBED]

    def _item(self, new: NewNotification) -> tuple[Notification, list[str], list[str]]:
        """The notification ``new`` stores, and its keys and arguments of lua.CREATE."""
        notification = new.as_notification()
        encoded = encode_notification(notification)
        receiver, layout = new.receiver_email, self._keys
        item_keys = [
            layout.dedupe(receiver, new.message_id),
            layout.subscriptions(receiver),
            layout.notifications(receiver),
            layout.outbox(receiver),
            layout.account(receiver),
        ]
        item_args = [
            new.receiver_email,
            encoded,
            _id_prefix(new.id),
            new.id,
            new.receiver_account_id,
            *outbox_lua_args(outbox_event(notification, encoded, new.receiver_account_id)),
        ]
        return notification, item_keys, item_args

    def _result(
        self, new: NewNotification, notification: Notification, reply: list[Any]
    ) -> CreateResult:
        outcome = _str(reply[0])
        if outcome == "gone":
            logger.info(
                "no notification for message %s: account %s of %s was deleted",
                new.message_id,
                new.receiver_account_id,
                new.receiver_email,
            )
            return CreateResult(None, created=False, subscribed=False)
        if outcome == "unsubscribed":
            return CreateResult(None, created=False, subscribed=False)
        if outcome == "created":
            # the script appended the push with the notification
            self._outboxes[self._keys.outbox(new.receiver_email)].added(1)
            return CreateResult(notification, created=True, subscribed=True)
        stored = decode_notification(_str(reply[1])) if len(reply) > 1 else notification
        return CreateResult(stored, created=False, subscribed=True)

    async def list_all(self, email: str) -> list[Notification]:
        """Every stored notification of ``email``, newest first (at most ``retention``)."""
        items = await self._redis.lrange(self._keys.notifications(email), 0, -1)
        notifications = []
        for item in items:
            try:
                notifications.append(decode_notification(_str(item)))
            except ValueError as exc:
                logger.warning("skipping a malformed notification of %s: %s", email, exc)
        return notifications

    async def list_page(
        self, email: str, *, unread_only: bool, offset: int, size: int
    ) -> tuple[list[Notification], int, int]:
        """The notifications of ``email`` (unread ones only, if asked) at [offset, offset +
        size), newest first; also how many there are to list and how many are unread.

        One round trip: a script counts and slices the list by each item's stored form (``id``
        first, ``read`` last) and returns only the page, the only items decoded here. Should
        an item not have that form, or an item of the page not decode, the whole list is read
        and decoded instead, and malformed items are skipped and not counted. (An item in the
        stored form that is not a notification - only a hand edit makes one - is counted
        while it is on no page being read.)"""
        page = await self._page_of(email, unread_only, offset, size, "")
        assert page is not None  # no account to check
        return page

    async def owned_page(
        self, email: str, account_id: str, *, unread_only: bool, offset: int, size: int
    ) -> tuple[list[Notification], int, int] | None:
        """:meth:`list_page` for the account ``account_id``, which must own ``email``'s
        notifications: None if that account was deleted (:meth:`claim` says False).

        The ownership check rides with the page read (one round trip) while the data is
        already the account's; otherwise (its first read, an earlier account's data to erase,
        a deleted account) :meth:`claim` runs first, then the page is read."""
        page = await self._page_of(email, unread_only, offset, size, account_id)
        if page is None:
            if not await self.claim(email, account_id):
                return None
            page = await self.list_page(email, unread_only=unread_only, offset=offset, size=size)
        return page

    async def _page_of(
        self, email: str, unread_only: bool, offset: int, size: int, account_id: str
    ) -> tuple[list[Notification], int, int] | None:
        """:meth:`list_page`; None if ``account_id`` (when given) does not own the list as it
        stands (lua.PAGE)."""
        script_keys = [self._keys.notifications(email)]
        args: list[str | int] = [
            _UNREAD_SUFFIX,
            _READ_SUFFIX,
            "1" if unread_only else "0",
            offset,
            size,
            _STORED_PREFIX,
        ]
        if account_id:
            script_keys.append(self._keys.account(email))
            args.append(account_id)
        reply: Any = await self._page(keys=script_keys, args=args)
        if not reply:
            return None
        listed, unread, unknown, items = reply
        if not int(unknown):
            try:
                page = decode_notifications([_str(item) for item in items])
                return page, int(listed), int(unread)
            except ValueError as exc:
                logger.warning("a listed notification of %s is malformed: %s", email, exc)
        stored = await self.list_all(email)
        unread_ones = [n for n in stored if not n.read]
        chosen = unread_ones if unread_only else stored
        return chosen[offset : offset + size], len(chosen), len(unread_ones)

    async def mark_read(self, email: str, notification_id: str) -> Notification | None:
        """Mark one notification read; the notification, or None if ``email`` has no such id."""
        reply: str | None = await self._mark_read(
            keys=[self._keys.notifications(email)],
            args=[_id_prefix(notification_id), _UNREAD_SUFFIX, _READ_SUFFIX],
        )
        return decode_notification(reply) if reply else None

    async def mark_all_read(self, email: str) -> int:
        """Mark every notification of ``email`` read; how many were unread."""
        marked = await self._mark_all_read(
            keys=[self._keys.notifications(email)], args=[_UNREAD_SUFFIX, _READ_SUFFIX]
        )
        return int(marked)

    async def claim(self, email: str, account_id: str) -> bool:
        """Make ``account_id`` the owner of ``email``'s notifications and subscription here,
        erasing those of an earlier, deleted account first; False if ``account_id`` itself
        was deleted."""
        outcome = await self._claim(
            keys=[
                self._keys.account(email),
                self._keys.notifications(email),
                self._keys.subscriptions(email),
            ],
            args=[email, account_id],
        )
        return _str(outcome) == "ok"

    async def erase_account(self, email: str, account_id: str) -> int:
        """Erase the notifications and subscription of a deleted account (idempotent); how
        many notifications were removed (0 if a later account owns the email)."""
        erased = await self._erase(
            keys=[
                self._keys.account(email),
                self._keys.notifications(email),
                self._keys.subscriptions(email),
            ],
            args=[email, account_id],
        )
        return max(0, int(erased))

    async def is_subscribed(self, email: str) -> bool:
        state = await self._redis.hget(self._keys.subscriptions(email), email)
        return state is None or _str(state) != UNSUBSCRIBED

    async def set_subscribed(self, email: str, subscribed: bool) -> None:
        value = SUBSCRIBED if subscribed else UNSUBSCRIBED
        await self._redis.hset(self._keys.subscriptions(email), email, value)
