"""SendMessage in one Redis round trip (lua.SEND_MESSAGE) against a real Valkey: the claims,
the rate-limit hit, the id, the quota and the writes keep the semantics of the separate steps
they replace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.common.domain import Principal, RateLimited, Unauthenticated
from services.message import keys
from services.message.models import Message, content_digest
from services.message.records import decode_event, decode_message
from services.message.service import MessageService
from services.message.settings import SendLimits
from services.message.store import RedisMessageStore
from tests.helpers.accounts import account_id_of
from tests.helpers.round_trips import RoundTrips
from tests.unit.message.conftest import (
    ADA,
    BOB,
    MESSAGE_DB,
    KnownUsers,
    db_keys,
    stream_fields,
)

T0 = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)
ADA_ACCOUNT = account_id_of(ADA)
BOB_ACCOUNT = account_id_of(BOB)


def account_user(email: str) -> Principal:
    return Principal("user", email, account_id=account_id_of(email))


@pytest.fixture
async def trips(redis_url: str) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips(redis_url, MESSAGE_DB)
    yield counted
    await counted.aclose()


async def test_a_send_stores_what_the_separate_steps_stored(
    store: RedisMessageStore, redis: Redis
) -> None:
    await redis.set(keys.MESSAGE_ID_COUNTER, 41)
    outcome = await store.send_message(
        ADA,
        BOB,
        'héllo "you"',
        T0,
        request_id="r-1",
        content_sha256=content_digest('héllo "you"'),
        sender_account_id=ADA_ACCOUNT,
        receiver_account_id=BOB_ACCOUNT,
        claim_receiver=True,
        sender_name="Ada",
        rate_limit=(5, 60),
    )
    assert outcome.outcome == "stored" and outcome.message is not None
    message = outcome.message
    assert message == Message(42, ADA, BOB, 'héllo "you"', T0, read=False)
    document = str(await redis.get("message:42"))
    # Byte for byte the JSON the earlier write path stored: compact, keys in this order,
    # non-ASCII characters as they are, the timestamp to the second with Z.
    assert document == (
        '{"id":42,"sender_email":"ada@example.com","receiver_email":"bob@example.com",'
        '"content":"héllo \\"you\\"","timestamp":"2025-01-14T12:00:00Z"}'
    )
    assert decode_message(document) == message
    assert await redis.get(f"user:{ADA}:stored_bytes") == str(len(document.encode()))
    record = await store.idempotency_record(ADA, "r-1")
    assert record is not None and (record.message_id, record.receiver) == (42, BOB)
    assert await redis.get(keys.idempotency_key(ADA, "r-1")) == json.dumps(
        {"message_id": 42, "receiver": BOB, "content_sha256": content_digest('héllo "you"')},
        separators=(",", ":"),
    )
    [event] = await stream_fields(redis, keys.OUTBOX_STREAM)
    assert event["message_id"] == "42"
    assert decode_event(event).message_id == 42 and event["sender_name"] == "Ada"
    assert event["receiver_account_id"] == BOB_ACCOUNT
    assert await redis.get(keys.account_key(ADA)) == ADA_ACCOUNT
    assert await redis.get(keys.account_key(BOB)) == BOB_ACCOUNT
    assert await redis.get(keys.send_rate_key(ADA)) == "1"
    assert 0 < await redis.ttl(keys.send_rate_key(ADA)) <= 60


async def test_ids_keep_growing_and_skip_a_taken_one(
    store: RedisMessageStore, redis: Redis
) -> None:
    first = await store.send_message(ADA, BOB, "one", T0)
    await redis.set("message:2", "{}")  # the counter went back: 2 is taken
    second = await store.send_message(ADA, BOB, "two", T0)
    assert first.message is not None and second.message is not None
    assert (first.message.id, second.message.id) == (1, 3)
    for taken in (4, 5, 6):
        await redis.set(f"message:{taken}", "{}")
    before = await db_keys(redis)
    refused = await store.send_message(ADA, BOB, "three", T0)
    assert refused.outcome == "taken" and refused.message is None
    assert await db_keys(redis) == before


async def test_a_rate_limited_send_stores_nothing(store: RedisMessageStore, redis: Redis) -> None:
    assert (await store.send_message(ADA, BOB, "ok", T0, rate_limit=(1, 60))).message
    before = await db_keys(redis)
    counter = await redis.get(keys.MESSAGE_ID_COUNTER)
    bytes_before = await redis.get(f"user:{ADA}:stored_bytes")
    refused = await store.send_message(
        ADA, BOB, "too many", T0, request_id="r-2", content_sha256="x", rate_limit=(1, 60)
    )
    assert refused.outcome == "rate" and 0 < refused.retry_after <= 60
    assert await db_keys(redis) == before  # no message, no idempotency record, no event
    assert await redis.get(keys.MESSAGE_ID_COUNTER) == counter
    assert await redis.get(f"user:{ADA}:stored_bytes") == bytes_before
    assert await redis.xlen(keys.OUTBOX_STREAM) == 1


async def test_an_idempotent_retry_returns_the_record_and_writes_nothing(
    store: RedisMessageStore, redis: Redis
) -> None:
    digest = content_digest("once")
    first = await store.send_message(
        ADA, BOB, "once", T0, request_id="r-1", content_sha256=digest, rate_limit=(1, 60)
    )
    assert first.message is not None
    before = await db_keys(redis)
    again = await store.send_message(
        ADA, BOB, "once", T0, request_id="r-1", content_sha256=digest, rate_limit=(1, 60)
    )
    assert again.outcome == "duplicate" and again.existing is not None
    assert again.existing.message_id == first.message.id
    assert again.existing.matches(BOB, digest)
    assert await db_keys(redis) == before
    assert await redis.get(keys.send_rate_key(ADA)) == "1"  # a repeat is free
    assert await redis.get(keys.MESSAGE_ID_COUNTER) == "1"


async def test_a_send_over_the_quota_stores_nothing(redis: Redis) -> None:
    store = RedisMessageStore(redis, quota_bytes=150)
    assert (await store.send_message(ADA, BOB, "x" * 20, T0)).message is not None
    used = await redis.get(f"user:{ADA}:stored_bytes")
    refused = await store.send_message(ADA, BOB, "y" * 100, T0)
    assert refused.outcome == "quota" and refused.quota_used == int(str(used))
    assert await redis.xlen(keys.OUTBOX_STREAM) == 1
    assert await redis.zcard(keys.user_messages_key(BOB)) == 1


async def test_a_deleted_senders_account_is_refused_before_anything_counts(
    store: RedisMessageStore, redis: Redis
) -> None:
    await redis.set(keys.account_key(ADA), f"{ADA_ACCOUNT}:erased")
    refused = await store.send_message(
        ADA, BOB, "hi", T0, sender_account_id=ADA_ACCOUNT, rate_limit=(1, 60)
    )
    assert refused.outcome == "stale"
    assert await db_keys(redis) == {keys.account_key(ADA)}


async def test_an_earlier_accounts_data_is_erased_before_the_send(
    store: RedisMessageStore, redis: Redis
) -> None:
    old = "0" * 32
    assert (await store.send_message(ADA, BOB, "old", T0, sender_account_id=old)).message
    refused = await store.send_message(
        ADA, BOB, "new", T0, sender_account_id=ADA_ACCOUNT, rate_limit=(1, 60)
    )
    assert refused.outcome == "erase" and refused.erase_email == ADA
    assert await redis.get(keys.send_rate_key(ADA)) is None  # nothing counted yet
    # The service takes the slow path: erase and take over, then send again.
    service = MessageService(store, KnownUsers(), limits=SendLimits(messages=1))
    sent = await service.send(
        account_user(ADA), sender_email=ADA, receiver_email=BOB, content="new"
    )
    assert await redis.get(keys.account_key(ADA)) == ADA_ACCOUNT
    assert [m.content for m in (await service.get_messages(account_user(ADA), ADA)).messages] == [
        sent.content
    ]


async def test_a_receivers_earlier_account_is_erased_before_the_message_joins(
    store: RedisMessageStore, redis: Redis
) -> None:
    old = "0" * 32
    assert (await store.send_message(BOB, ADA, "old", T0, sender_account_id=old)).message
    service = MessageService(store, KnownUsers())
    sent = await service.send(account_user(ADA), sender_email=ADA, receiver_email=BOB, content="hi")
    assert await redis.get(keys.account_key(BOB)) == BOB_ACCOUNT
    assert [m.id for m in (await service.get_messages(account_user(BOB), BOB)).messages] == [
        sent.id
    ]


async def test_a_send_is_one_round_trip(
    trips: RoundTrips, redis: Redis, known_users: KnownUsers
) -> None:
    service = MessageService(
        RedisMessageStore(trips.redis), known_users, limits=SendLimits(messages=10)
    )
    principal = account_user(ADA)
    # The first send loads the script (and claims both accounts); every later one is one trip.
    await service.send(principal, sender_email=ADA, receiver_email=BOB, content="first")
    for n in range(3):
        used = await trips.of(
            service.send(principal, sender_email=ADA, receiver_email=BOB, content=f"m{n}")
        )
        assert used == 1
    assert await redis.xlen(keys.OUTBOX_STREAM) == 4


async def test_the_rate_limit_refuses_with_the_seconds_left(
    store: RedisMessageStore, redis: Redis, known_users: KnownUsers
) -> None:
    service = MessageService(store, known_users, limits=SendLimits(messages=1, window_seconds=30))
    await service.send(account_user(ADA), sender_email=ADA, receiver_email=BOB, content="one")
    with pytest.raises(RateLimited, match="at most 1 messages may be sent per 30 seconds"):
        await service.send(account_user(ADA), sender_email=ADA, receiver_email=BOB, content="two")
    assert await redis.xlen(keys.OUTBOX_STREAM) == 1


async def test_a_deleted_account_cannot_send(
    store: RedisMessageStore, redis: Redis, known_users: KnownUsers
) -> None:
    await redis.set(keys.account_key(ADA), f"{ADA_ACCOUNT}:erased")
    service = MessageService(store, known_users)
    with pytest.raises(Unauthenticated):
        await service.send(account_user(ADA), sender_email=ADA, receiver_email=BOB, content="x")
    assert await redis.xlen(keys.OUTBOX_STREAM) == 0


async def test_the_conversation_hash_after_sends_both_ways_and_a_read(
    store: RedisMessageStore, redis: Redis
) -> None:
    conversation = keys.conversation_key(ADA, BOB)
    later = datetime(2025, 1, 14, 12, 5, 0, tzinfo=UTC)
    await store.send_message(ADA, BOB, "one", T0)
    await store.send_message(BOB, ADA, "two", later)
    assert await store.mark_read(ADA, BOB) is not None  # Ada read Bob's message 2
    third = await store.send_message(ADA, BOB, "three", later)
    assert third.message is not None and not third.message.read
    fields = await redis.hgetall(conversation)
    assert fields == {
        "participants": json.dumps(sorted((ADA, BOB))),
        "last_sent_id": "3",
        "updated_at": "2025-01-14T12:05:00Z",
        "last_message_id": "3",
        "message_count": "3",
        f"unread:{BOB}": "2",
        f"unread:{ADA}": "0",
        f"read_upto:{ADA}": "2",
    }
    # A message under an id its receiver already read past (the counter went back) is stored
    # read and not counted; last_sent_id and updated_at stay with the newest.
    await redis.set(keys.MESSAGE_ID_COUNTER, 1)
    await redis.hset(conversation, f"read_upto:{BOB}", 9)
    back = await store.send_message(ADA, BOB, "late", T0)
    assert back.message is not None and back.message.id == 4 and back.message.read
    after = await redis.hgetall(conversation)
    assert after["last_sent_id"] == "4" and after[f"unread:{BOB}"] == "2"
    await redis.set(keys.MESSAGE_ID_COUNTER, 1)
    await redis.delete("message:2", "message:3", "message:4")
    older = await store.send_message(ADA, BOB, "older", T0)
    assert older.message is not None and older.message.id == 2
    final = await redis.hgetall(conversation)
    assert final["last_sent_id"] == "4" and final["updated_at"] == "2025-01-14T12:00:00Z"
    assert final["last_message_id"] == "4" and final["message_count"] == "4"


async def test_the_rate_counter_expires_with_its_window(
    store: RedisMessageStore, redis: Redis
) -> None:
    await store.send_message(ADA, BOB, "one", T0, rate_limit=(2, 60))
    assert 0 < await redis.ttl(keys.send_rate_key(ADA)) <= 60
    await store.send_message(ADA, BOB, "two", T0, rate_limit=(2, 60))
    assert await redis.get(keys.send_rate_key(ADA)) == "2"
    # A counter found without an expiry gets one when it refuses, so it cannot stay forever.
    await redis.persist(keys.send_rate_key(ADA))
    refused = await store.send_message(ADA, BOB, "three", T0, rate_limit=(2, 60))
    assert refused.outcome == "rate" and refused.retry_after == 60
    assert 0 < await redis.ttl(keys.send_rate_key(ADA)) <= 60
