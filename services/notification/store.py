"""NotificationService's Redis layout (DB 2): key names, serialisation and atomic Lua scripts.

Keys (every email in a key was normalised first, so it holds no ':' or glob character):

    notifications:{email}                list of notification JSON objects, newest first, at most
                                         `retention` long (LPUSH + LTRIM in one script)
    subscriptions                        hash email -> "1" subscribed / "0" unsubscribed;
                                         a missing field means subscribed (the default)
    account:{email}                      string: id of the account that owns the email's list
                                         and subscription here ("{id}:erased" once that account
                                         was deleted and its data erased)
    notification:for_message:{msg id}    string: the notification id created for that message
                                         (dedupe key of CreateNotification; expires after 7 days)
    outbox:frontend                      stream: notifications still to push to FrontendService
    outbox:frontend:dead                 stream: pushes given up on (dead letters)

A notification is stored as compact JSON with its keys in a fixed order, ``id`` first and
``read`` last, so the Lua scripts can find one by id and flip its ``read`` flag by comparing
a prefix and a suffix, without decoding and re-encoding JSON (Lua's cjson would round 19-digit
message ids to doubles).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from services.common.outbox import OUTBOX_LUA, outbox_lua_args
from services.notification.models import (
    CreateResult,
    NewNotification,
    Notification,
    format_timestamp,
    parse_timestamp,
)

__all__ = [
    "DEDUPE_TTL_SECONDS",
    "OUTBOX_DEAD_LETTER_STREAM",
    "OUTBOX_STREAM",
    "SUBSCRIPTIONS_KEY",
    "RedisNotificationStore",
    "decode_event",
    "decode_notification",
    "dedupe_key",
    "encode_notification",
    "notifications_key",
    "outbox_event",
]

logger = logging.getLogger(__name__)

SUBSCRIPTIONS_KEY: Final = "subscriptions"
OUTBOX_STREAM: Final = "outbox:frontend"
OUTBOX_DEAD_LETTER_STREAM: Final = "outbox:frontend:dead"
DEDUPE_TTL_SECONDS: Final = 7 * 24 * 3600
SUBSCRIBED: Final = "1"
UNSUBSCRIBED: Final = "0"

_UNREAD_SUFFIX: Final = '"read":false}'
_READ_SUFFIX: Final = '"read":true}'


def notifications_key(email: str) -> str:
    """The list of ``email``'s notifications, newest first."""
    return f"notifications:{email}"


def account_key(email: str) -> str:
    """The id of the account that owns ``email``'s notifications and subscription here."""
    return f"account:{email}"


def dedupe_key(message_id: int) -> str:
    """Marks that the notification of ``message_id`` exists; holds its id."""
    return f"notification:for_message:{message_id}"


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_prefix(notification_id: str) -> str:
    return '{"id":' + json.dumps(notification_id) + ","


def encode_notification(notification: Notification) -> str:
    """The stored JSON: keys in this fixed order (the Lua scripts rely on ``id`` and ``read``)."""
    return json.dumps(
        {
            "id": notification.id,
            "message_id": notification.message_id,
            "sender_email": notification.sender_email,
            "receiver_email": notification.receiver_email,
            "timestamp": format_timestamp(notification.timestamp),
            "preview": notification.preview,
            "sender_name": notification.sender_name,
            "read": notification.read,
        },
        separators=(",", ":"),
    )


def decode_notification(text: str) -> Notification:
    """The notification stored as ``text``; ValueError if it is not one."""
    data: Any = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("a stored notification must be a JSON object")
    nid, message_id, read = data.get("id"), data.get("message_id"), data.get("read")
    sender, receiver, timestamp = (
        data.get("sender_email"),
        data.get("receiver_email"),
        data.get("timestamp"),
    )
    if not (isinstance(nid, str) and isinstance(message_id, int) and isinstance(read, bool)):
        raise ValueError("a stored notification needs a string id, an int message_id, a bool read")
    if not (isinstance(sender, str) and isinstance(receiver, str) and isinstance(timestamp, str)):
        raise ValueError("a stored notification needs string emails and timestamp")
    preview, sender_name = data.get("preview", ""), data.get("sender_name", "")
    if not (isinstance(preview, str) and isinstance(sender_name, str)):
        raise ValueError("a stored notification's preview and sender_name must be strings")
    return Notification(
        nid,
        message_id,
        sender,
        receiver,
        parse_timestamp(timestamp),
        read,
        preview=preview,
        sender_name=sender_name,
    )


def outbox_event(
    notification: Notification, encoded: str, receiver_account_id: str = ""
) -> dict[str, str]:
    """Fields of the outbox entry that makes the relay push ``notification`` to the frontend."""
    event = {
        "id": notification.id,
        "message_id": str(notification.message_id),
        "receiver_email": notification.receiver_email,
        "notification": encoded,
    }
    if receiver_account_id:
        event["receiver_account_id"] = receiver_account_id
    return event


