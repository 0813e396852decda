"""Token revocation: every user token is checked against its account on every call.

An access token names its account (``aid``, an id never reused) and a token version (``tv``).
UserService raises the version to revoke every earlier token (password change, sign-out
everywhere) and removes the account on deletion; a token is accepted only while its account
still exists with the same id and version.

Services other than UserService learn an account's state through UserService's
``CheckUserExists`` and keep it in :class:`Sessions`, a bounded cache:

* an entry is trusted for ``ttl_seconds`` (default 5 s); a token that does not match the cached
  state is re-checked with UserService at once, so a fresh token is never refused because of
  the cache;
* UserService publishes the email of every revoked or deleted account on the Redis channel
  :data:`REVOCATION_CHANNEL`; services with a Redis connection follow it
  (:func:`follow_revocations`) and drop the entry at once. Pub/sub spans every logical
  database of one Redis server; if a service uses another server, or the subscription is
  down, revocation reaches it within ``ttl_seconds`` (the documented staleness bound).
* when UserService cannot be reached, a matching entry up to ``stale_grace_seconds`` old is
  still trusted; otherwise the call fails with UNAVAILABLE (never accepted unchecked).

The same cache answers "is a user registered under this email?" (:meth:`Sessions.accounts`,
MessageService's check of a message's sender and receiver): an account fetched within
``ttl_seconds`` is answered from it, the others are fetched together in one lookup (one
UserService ``CheckUsersExist`` call when the lookup has ``accounts``). Only existing accounts
are answered from the cache, so a user who has just registered is found at once; a deleted
one is dropped on the revocation channel, and at the latest ``ttl_seconds`` after deletion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import grpc
import grpc.aio
from missive.user.v1 import user_pb2, user_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from services.common.domain import Principal, Unauthenticated, Unavailable
from services.common.redis import RedisClient

logger = logging.getLogger(__name__)

REVOCATION_CHANNEL: Final = "missive:revocations"
"""Redis pub/sub channel; each message is the email of an account whose tokens were revoked."""
DEFAULT_TTL_SECONDS: Final = 5.0
DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_STALE_GRACE_SECONDS: Final = 60.0

EXPIRED = "the access token has expired; sign in again"
GONE = "the account of this access token no longer exists"
REVOKED = "the access token was revoked; sign in again"
NO_ACCOUNT_CLAIM = "the access token predates account ids; sign in again"


@dataclass(frozen=True)
class AccountState:
    """What UserService says about an account: its id and current token version."""

    account_id: str
    token_version: int
    name: str = field(default="", compare=False)  # the display name, where UserService gives it


class AccountLookup(Protocol):
    async def account(self, email: str) -> AccountState | None:
        """The account registered under ``email`` (None if none); Unavailable if unknown now."""
        ...


@runtime_checkable
class AccountBatchLookup(Protocol):
    async def accounts(self, emails: Sequence[str]) -> Mapping[str, AccountState | None]:
        """The account registered under each of ``emails`` (None where there is none), in one
        question; Unavailable if unknown now."""
        ...


class GrpcAccounts:
    """An :class:`AccountLookup` through UserService ``CheckUserExists``, within a deadline.

    Build the channel with ``peer_channel(addr, credentials, target="user")``."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 2.0) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def account(self, email: str) -> AccountState | None:
        request = user_pb2.CheckUserExistsRequest(email=email)
        try:
            reply = await self._stub.CheckUserExists(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            logger.warning("cannot check the account of %s: %s", email, exc.code().name)
            raise Unavailable("UserService is temporarily unavailable") from exc
        except grpc.aio.UsageError as exc:  # the channel is closing (shutdown)
            raise Unavailable("UserService is temporarily unavailable") from exc
        if not reply.exists:
            return None
        return AccountState(reply.account_id, reply.token_version)


@dataclass
class _Entry:
    state: AccountState | None
    fetched: float


class Sessions:
    """Checks user principals against their account, through a bounded, short-lived cache."""

    def __init__(
        self,
        lookup: AccountLookup,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        stale_grace_seconds: float = DEFAULT_STALE_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds < 0 or max_entries < 1 or stale_grace_seconds < ttl_seconds:
            raise ValueError("need ttl >= 0, max_entries >= 1, stale_grace >= ttl")
        self._lookup = lookup
        self.ttl = ttl_seconds
        self._max = max_entries
        self._grace = stale_grace_seconds
        self._clock = clock
        self._wall = wall_clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def invalidate(self, email: str | None = None) -> None:
        """Forget one account's state (or every one's): the next call asks UserService."""
        if email is None:
            self._cache.clear()
        else:
            self._cache.pop(email, None)

    async def accounts(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        """The account registered under each of ``emails`` (None where there is none).

        Accounts fetched within ``ttl_seconds`` come from the cache; the other emails are
        fetched together (one lookup) and cached. An email without an account is never answered
        from the cache. No outage grace: Unavailable if the lookup fails."""
        now = self._clock()
        found: dict[str, AccountState | None] = {}
        missing: list[str] = []
        for email in dict.fromkeys(emails):
            entry = self._cache.get(email)
            if entry is not None and entry.state is not None and now - entry.fetched <= self.ttl:
                self._cache.move_to_end(email)
                found[email] = entry.state
            else:
                missing.append(email)
        if missing:
            fetched = await self._fetch(missing)
            for email in missing:
                state = found[email] = fetched.get(email)
                if state is None:  # not kept: unknown emails cannot push accounts out
                    self._cache.pop(email, None)
                else:
                    self._store(email, state)
        return found

    async def _fetch(self, emails: list[str]) -> Mapping[str, AccountState | None]:
        if isinstance(self._lookup, AccountBatchLookup):
            return await self._lookup.accounts(emails)
        states = await asyncio.gather(*(self._lookup.account(email) for email in emails))
        return dict(zip(emails, states, strict=True))

    async def check(self, principal: Principal) -> None:
        """Return if ``principal`` (a user) may act now; Unauthenticated if its token is
        expired or revoked or its account is gone; Unavailable if that cannot be found out."""
        if principal.kind != "user":
            return
        if principal.expires_at and self._wall() > principal.expires_at:
            raise Unauthenticated(EXPIRED)
        if not principal.account_id:
            raise Unauthenticated(NO_ACCOUNT_CLAIM)
        email = principal.name
        entry = self._cache.get(email)
        now = self._clock()
        if entry is not None and now - entry.fetched <= self.ttl and _matches(entry, principal):
            self._cache.move_to_end(email)
            return
        try:
            state = await self._lookup.account(email)
        except Unavailable:
            if (
                entry is not None
                and now - entry.fetched <= self._grace
                and _matches(entry, principal)
            ):
                logger.warning("UserService unreachable; trusting the cached account of %s", email)
                return
            raise Unavailable("the access token cannot be checked right now; retry") from None
        self._store(email, state)
        if state is None or state.account_id != principal.account_id:
            raise Unauthenticated(GONE)
        if state.token_version != principal.token_version:
            raise Unauthenticated(REVOKED)

    def _store(self, email: str, state: AccountState | None) -> None:
        self._cache[email] = _Entry(state, self._clock())
        self._cache.move_to_end(email)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)


def _matches(entry: _Entry, principal: Principal) -> bool:
    state = entry.state
    return (
        state is not None
        and state.account_id == principal.account_id
        and state.token_version == principal.token_version
    )


async def publish_revocation(redis: RedisClient, email: str) -> None:
    """Tell every service following :data:`REVOCATION_CHANNEL` to forget ``email``'s state.

    Best effort: a lost message only means the documented staleness bound applies."""
    try:
        await redis.publish(REVOCATION_CHANNEL, email)
    except (RedisError, OSError) as exc:
        logger.warning("could not publish the revocation of %s: %s", email, exc)


async def follow_revocations(
    redis: RedisClient, sessions: Sessions, *, retry_seconds: float = 1.0
) -> None:
    """Runs until cancelled: drops each account named on :data:`REVOCATION_CHANNEL` from
    ``sessions``. While the subscription is down, the whole cache is dropped (messages may
    have been missed), so revocation stays bounded by the cache TTL."""
    while True:
        try:
            if isinstance(redis, RedisCluster):
                await redis.initialize()  # its pub/sub picks a node from the slot map
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(REVOCATION_CHANNEL)
                sessions.invalidate()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message.get("data")
                        email = data.decode() if isinstance(data, bytes) else str(data)
                        sessions.invalidate(email)
        except (RedisError, RedisClusterException, OSError) as exc:
            sessions.invalidate()
            logger.warning("revocation channel unavailable (%s); retrying", exc)
            await asyncio.sleep(retry_seconds)
