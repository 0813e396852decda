"""RedisNotificationStore against a real Valkey: key layout, atomic scripts, retention."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from services.notification.keys import (
    OUTBOX_STREAM,
    SUBSCRIPTIONS_KEY,
    dedupe_key,
    notifications_key,
)
from services.notification.models import NewNotification
from services.notification.records import decode_event, decode_notification, encode_notification
from services.notification.store import DEDUPE_TTL_SECONDS, RedisNotificationStore
from tests.unit.notification.conftest import ADA, BOB, new, stream_fields


async def test_create_stores_the_notification_its_dedupe_key_and_one_outbox_entry(
    store: RedisNotificationStore, redis: Redis
) -> None:
    result = await store.create(new(42))

    assert result.created and result.subscribed
    assert result.notification == new(42).as_notification()
    assert result.notification.id == "42" and not result.notification.read
    stored = await redis.lrange(notifications_key(BOB), 0, -1)
    assert [json.loads(item) for item in stored] == [
        {
            "id": "42",
            "message_id": 42,
            "sender_email": ADA,
            "receiver_email": BOB,
            "timestamp": "2025-01-14T12:00:42Z",
            "preview": "",
            "sender_name": "",
            "read": False,
        }
    ]
    assert await redis.get(dedupe_key(42)) == "42"
    assert 0 < await redis.ttl(dedupe_key(42)) <= DEDUPE_TTL_SECONDS
    entries = await stream_fields(redis, OUTBOX_STREAM)
    assert len(entries) == 1
    fields = entries[0]
    assert fields["id"] == "42" and fields["message_id"] == "42"
    assert fields["receiver_email"] == BOB
    assert decode_event(fields) == result.notification
    assert sorted(await redis.keys("*")) == sorted(
        [notifications_key(BOB), dedupe_key(42), OUTBOX_STREAM]
    )


async def test_a_repeat_returns_the_stored_notification_and_pushes_nothing(
    store: RedisNotificationStore, redis: Redis
) -> None:
    await store.create(new(7))
    await store.mark_read(BOB, "7")

    again = await store.create(new(7))

    assert not again.created and again.subscribed
    assert again.notification is not None and again.notification.read  # the stored state
    assert await redis.llen(notifications_key(BOB)) == 1
    assert await redis.xlen(OUTBOX_STREAM) == 1


async def test_a_repeat_after_retention_dropped_it_returns_the_requested_one_and_stores_nothing(
    redis: Redis,
) -> None:
    store = RedisNotificationStore(redis, retention=2)
    for message_id in (1, 2, 3):
        await store.create(new(message_id))

    again = await store.create(new(1))

    assert not again.created and again.notification == new(1).as_notification()
    assert [n.message_id for n in await store.list_all(BOB)] == [3, 2]
    assert await redis.xlen(OUTBOX_STREAM) == 3


async def test_unsubscribed_receiver_gets_nothing_stored_or_pushed(
    store: RedisNotificationStore, redis: Redis
) -> None:
    await store.set_subscribed(BOB, False)

    result = await store.create(new(5))

    assert (result.notification, result.created, result.subscribed) == (None, False, False)
    assert sorted(await redis.keys("*")) == [SUBSCRIPTIONS_KEY]
    assert await redis.hgetall(SUBSCRIPTIONS_KEY) == {BOB: "0"}

    await store.set_subscribed(BOB, True)
    assert await redis.hgetall(SUBSCRIPTIONS_KEY) == {BOB: "1"}
    assert (await store.create(new(5))).created
    assert await redis.xlen(OUTBOX_STREAM) == 1


async def test_everyone_is_subscribed_by_default(store: RedisNotificationStore) -> None:
    assert await store.is_subscribed("nobody@example.com")
    await store.set_subscribed(BOB, False)
    assert not await store.is_subscribed(BOB)
    assert await store.is_subscribed(ADA)


async def test_retention_keeps_the_newest_notifications(redis: Redis) -> None:
    store = RedisNotificationStore(redis, retention=5)
    for message_id in range(1, 9):
        await store.create(new(message_id))

    assert [n.message_id for n in await store.list_all(BOB)] == [8, 7, 6, 5, 4]
    assert await redis.llen(notifications_key(BOB)) == 5
    assert await redis.xlen(OUTBOX_STREAM) == 8  # every one was pushed when created


async def test_mark_read_rewrites_only_that_notification(
    store: RedisNotificationStore, redis: Redis
) -> None:
    for message_id in (1, 2, 3):
        await store.create(new(message_id))

    marked = await store.mark_read(BOB, "2")
    again = await store.mark_read(BOB, "2")

    assert marked is not None and marked.read and marked.message_id == 2
    assert again == marked
    assert [(n.message_id, n.read) for n in await store.list_all(BOB)] == [
        (3, False),
        (2, True),
        (1, False),
    ]
    assert await store.mark_read(BOB, "4") is None
    assert await store.mark_read(ADA, "2") is None  # only the owner's list is searched
    assert await store.mark_read(BOB, "22") is None  # an id is matched whole, not by prefix


async def test_mark_all_read_counts_the_ones_that_changed(store: RedisNotificationStore) -> None:
    for message_id in (1, 2, 3):
        await store.create(new(message_id))
    await store.mark_read(BOB, "1")

    assert await store.mark_all_read(BOB) == 2
    assert await store.mark_all_read(BOB) == 0
    assert await store.mark_all_read("nobody@example.com") == 0
    assert all(n.read for n in await store.list_all(BOB))


async def test_large_message_ids_survive_the_scripts_exactly(store: RedisNotificationStore) -> None:
    big = 2**63 - 1
    await store.create(new(big))
    marked = await store.mark_read(BOB, str(big))
    assert marked is not None and marked.message_id == big and marked.id == str(big)


async def test_malformed_list_items_are_skipped(
    store: RedisNotificationStore, redis: Redis
) -> None:
    await store.create(new(1))
    await redis.lpush(notifications_key(BOB), "not json", '{"id": 3}')
    assert [n.message_id for n in await store.list_all(BOB)] == [1]


def test_encoding_round_trips_and_keeps_id_first_and_read_last() -> None:
    notification = NewNotification(9, ADA, "bøb@example.com", new(9).timestamp, True)
    encoded = encode_notification(notification.as_notification())
    assert encoded.startswith('{"id":"9",') and encoded.endswith('"read":true}')
    assert decode_notification(encoded) == notification.as_notification()


@pytest.mark.parametrize(
    "text",
    ["[]", '{"id": 1}', '{"id":"1","message_id":"1","read":false}', "nope"],
)
def test_decoding_rejects_what_is_not_a_notification(text: str) -> None:
    with pytest.raises(ValueError):
        decode_notification(text)


def test_an_outbox_entry_without_a_notification_is_malformed() -> None:
    with pytest.raises(ValueError):
        decode_event({"id": "1"})
