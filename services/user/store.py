"""UserService's Redis storage (DB 0): reads and the atomic writes.

Key names (and the layout) live in services.user.keys, the scripts in services.user.lua and the
stored form in services.user.records. :class:`UserStoreBase` holds what the standalone store
(:class:`RedisUserStore`) and the cluster one (services.user.cluster_store) share: each names
its keys and reads many documents its own way.
"""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.common.metrics import OutboxMetrics
from services.common.outbox import outbox_lua_args
from services.common.redis import FIXED_WINDOW_HIT_LUA, pipelined_command
from services.user import keys, lua
from services.user.models import Admission, Counter, LoginPolicy, StoredUser
from services.user.records import decode_user, encode_user

__all__ = ["RedisUserStore", "UserStoreBase"]

logger = logging.getLogger(__name__)

_OUTBOX: Final = OutboxMetrics(keys.ACCOUNTS_OUTBOX)


def _text(raw: str | bytes) -> str:
    # The client decodes replies; typeshed still says bytes | str.
    return raw if isinstance(raw, str) else raw.decode("utf-8")


class UserStoreBase(ABC):
    """The user documents, their writes (CREATE, REPLACE, DELETE: one script each, in the keys
    :meth:`script_keys` names) and the registration counter, on either layout."""

    _layout: str = "redis"  # in the log line of a failed ping

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._create = redis.register_script(lua.CREATE)
        self._delete = redis.register_script(lua.DELETE)
        self._replace = redis.register_script(lua.REPLACE)
        self._hit = redis.register_script(FIXED_WINDOW_HIT_LUA)

    @abstractmethod
    def _user_key(self, email: str) -> str:
        """The key of the user document of ``email``."""

    @abstractmethod
    def _register_key(self, client: str) -> str:
        """The key of ``client``'s registration counter."""

    @abstractmethod
    def _outbox(self, email: str) -> OutboxMetrics:
        """The metrics of the outbox that the erasure event of ``email`` goes to."""

    @staticmethod
    @abstractmethod
    def script_keys(script: str, email: str, client: str = "") -> list[str]:
        """The KEYS the script ``script`` ('create', 'replace', 'delete', ...) gets for
        ``email`` (and ``client``)."""

    @abstractmethod
    async def _documents(self, keys: list[str]) -> list[Any]:
        """The value of each key, in order (None where missing)."""

    async def ping(self) -> bool:
        """Whether Redis (every master of a cluster) answers; False (not an error) when not."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError) as exc:
            logger.warning("%s ping failed: %s", self._layout, exc)
            return False

    async def create(self, user: StoredUser) -> bool:
        """Store a new user and index it; False (nothing written) if the email is taken."""
        created = await self._create(
            keys=self.script_keys("create", user.email), args=[encode_user(user), user.email]
        )
        return bool(created)

    async def get(self, email: str) -> StoredUser | None:
        # The token check of every user request reads it: through the auto-pipeline.
        raw = await pipelined_command(self._redis, "GET", self._user_key(email))
        return None if raw is None else decode_user(_text(raw))

    async def get_many(self, emails: Sequence[str]) -> list[StoredUser | None]:
        """The user stored under each email, in order, in one round trip (MGET; on a cluster
        one MGET per slot, sent together)."""
        if not emails:
            return []
        documents = await self._documents([self._user_key(email) for email in emails])
        return [None if raw is None else decode_user(_text(raw)) for raw in documents]

    async def exists(self, email: str) -> bool:
        return bool(await self._redis.exists(self._user_key(email)))

    async def replace(self, current: StoredUser, updated: StoredUser) -> bool:
        """Write ``updated`` if the stored document is still ``current``'s; else False."""
        if current.email != updated.email or not current.revision:
            raise ValueError("replace needs a record read from the store, under the same email")
        replaced = await self._replace(
            keys=self.script_keys("replace", current.email),
            args=[current.revision, encode_user(updated)],
        )
        return bool(replaced)

    async def delete(self, user: StoredUser) -> bool:
        """Remove the user read as ``user``, its index entry, back-off and known clients, and
        queue the erasure of its account's data in one script; False if the document changed
        or is gone meanwhile (an index entry left without its document is removed then)."""
        event = {"email": user.email, "account_id": user.account_id}
        removed = await self._delete(
            keys=self.script_keys("delete", user.email),
            args=[user.email, user.revision, *outbox_lua_args(event)],
        )
        if removed:
            self._outbox(user.email).added(1)  # the script appended the erasure event
        return bool(removed)

    async def count_registration(self, client: str, window_seconds: int) -> Counter:
        """One more registration from ``client`` in its fixed window."""
        count, ttl = await self._hit(keys=[self._register_key(client)], args=[window_seconds])
        return Counter(int(count), int(ttl))


class RedisUserStore(UserStoreBase):
    """Users and sign-in counters in one Redis logical database."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self._admit = redis.register_script(lua.LOGIN_ADMIT)
        self._succeeded = redis.register_script(lua.LOGIN_SUCCEEDED)
        self._list_page = redis.register_script(lua.LIST_PAGE)

    def _user_key(self, email: str) -> str:
        return keys.user_key(email)

    def _register_key(self, client: str) -> str:
        return keys.register_key(client)

    def _outbox(self, email: str) -> OutboxMetrics:
        return _OUTBOX

    @staticmethod
    def script_keys(script: str, email: str, client: str = "") -> list[str]:
        if script == "create":
            return [keys.user_key(email), keys.USERS_INDEX]
        if script == "replace":
            return [keys.user_key(email)]
        if script == "delete":
            return [
                keys.user_key(email),
                keys.USERS_INDEX,
                keys.ACCOUNTS_OUTBOX,
                keys.account_key(email),
                keys.known_clients_key(email),
            ]
        raise ValueError(f"no script {script!r}")

    async def _documents(self, keys: list[str]) -> list[Any]:
        documents: list[Any] = await self._redis.mget(keys)
        return documents

    async def new_account_id(self, email: str) -> str:
        """A fresh account id (``email`` is not used: one counter serves every email): 16 hex
        digits of a sequence that never decreases (so later accounts sort after earlier ones)
        and 16 random hex digits (so ids are not guessable)."""
        sequence = int(await self._redis.incr(keys.ACCOUNT_ID_COUNTER))
        return f"{sequence:016x}{secrets.token_hex(8)}"

    async def list_page(self, offset: int, size: int) -> tuple[list[StoredUser], int, int]:
        """Users at ranks [offset, offset + size) in email order; also how many ranks were
        read and the total number of users (an index entry without a document is skipped).
        One round trip: a script reads the index and the documents together."""
        total, documents = await self._list_page(
            keys=[keys.USERS_INDEX], args=[offset, offset + size - 1, keys.USER_PREFIX]
        )
        users = [decode_user(_text(raw)) for raw in documents if raw is not None]
        return users, len(documents), int(total)

    def _login_keys(self, email: str, client: str) -> list[str]:
        return [
            keys.client_key(client),
            keys.failures_key(email, client),
            keys.account_key(email),
            keys.known_clients_key(email),
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
                keys.clean_client(client),
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
            args=[keys.clean_client(client), policy.known_clients, policy.known_client_seconds],
        )
