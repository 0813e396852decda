"""UserService's Redis keys (DB 0) and their serialisation; every key name is built here.

    user:{email}                    string  JSON {name, email, password (Argon2id), created_at,
                                            updated_at[, id (account id), token_version][, role]}
    users                           zset    every registered email, score 0 (lexical order)
    account_id_counter              string  INCRed for the sequence part of every new account id
    outbox:accounts                 stream  deleted accounts whose data the other services still
                                            erase
    outbox:accounts:dead            stream  erasures given up on (dead letters)
    login_failures:{email}:{client} string  failed sign-ins to one account from one client; expires
                                            (kept when the account is deleted: it only expires)
    login_account:{email}           hash    failed sign-ins to one account from anywhere and the
                                            back-off they impose ({failures, until_ms}); expires
    login_known:{email}             set     client hosts that signed in to the account; expires
    login_clients:{client}          string  failed sign-ins from one client host; expires
    register_clients:{client}       string  registrations from one client host; expires

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

from services.common.outbox import OUTBOX_LUA, outbox_lua_args
from services.common.redis import FIXED_WINDOW_HIT_LUA

logger = logging.getLogger(__name__)

USERS_INDEX = "users"
ACCOUNT_ID_COUNTER = "account_id_counter"
ACCOUNTS_OUTBOX = "outbox:accounts"
ACCOUNTS_DEAD_LETTERS = "outbox:accounts:dead"
MAX_CLIENT_CHARS = 64


def user_key(email: str) -> str:
    return f"user:{email}"


def failures_key(email: str, client: str) -> str:
    """Failures for one account from one client (an email holds no ':', so this splits)."""
    return f"login_failures:{email}:{clean_client(client)}"


def account_key(email: str) -> str:
    return f"login_account:{email}"


def known_clients_key(email: str) -> str:
    return f"login_known:{email}"


def client_key(client: str) -> str:
    return f"login_clients:{clean_client(client)}"


def register_key(client: str) -> str:
    return f"register_clients:{clean_client(client)}"


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
    # "operator" may list every user; "" for everyone else (granted only by the operators CLI).
    role: str = ""
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
        if self.role:
            document["role"] = self.role
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
            role=str(data.get("role", "")),
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

# Removes both, if the document is still the one read (ARGV[2]), with the account's sign-in
# back-off and known clients (KEYS[4], KEYS[5]: a later account of the email starts afresh),
# and records the deleted account in the outbox (KEYS[3]) so the other services erase its data.
# The ZREM also repairs an index entry left without its document.
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
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
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


@dataclass(frozen=True)
class LoginPolicy:
    """The numbers the sign-in admission script applies (see services.user.service.LoginLimits)."""

    client_failures: int
    client_window_seconds: int
    pair_failures: int
    pair_window_seconds: int
    account_free_failures: int
    account_base_delay_ms: int
    account_max_delay_ms: int
    account_window_seconds: int
    known_clients: int
    known_client_seconds: int


@dataclass(frozen=True)
class Admission:
    """The outcome of asking to verify a password: admitted, or refused for ``retry_after`` s.

    ``scope`` says which limit refused it: ``client``, ``pair`` or ``account``.
    """

    admitted: bool
    retry_after: int = 0
    scope: str = ""


# Sign-in admission, checked and reserved atomically so parallel guesses cannot exceed a limit.
# KEYS: 1 login_clients:{client}, 2 login_failures:{email}:{client}, 3 login_account:{email},
#       4 login_known:{email}.
# ARGV: 1 client limit, 2 client window s, 3 pair limit, 4 pair window s, 5 free account
#       failures, 6 base delay ms, 7 max delay ms, 8 account window s, 9 client host.
# Each admitted attempt is counted as a failure in advance; _LOGIN_SUCCEEDED takes it back.
# Returns {1} (admitted) or {0, retry_after_seconds, scope}.
_LOGIN_ADMIT = """
local function remaining(key)
  local ttl = redis.call('TTL', key)
  if ttl < 1 then return 1 end
  return ttl
