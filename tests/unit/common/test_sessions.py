"""Token revocation checks: the bounded cache, its invalidation over Redis pub/sub, outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.common.domain import Principal, Unauthenticated, Unavailable
from services.common.redis import RedisClient, create_cluster, create_redis
from services.common.sessions import (
    AccountState,
    Sessions,
    follow_revocations,
    publish_revocation,
)

ADA = "ada@example.com"
BOB = "bob@example.com"
ACCOUNT = "0000000000000001" + "a" * 16
LATER = "0000000000000002" + "b" * 16


class Accounts:
    """UserService's answers (a peer, not the code under test), counting the lookups."""

    def __init__(self) -> None:
        self.states: dict[str, AccountState] = {
            ADA: AccountState(ACCOUNT, 1),
            BOB: AccountState(LATER, 1),
        }
        self.lookups = 0
        self.down = False

    async def account(self, email: str) -> AccountState | None:
        self.lookups += 1
        if self.down:
            raise Unavailable("UserService is temporarily unavailable")
        return self.states.get(email)


def ada(version: int = 1, account_id: str = ACCOUNT, lifetime: float = 900) -> Principal:
    return Principal(
        "user", ADA, account_id=account_id, token_version=version, expires_at=time.time() + lifetime
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_valid_token_is_checked_once_per_ttl() -> None:
    accounts, clock = Accounts(), Clock()
    sessions = Sessions(accounts, ttl_seconds=5, clock=clock)
    for _ in range(3):
        await sessions.check(ada())
    assert accounts.lookups == 1
    clock.now = 5.1
    await sessions.check(ada())
    assert accounts.lookups == 2


async def test_revoked_deleted_and_replaced_accounts_are_refused() -> None:
    accounts = Accounts()
    sessions = Sessions(accounts, ttl_seconds=0)
    accounts.states[ADA] = AccountState(ACCOUNT, 2)
    with pytest.raises(Unauthenticated, match="revoked"):
        await sessions.check(ada())
    await sessions.check(ada(version=2))
    accounts.states[ADA] = AccountState(LATER, 1)  # deleted and registered again
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await sessions.check(ada(version=2))
    del accounts.states[ADA]
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await sessions.check(ada(account_id=LATER))
    with pytest.raises(Unauthenticated, match="predates account ids"):
        await sessions.check(Principal("user", BOB))
    with pytest.raises(Unauthenticated, match="expired"):
        await sessions.check(ada(lifetime=-1))
    await sessions.check(Principal("service", "message"))  # services are not users


async def test_a_token_that_does_not_match_the_cache_is_checked_again_at_once() -> None:
    accounts, clock = Accounts(), Clock()
    sessions = Sessions(accounts, ttl_seconds=5, clock=clock)
    await sessions.check(ada())
    accounts.states[ADA] = AccountState(ACCOUNT, 2)  # signed in again after a password change
    await sessions.check(ada(version=2))  # not refused because of the cached version 1
    assert accounts.lookups == 2


async def test_an_outage_trusts_recent_entries_only() -> None:
    accounts, clock = Accounts(), Clock()
    sessions = Sessions(accounts, ttl_seconds=5, stale_grace_seconds=60, clock=clock)
    await sessions.check(ada())
    accounts.down = True
    clock.now = 30
    await sessions.check(ada())  # within the grace period
    clock.now = 61
    with pytest.raises(Unavailable, match="cannot be checked"):
        await sessions.check(ada())
    with pytest.raises(Unavailable):
        await sessions.check(Principal("user", BOB, account_id=LATER, token_version=1))


async def test_the_cache_is_bounded() -> None:
    accounts = Accounts()
    sessions = Sessions(accounts, max_entries=1)
    await sessions.check(ada())
    await sessions.check(Principal("user", BOB, account_id=LATER, token_version=1))
    assert len(sessions) == 1


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, 1)
    yield client
    await client.aclose()


async def test_a_revocation_published_on_redis_reaches_a_service_at_once(
    redis_url: str, redis: Redis
) -> None:
    publisher = create_redis(redis_url, 0)  # UserService's database: channels span them
    try:
        await _revocation_reaches(redis, publisher)
    finally:
        await publisher.aclose()


async def test_a_revocation_reaches_a_service_on_a_cluster(cluster_url: str) -> None:
    # A client that has not loaded the cluster's slot map yet, as at a service's start.
    follower, publisher = create_cluster(cluster_url), create_cluster(cluster_url)
    try:
        await _revocation_reaches(follower, publisher)
    finally:
        await follower.aclose()
        await publisher.aclose()


async def _revocation_reaches(redis: RedisClient, publisher: RedisClient) -> None:
    accounts = Accounts()
    sessions = Sessions(accounts, ttl_seconds=30)
    follower = asyncio.create_task(follow_revocations(redis, sessions))
    try:
        await sessions.check(ada())
        accounts.states[ADA] = AccountState(ACCOUNT, 2)
        deadline = time.monotonic() + 5
        while True:
            await publish_revocation(publisher, ADA)
            try:
                await sessions.check(ada())
            except Unauthenticated:
                break
            assert time.monotonic() < deadline, "the revocation never arrived"
            await asyncio.sleep(0.05)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
