"""The Redis layout of UserService: keys, JSON documents, the index, atomic writes, counters."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.common.timestamps import format_timestamp, parse_timestamp
from services.user.keys import (
    ACCOUNTS_OUTBOX,
    USERS_INDEX,
    clean_client,
    client_key,
    failures_key,
    user_key,
)
from services.user.models import StoredUser
from services.user.store import RedisUserStore
from tests.unit.user.conftest import ALICE, BOB, snapshot

T0 = datetime(2025, 1, 14, 12, 0, 0, 123000, tzinfo=UTC)


def user(email: str = ALICE, name: str = "Alice") -> StoredUser:
    return StoredUser(name, email, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", T0, T0)


def test_key_names() -> None:
    assert user_key(ALICE) == "user:alice@example.com"
    assert USERS_INDEX == "users"
    assert failures_key(ALICE, "::1") == "login_failures:alice@example.com:::1"
    assert client_key("::1") == "login_clients:::1"


def test_client_hosts_are_cleaned_and_bounded() -> None:
    assert clean_client("198.51.100.4") == "198.51.100.4"
    assert clean_client("a b\nc\u00e9") == "abc"
    assert clean_client("") == "unknown"
    assert len(clean_client("x" * 1000)) == 64


def test_times_are_utc_iso8601_with_z() -> None:
    assert format_timestamp(T0, milliseconds=True) == "2025-01-14T12:00:00.123Z"
    assert format_timestamp(T0) == "2025-01-14T12:00:00.123000Z"
    assert parse_timestamp("2025-01-14T12:00:00.123Z") == T0


def test_str_hides_the_hash() -> None:
    assert "argon2" not in repr(user())


async def test_create_writes_document_and_index_together(redis: Redis) -> None:
    store = RedisUserStore(redis)
    assert await store.create(user())
    document = json.loads(str(await redis.get(user_key(ALICE))))
    assert document == {
        "name": "Alice",
        "email": ALICE,
        "password": user().password_hash,
        "created_at": "2025-01-14T12:00:00.123Z",
        "updated_at": "2025-01-14T12:00:00.123Z",
    }
    assert await redis.zrange(USERS_INDEX, 0, -1, withscores=True) == [(ALICE, 0.0)]
    assert await store.get(ALICE) == user()
    assert await store.exists(ALICE)
    assert not await store.exists(BOB)
    assert await store.get(BOB) is None


async def test_create_refuses_a_taken_email_without_writing(redis: Redis) -> None:
    store = RedisUserStore(redis)
    assert await store.create(user())
    before = await snapshot(redis)
    assert not await store.create(user(name="Impostor"))
    assert await snapshot(redis) == before


async def test_concurrent_creates_leave_one_user(redis: Redis) -> None:
    store = RedisUserStore(redis)
    results = await asyncio.gather(*(store.create(user(name=f"n{i}")) for i in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await redis.dbsize() == 2


async def test_delete_removes_both_and_queues_the_erasure(redis: Redis) -> None:
    store = RedisUserStore(redis)
    await store.create(replace(user(), account_id="0" * 16 + "a" * 16))
    await store.create(user(BOB))
    stored = await store.get(ALICE)
    assert stored is not None
    assert await store.delete(stored)
    assert await redis.zrange(USERS_INDEX, 0, -1) == [BOB]
    assert not await redis.exists(user_key(ALICE))
    assert not await store.delete(stored)
    events: Any = await redis.xrange(ACCOUNTS_OUTBOX)
    assert [fields for _, fields in events] == [{"email": ALICE, "account_id": "0" * 16 + "a" * 16}]


async def test_delete_refuses_a_changed_record(redis: Redis) -> None:
    store = RedisUserStore(redis)
    await store.create(user())
    stale = await store.get(ALICE)
    assert stale is not None
    assert await store.replace(stale, replace(stale, name="Alice B."))
    assert not await store.delete(stale)
    assert await redis.exists(user_key(ALICE))
    assert not await redis.exists(ACCOUNTS_OUTBOX)


async def test_delete_repairs_an_orphan_index_entry(redis: Redis) -> None:
    await redis.zadd(USERS_INDEX, {ALICE: 0})
    assert not await RedisUserStore(redis).delete(user())
    assert await redis.dbsize() == 0


async def test_replace_is_compare_and_set(redis: Redis) -> None:
    store = RedisUserStore(redis)
    await store.create(user())
    current = await store.get(ALICE)
    assert current is not None
    renamed = replace(current, name="Alice B.")
    assert await store.replace(current, renamed)
    assert (await store.get(ALICE)) == renamed
    # `current` is stale now: a second writer holding it changes nothing.
    assert not await store.replace(current, replace(current, name="Lost update"))
    assert (await store.get(ALICE)) == renamed


async def test_replace_never_recreates_a_deleted_user(redis: Redis) -> None:
    store = RedisUserStore(redis)
    await store.create(user())
    current = await store.get(ALICE)
    assert current is not None
    await store.delete(current)
    assert not await store.replace(current, replace(current, name="Ghost"))
    assert not await redis.exists(user_key(ALICE))


async def test_list_page_in_email_order(redis: Redis) -> None:
    store = RedisUserStore(redis)
    for email in ("carol@example.com", BOB, ALICE):
        await store.create(user(email))
    users, read, total = await store.list_page(0, 2)
    assert [u.email for u in users] == [ALICE, BOB]
    assert (read, total) == (2, 3)
    users, read, total = await store.list_page(2, 2)
    assert [u.email for u in users] == ["carol@example.com"]
    assert (read, total) == (1, 3)
    assert await store.list_page(5, 2) == ([], 0, 3)


async def test_list_page_skips_an_index_entry_without_document(redis: Redis) -> None:
    store = RedisUserStore(redis)
    await store.create(user(BOB))
    await redis.zadd(USERS_INDEX, {ALICE: 0})
    users, read, total = await store.list_page(0, 10)
    assert [u.email for u in users] == [BOB]
    assert (read, total) == (2, 2)


async def test_counters_use_a_fixed_window(redis: Redis) -> None:
    store = RedisUserStore(redis)
    first = await store.count_registration("198.51.100.4", 900)
    second = await store.count_registration("198.51.100.4", 5)  # never shortens or extends
    assert (first.count, second.count) == (1, 2)
    assert 899 <= second.ttl <= 900
    assert await redis.get("register_clients:198.51.100.4") == "2"


async def test_counter_expires(redis: Redis) -> None:
    store = RedisUserStore(redis)
    await store.count_registration("h", 1)
    await asyncio.sleep(1.1)
    assert (await store.count_registration("h", 1)).count == 1


async def test_ping(redis: Redis, dead_redis: Redis) -> None:
    assert await RedisUserStore(redis).ping()
    assert not await RedisUserStore(dead_redis).ping()