end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return {0, remaining(KEYS[1]), 'client'}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[3]) then
  return {0, remaining(KEYS[2]), 'pair'}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local known = redis.call('SISMEMBER', KEYS[4], ARGV[9]) == 1
local failures = tonumber(redis.call('HGET', KEYS[3], 'failures') or '0')
if not known then
  local untl = tonumber(redis.call('HGET', KEYS[3], 'until_ms') or '0')
  if untl > now then
    return {0, math.ceil((untl - now) / 1000), 'account'}
  end
end
local free = tonumber(ARGV[5])
if failures >= free then
  local delay = tonumber(ARGV[6]) * (2 ^ math.min(failures - free, 30))
  delay = math.min(delay, tonumber(ARGV[7]))
  redis.call('HSET', KEYS[3], 'until_ms', now + delay)
end
redis.call('HINCRBY', KEYS[3], 'failures', 1)
redis.call('EXPIRE', KEYS[3], ARGV[8])
for _, spec in ipairs({{KEYS[1], ARGV[2]}, {KEYS[2], ARGV[4]}}) do
  redis.call('INCR', spec[1])
  if redis.call('TTL', spec[1]) < 0 then
    redis.call('EXPIRE', spec[1], spec[2])
  end
end
return {1}
"""

# A verified password: the attempt was not a failure after all.
# KEYS: 1 login_clients:{client}, 2 login_failures:{email}:{client}, 3 login_account:{email},
#       4 login_known:{email}. ARGV: 1 client host, 2 most known clients, 3 known-client TTL s.
_LOGIN_SUCCEEDED = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SADD', KEYS[4], ARGV[1])
if redis.call('SCARD', KEYS[4]) > tonumber(ARGV[2]) then
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if other ~= ARGV[1] and redis.call('SCARD', KEYS[4]) > tonumber(ARGV[2]) then
      redis.call('SREM', KEYS[4], other)
    end
  end
end
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 1
"""


class UserStore:
    """Users and sign-in counters in one Redis logical database."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._delete = redis.register_script(_DELETE)
        self._replace = redis.register_script(_REPLACE)
        self._hit = redis.register_script(FIXED_WINDOW_HIT_LUA)
        self._admit = redis.register_script(_LOGIN_ADMIT)
        self._succeeded = redis.register_script(_LOGIN_SUCCEEDED)

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
            keys=[
                user_key(user.email),
                USERS_INDEX,
                ACCOUNTS_OUTBOX,
                account_key(user.email),
                known_clients_key(user.email),
            ],
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

    def _login_keys(self, email: str, client: str) -> list[str]:
        return [
            client_key(client),
            failures_key(email, client),
            account_key(email),
            known_clients_key(email),
        ]

    async def admit_login(self, email: str, client: str, policy: LoginPolicy) -> Admission:
        """Whether a password may be checked now; an admitted attempt counts as a failure
        until :meth:`login_succeeded` takes it back."""
        reply = await self._admit(
            keys=self._login_keys(email, client),
            args=[
                policy.client_failures,
                policy.client_window_seconds,
                policy.pair_failures,
                policy.pair_window_seconds,
                policy.account_free_failures,
                policy.account_base_delay_ms,
                policy.account_max_delay_ms,
                policy.account_window_seconds,
                clean_client(client),
            ],
        )
        if int(reply[0]) == 1:
            return Admission(True)
        return Admission(False, int(reply[1]), _text(reply[2]))

    async def login_succeeded(self, email: str, client: str, policy: LoginPolicy) -> None:
        """Undo the failure counted at admission, reset the account's back-off and remember
        the client as one the account signs in from."""
        await self._succeeded(
            keys=self._login_keys(email, client),
            args=[clean_client(client), policy.known_clients, policy.known_client_seconds],
        )

    async def count_registration(self, client: str, window_seconds: int) -> Counter:
        """One more registration from ``client`` in its fixed window."""
        return await self._count(register_key(client), window_seconds)

    async def _count(self, key: str, window_seconds: int) -> Counter:
        count, ttl = await self._hit(keys=[key], args=[window_seconds])
        return Counter(int(count), int(ttl))
