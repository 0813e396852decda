"""UserService's Redis keys (DB 0) and their serialisation; every key name is built here.

    user:{email}            string  JSON {name, email, password (Argon2id), created_at, updated_at,
                                    id (account id), token_version}
    users                   zset    every registered email, score 0 (lexical order for listing)
    account_id_counter      string  INCRed for the sequence part of every new account id
    outbox:accounts         stream  deleted accounts whose data the other services still erase
    outbox:accounts:dead    stream  erasures given up on (dead letters)
    login_failures:{email}  string  sign-in attempts not yet followed by a success; expires
    login_clients:{client}  string  sign-in attempts from one client host in the window; expires

Emails are normalised before they reach this module; client hosts are bounded and cleaned.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.common.delivery import OUTBOX_LUA, outbox_lua_args

logger = logging.getLogger(__name__)

USERS_INDEX = "users"
ACCOUNT_ID_COUNTER = "account_id_counter"
ACCOUNTS_OUTBOX = "outbox:accounts"
ACCOUNTS_DEAD_LETTERS = "outbox:accounts:dead"
MAX_CLIENT_CHARS = 64


def user_key(email: str) -> str:
    return f"user:{email}"


def failures_key(email: str) -> str:
    return f"login_failures:{email}"


def client_key(client: str) -> str:
    return f"login_clients:{client}"


def clean_client(client: str) -> str:
    """A client host safe to use as a key part: printable ASCII without spaces, bounded."""
    cleaned = "".join(c for c in client if c.isascii() and c.isprintable() and c != " ")
    return cleaned[:MAX_CLIENT_CHARS] or "unknown"


def _text(raw: str | bytes) -> str:
    # The client decodes replies; typeshed still says bytes | str.
    return raw if isinstance(raw, str) else raw.decode("utf-8")


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix and millisecond precision."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class StoredUser:
    """A user record as stored, password hash included; it never leaves the service layer."""

    name: str
    email: str
    password_hash: str = field(repr=False)
    created_at: datetime
    updated_at: datetime
    # The account id (never reused; "" in a record written before ids existed) and the version
    # every valid token of the account carries (raised to revoke all earlier tokens).
    account_id: str = ""
    token_version: int = 1
    # The document this record was read from, for compare-and-set updates.
    revision: str = field(default="", repr=False, compare=False)

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "name": self.name,
            "email": self.email,
            "password": self.password_hash,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }
        if self.account_id:
            document["id"] = self.account_id
            document["token_version"] = self.token_version
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> StoredUser:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            name=str(data["name"]),
            email=str(data["email"]),
            password_hash=str(data["password"]),
            created_at=parse_time(str(data["created_at"])),
            updated_at=parse_time(str(data["updated_at"])),
            account_id=str(data.get("id", "")),
            token_version=int(data.get("token_version", 1)),
            revision=raw,
        )


@dataclass(frozen=True)
class Counter:
    """A throttling counter after an increment: its value and seconds until it resets."""

    count: int
    ttl: int


# The document and its index entry are written together or not at all.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
"""

# Removes both, if the document is still the one read (ARGV[2]), and records the deleted
# account in the outbox (KEYS[3]) so the other services erase its data. The ZREM also repairs
# an index entry left without its document.
_DELETE = (
    OUTBOX_LUA
    + """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if current ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
outbox_xadd(KEYS[3], ARGV, 3)
return 1
"""
)

# Compare-and-set on the whole document, so a concurrent change or deletion is never overwritten.
_REPLACE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# A fixed window: the expiry is set by the first increment and never extended.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class UserStore:
    """Users and sign-in counters in one Redis logical database."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._delete = redis.register_script(_DELETE)
        self._replace = redis.register_script(_REPLACE)
        self._hit = redis.register_script(_HIT)

    async def ping(self) -> bool:
        """Whether Redis answers; False (not an error) when it does not."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError) as exc:
            logger.warning("redis ping failed: %s", exc)
            return False

    async def create(self, user: StoredUser) -> bool:
        """Store a new user and index it; False (nothing written) if the email is taken."""
        created = await self._create(
            keys=[user_key(user.email), USERS_INDEX], args=[user.to_json(), user.email]
        )
        return bool(created)

    async def get(self, email: str) -> StoredUser | None:
        raw = await self._redis.get(user_key(email))
        return None if raw is None else StoredUser.from_json(_text(raw))

    async def exists(self, email: str) -> bool:
        return bool(await self._redis.exists(user_key(email)))

    async def replace(self, current: StoredUser, updated: StoredUser) -> bool:
        """Write ``updated`` if the stored document is still ``current``'s; else False."""
        if current.email != updated.email or not current.revision:
            raise ValueError("replace needs a record read from the store, under the same email")
        replaced = await self._replace(
            keys=[user_key(current.email)], args=[current.revision, updated.to_json()]
        )
        return bool(replaced)

    async def new_account_id(self) -> str:
        """A fresh account id: 16 hex digits of a sequence that never decreases (so later
        accounts sort after earlier ones) and 16 random hex digits (so ids are not guessable)."""
        sequence = int(await self._redis.incr(ACCOUNT_ID_COUNTER))
        return f"{sequence:016x}{secrets.token_hex(8)}"

    async def delete(self, user: StoredUser) -> bool:
        """Remove the user read as ``user`` and its index entry, and queue the erasure of its
        account's data in one script; False if the document changed or is gone meanwhile
        (an index entry left without its document is removed then)."""
        event = {"email": user.email, "account_id": user.account_id}
        removed = await self._delete(
            keys=[user_key(user.email), USERS_INDEX, ACCOUNTS_OUTBOX],
            args=[user.email, user.revision, *outbox_lua_args(event)],
        )
        return bool(removed)

    async def list_page(self, offset: int, size: int) -> tuple[list[StoredUser], int, int]:
        """Users at ranks [offset, offset + size) in email order; also how many ranks were
        read and the total number of users (an index entry without a document is skipped)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrange(USERS_INDEX, offset, offset + size - 1)
            pipe.zcard(USERS_INDEX)
            emails, total = await pipe.execute()
        if not emails:
            return [], 0, int(total)
        documents = await self._redis.mget([user_key(email) for email in emails])
        users = [StoredUser.from_json(_text(raw)) for raw in documents if raw is not None]
        return users, len(emails), int(total)

    async def count_login_attempt(self, email: str, window_seconds: int) -> Counter:
        return await self._count(failures_key(email), window_seconds)

    async def count_client_attempt(self, client: str, window_seconds: int) -> Counter:
        return await self._count(client_key(clean_client(client)), window_seconds)

    async def clear_login_failures(self, email: str) -> None:
        await self._redis.delete(failures_key(email))

    async def _count(self, key: str, window_seconds: int) -> Counter:
        count, ttl = await self._hit(keys=[key], args=[window_seconds])
        return Counter(int(count), int(ttl))