def decode_event(fields: dict[str, str]) -> Notification:
    """The notification an outbox entry carries; ValueError if the entry is malformed."""
    encoded = fields.get("notification")
    if encoded is None:
        raise ValueError("the outbox entry has no 'notification' field")
    notification = decode_notification(encoded)
    if fields.get("id", notification.id) != notification.id:
        raise ValueError("the outbox entry's id differs from its notification's id")
    return notification


# Account ownership of one email's list and subscription: claim(KEYS of account marker, list,
# subscriptions hash; the email; the account id) returns 'ok' (owned by that account, or now
# claimed for it - the data of an earlier, deleted account erased first) or 'stale' (that
# account was deleted: a later one owns the email, or its data was erased). Account ids sort
# by creation, so a later account never loses to an earlier one.
_OWNERSHIP_LUA: Final = """
local function claim(marker_key, list_key, subscriptions_key, email, account_id)
  local marker = redis.call('GET', marker_key)
  if marker then
    local owner, erased = marker, false
    if string.sub(marker, -7) == ':erased' then
      owner, erased = string.sub(marker, 1, -8), true
    end
    if owner == account_id then
      if erased then
        return 'stale'
      end
      return 'ok'
    end
    if owner > account_id then
      return 'stale'
    end
    redis.call('DEL', list_key)
    redis.call('HDEL', subscriptions_key, email)
  end
  redis.call('SET', marker_key, account_id)
  return 'ok'
end
"""

# KEYS: 1 account marker, 2 the list, 3 subscriptions hash. ARGV: 1 email, 2 account id.
_CLAIM_LUA: Final = (
    _OWNERSHIP_LUA
    + """
return claim(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"""
)

# KEYS: 1 account marker, 2 the list, 3 subscriptions hash. ARGV: 1 email, 2 the deleted
# account's id ('' for one from before ids: only unclaimed data is erased).
# Returns the number of notifications removed, or -1 if a later account owns the email.
_ERASE_LUA: Final = """
local marker = redis.call('GET', KEYS[1])
if marker then
  local owner = marker
  if string.sub(marker, -7) == ':erased' then
    owner = string.sub(marker, 1, -8)
  end
  if ARGV[2] == '' or owner > ARGV[2] then
    return -1
  end
end
local erased = redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2] .. ':erased')
end
return erased
"""

# KEYS: 1 dedupe key, 2 subscriptions hash, 3 receiver's list, 4 outbox stream, 5 receiver's
#       account marker.
# ARGV: 1 receiver email, 2 notification JSON, 3 id prefix, 4 retention, 5 dedupe TTL (s),
#       6 notification id, 7 the "unsubscribed" hash value, 8 the receiver's account id (or
#       ''), 9.. the outbox event (outbox.outbox_lua_args).
_CREATE_LUA: Final = (
    OUTBOX_LUA
    + _OWNERSHIP_LUA
    + """
local existing = redis.call('GET', KEYS[1])
if existing then
  local prefix = ARGV[3]
  for _, item in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    if string.sub(item, 1, #prefix) == prefix then
      return {'duplicate', item}
    end
  end
  return {'duplicate'}
end
if ARGV[8] ~= '' and claim(KEYS[5], KEYS[3], KEYS[2], ARGV[1], ARGV[8]) == 'stale' then
  return {'gone'}
end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[7] then
  return {'unsubscribed'}
end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
redis.call('SET', KEYS[1], ARGV[6], 'EX', tonumber(ARGV[5]))
outbox_xadd(KEYS[4], ARGV, 9)
return {'created', ARGV[2]}
"""
)

# KEYS: 1 the user's list. ARGV: 1 id prefix, 2 unread suffix, 3 read suffix.
# Returns the notification (now read), or false when the list has no such id.
_MARK_READ_LUA: Final = """
local prefix, unread, read = ARGV[1], ARGV[2], ARGV[3]
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #prefix) == prefix then
    local keep = #item - #unread
    if keep >= 0 and string.sub(item, keep + 1) == unread then
      local updated = string.sub(item, 1, keep) .. read
      redis.call('LSET', KEYS[1], i - 1, updated)
      return updated
    end
    return item
  end
end
return false
"""

# KEYS: 1 the user's list. ARGV: 1 unread suffix, 2 read suffix. Returns how many changed.
_MARK_ALL_READ_LUA: Final = """
local unread, read = ARGV[1], ARGV[2]
local marked = 0
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local keep = #item - #unread
  if keep >= 0 and string.sub(item, keep + 1) == unread then
    redis.call('LSET', KEYS[1], i - 1, string.sub(item, 1, keep) .. read)
    marked = marked + 1
  end
end
return marked
"""


