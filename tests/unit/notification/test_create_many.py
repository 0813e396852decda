"""A batch of notifications is created in one Redis round trip (lua.CREATE_MANY), each item
with the outcome it has when created alone: checked against the same items created one by one
in a second database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.redis import create_redis
from services.notification.keys import OUTBOX_STREAM, SUBSCRIPTIONS_KEY, account_key
from services.notification.models import CreateResult, NewNotification
from services.notification.store import UNSUBSCRIBED, RedisNotificationStore
from tests.helpers.accounts import account_id_of
from tests.helpers.round_trips import RoundTrips
from tests.unit.notification.conftest import ADA, BOB, EVE, NOTIFICATION_DB, new

OTHER_DB = NOTIFICATION_DB + 1
CAROL = "carol@example.com"


@pytest.fixture
async def trips(redis_url: str) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips(redis_url, NOTIFICATION_DB)
    yield counted
    await counted.aclose()


@pytest.fixture
async def other(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, OTHER_DB)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def prepare(redis: Redis) -> None:
    """Eve unsubscribed; a later account (b...) owns Carol's email than the one notified (a...)."""
    await redis.hset(SUBSCRIPTIONS_KEY, EVE, UNSUBSCRIBED)
    await redis.set(account_key(CAROL), "b" * 32)


def mixed_batch() -> list[NewNotification]:
    return [
        new(1),
        new(2, receiver=EVE),  # unsubscribed
        new(3, receiver=ADA, sender=BOB),
        new(1),  # a repeat within the batch
        replace(new(4, receiver=CAROL), receiver_account_id="a" * 32),  # deleted account
        replace(new(5, receiver=ADA, sender=BOB), receiver_account_id=account_id_of(ADA)),
    ]


async def contents(redis: Redis) -> dict[str, Any]:
    """Every key's value (streams without their generated ids), to compare two databases."""
    found: dict[str, Any] = {}
    for key in sorted(str(k) for k in await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "list":
            found[key] = await redis.lrange(key, 0, -1)
        elif kind == "hash":
            found[key] = await redis.hgetall(key)
        elif kind == "stream":
            entries: Any = await redis.xrange(key)
            found[key] = [fields for _, fields in entries]
        else:
            found[key] = await redis.get(key)
    return found


async def test_a_batch_has_each_items_outcome_and_writes_as_one_by_one(
    store: RedisNotificationStore, redis: Redis, other: Redis
) -> None:
    await prepare(redis)
    await prepare(other)
    batch = mixed_batch()
    together = await store.create_many(batch)
    alone_store = RedisNotificationStore(other, retention=1000)
    alone: list[CreateResult] = [await alone_store.create(item) for item in batch]
    assert together == alone
    assert [(r.created, r.subscribed) for r in together] == [
        (True, True),
        (False, False),
        (True, True),
        (False, True),
        (False, False),
        (True, True),
    ]
    assert await contents(redis) == await contents(other)
    assert await redis.xlen(OUTBOX_STREAM) == 3


async def test_a_batch_redelivered_after_a_crash_stores_each_notification_once(
    store: RedisNotificationStore, redis: Redis
) -> None:
    first = await store.create_many([new(1), new(2)])
    again = await store.create_many([new(1), new(2), new(3)])
    assert [r.created for r in again] == [False, False, True]
    assert [r.notification for r in again[:2]] == [r.notification for r in first]
    assert await redis.llen(f"notifications:{BOB}") == 3
    assert await redis.xlen(OUTBOX_STREAM) == 3


async def test_a_batch_is_one_round_trip(trips: RoundTrips, redis: Redis) -> None:
    counted = RedisNotificationStore(trips.redis, retention=1000)
    await counted.create_many([new(1)])  # loads the script
    batch = [new(n, receiver=f"user{n}@example.com") for n in range(2, 102)]
    assert await trips.of(counted.create_many(batch)) == 1
    assert await redis.xlen(OUTBOX_STREAM) == 101
    assert await counted.create_many([]) == []