class RedisNotificationStore:
    """Notifications and subscriptions in one Redis database; every multi-key write is one script.

    ``redis`` must decode replies to str and must not retry commands by itself
    (services.common.redis.create_redis): the scripts are idempotent per message id, but a
    blind re-send of other writes is not this class's decision.
    """

    def __init__(
        self, redis: Redis, *, retention: int, dedupe_ttl_seconds: int = DEDUPE_TTL_SECONDS
    ) -> None:
        if retention < 1 or dedupe_ttl_seconds < 1:
            raise ValueError("retention and dedupe_ttl_seconds must be at least 1")
        self._redis = redis
        self.retention = retention
        self._dedupe_ttl = dedupe_ttl_seconds
        self._create: AsyncScript = redis.register_script(_CREATE_LUA)
        self._mark_read: AsyncScript = redis.register_script(_MARK_READ_LUA)
        self._mark_all_read: AsyncScript = redis.register_script(_MARK_ALL_READ_LUA)
        self._claim: AsyncScript = redis.register_script(_CLAIM_LUA)
        self._erase: AsyncScript = redis.register_script(_ERASE_LUA)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def create(self, new: NewNotification) -> CreateResult:
        """Store the notification of a message once, and queue its push, atomically.

        A repeat for the same message returns the stored notification (or, if retention has
        already dropped it, the one the request describes) with created=False; an unsubscribed
        receiver gets nothing stored and nothing pushed.
        """
        notification = new.as_notification()
        encoded = encode_notification(notification)
        reply: list[str] = await self._create(
            keys=[
                dedupe_key(new.message_id),
                SUBSCRIPTIONS_KEY,
                notifications_key(new.receiver_email),
                OUTBOX_STREAM,
                account_key(new.receiver_email),
            ],
            args=[
                new.receiver_email,
                encoded,
                _id_prefix(new.id),
                self.retention,
                self._dedupe_ttl,
                new.id,
                UNSUBSCRIBED,
                new.receiver_account_id,
                *outbox_lua_args(outbox_event(notification, encoded, new.receiver_account_id)),
            ],
        )
        outcome = reply[0]
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
            return CreateResult(notification, created=True, subscribed=True)
        stored = decode_notification(reply[1]) if len(reply) > 1 else notification
        return CreateResult(stored, created=False, subscribed=True)

    async def list_all(self, email: str) -> list[Notification]:
        """Every stored notification of ``email``, newest first (at most ``retention``)."""
        items = await self._redis.lrange(notifications_key(email), 0, -1)
        notifications = []
        for item in items:
            try:
                notifications.append(decode_notification(_str(item)))
            except ValueError as exc:
                logger.warning("skipping a malformed notification of %s: %s", email, exc)
        return notifications

    async def mark_read(self, email: str, notification_id: str) -> Notification | None:
        """Mark one notification read; the notification, or None if ``email`` has no such id."""
        reply: str | None = await self._mark_read(
            keys=[notifications_key(email)],
            args=[_id_prefix(notification_id), _UNREAD_SUFFIX, _READ_SUFFIX],
        )
        return decode_notification(reply) if reply else None

    async def mark_all_read(self, email: str) -> int:
        """Mark every notification of ``email`` read; how many were unread."""
        marked = await self._mark_all_read(
            keys=[notifications_key(email)], args=[_UNREAD_SUFFIX, _READ_SUFFIX]
        )
        return int(marked)

    async def claim(self, email: str, account_id: str) -> bool:
        """Make ``account_id`` the owner of ``email``'s notifications and subscription here,
        erasing those of an earlier, deleted account first; False if ``account_id`` itself
        was deleted."""
        outcome = await self._claim(
            keys=[account_key(email), notifications_key(email), SUBSCRIPTIONS_KEY],
            args=[email, account_id],
        )
        return _str(outcome) == "ok"

    async def erase_account(self, email: str, account_id: str) -> int:
        """Erase the notifications and subscription of a deleted account (idempotent); how
        many notifications were removed (0 if a later account owns the email)."""
        erased = await self._erase(
            keys=[account_key(email), notifications_key(email), SUBSCRIPTIONS_KEY],
            args=[email, account_id],
        )
        return max(0, int(erased))

    async def is_subscribed(self, email: str) -> bool:
        state = await self._redis.hget(SUBSCRIPTIONS_KEY, email)
        return state is None or _str(state) != UNSUBSCRIBED

    async def set_subscribed(self, email: str, subscribed: bool) -> None:
        value = SUBSCRIBED if subscribed else UNSUBSCRIBED
        await self._redis.hset(SUBSCRIPTIONS_KEY, email, value)
