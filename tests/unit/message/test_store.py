"""RedisMessageStore against a real Valkey: the documented key layout and the atomic scripts.

Messages are stored through the send script (``send_message``), as the service stores them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from services.message import keys
from services.message.models import Conversation, IdempotencyRecord, Message, content_digest
from services.message.records import decode_event, decode_message, outbox_event
from services.message.store import IDEMPOTENCY_TTL_SECONDS, RedisMessageStore
from tests.unit.message.conftest import (
    ADA,
    BOB,
    CAROL,
    db_keys,
    dbsize,
    store_messages,
    stream_fields,
)

T0 = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)


def msg(message_id: int, sender: str = ADA, receiver: str = BOB, content: str = "hi") -> Message:
    return Message(message_id, sender, receiver, content, T0 + timedelta(seconds=message_id))


async def add(store: RedisMessageStore, *messages: Message) -> None:
    await store_messages(store, *messages)


async def ids(
    store: RedisMessageStore, email: str, peer: str | None, before: int | None
) -> list[int]:
    """The ids of ``email``'s messages (with ``peer`` only), newest first, below ``before``."""
    page, _ = await store.message_page(email, peer, before, 100)
    return [m.id for m in page]


async def conversation(store: RedisMessageStore, email: str, peer: str) -> Conversation:
    """``email``'s conversation with ``peer``, as the conversation pages show it."""
    page, _ = await store.conversation_page(email, None, 100)
    [found] = [c for c in page if c.peer_email == peer]
    return found


async def test_a_send_writes_the_documented_layout_in_one_go(
    store: RedisMessageStore, redis: Redis
) -> None:
    await redis.set(keys.MESSAGE_ID_COUNTER, 6)
    message = msg(7, sender=BOB, receiver=ADA, content="héllo")
    outcome = await store.send_message(BOB, ADA, "héllo", message.timestamp)
    assert outcome.outcome == "stored" and outcome.message == message  # not read

    conversation = f"conversation:{ADA}:{BOB}"  # sorted, whoever sent
    assert await db_keys(redis) == {
        "message_id_counter",
        "message:7",
        conversation,
        f"{conversation}:messages",
        f"user:{ADA}:conversations",
        f"user:{BOB}:conversations",
        f"user:{ADA}:conversations_by_time",
        f"user:{BOB}:conversations_by_time",
        f"user:{ADA}:messages",
        f"user:{BOB}:messages",
        "outbox:notifications",
        f"user:{BOB}:stored_bytes",  # the sender's quota counts the stored document's bytes
    }
    document = str(await redis.get("message:7"))
    assert await redis.get(f"user:{BOB}:stored_bytes") == str(len(document.encode()))
    assert json.loads(str(await redis.get("message:7"))) == {
        "id": 7,
        "sender_email": BOB,
        "receiver_email": ADA,
        "content": "héllo",
        "timestamp": "2025-01-14T12:00:07Z",
    }
    assert await redis.hgetall(conversation) == {
        "participants": json.dumps([ADA, BOB]),
        "last_message_id": "7",
        "last_sent_id": "7",
        "message_count": "1",
        "updated_at": "2025-01-14T12:00:07Z",
        f"unread:{ADA}": "1",
    }
    assert await redis.zrange(f"{conversation}:messages", 0, -1, withscores=True) == [("7", 7.0)]
    for email in (ADA, BOB):
        assert await redis.smembers(f"user:{email}:conversations") == {conversation}
        assert await redis.zrange(
            f"user:{email}:conversations_by_time", 0, -1, withscores=True
        ) == [(conversation, 7.0)]
        assert await redis.zrange(f"user:{email}:messages", 0, -1) == ["7"]
    assert await stream_fields(redis, "outbox:notifications") == [
        {
            "message_id": "7",
            "sender_email": BOB,
            "receiver_email": ADA,
            "timestamp": "2025-01-14T12:00:07Z",
            "preview": "héllo",
        }
    ]


async def test_sends_take_their_ids_from_the_counter(
    store: RedisMessageStore, redis: Redis
) -> None:
    sent = [await store.send_message(ADA, BOB, f"m{n}", T0) for n in range(3)]
    assert [outcome.message.id for outcome in sent if outcome.message] == [1, 2, 3]
    assert await redis.get("message_id_counter") == "3"


async def test_the_idempotency_key_is_written_with_the_message_and_a_24h_ttl(
    store: RedisMessageStore, redis: Redis
) -> None:
    digest = content_digest("hi")
    outcome = await store.send_message(
        ADA, BOB, "hi", T0, request_id="req-1", content_sha256=digest
    )
    assert outcome.message is not None and outcome.message.id == 1
    key = f"idempotency:send:{ADA}:req-1"
    assert json.loads(str(await redis.get(key))) == {
        "message_id": 1,
        "receiver": BOB,
        "content_sha256": digest,
    }
    assert IDEMPOTENCY_TTL_SECONDS - 5 < await redis.ttl(key) <= IDEMPOTENCY_TTL_SECONDS
    assert await store.idempotency_record(ADA, "req-1") == IdempotencyRecord(1, BOB, digest)
    assert await store.idempotency_record(BOB, "req-1") is None  # scoped to the sender


async def test_a_used_key_is_rechecked_inside_the_script_and_nothing_is_written(
    store: RedisMessageStore, redis: Redis
) -> None:
    digest = content_digest("hi")
    await store.send_message(ADA, BOB, "hi", T0, request_id="req-1", content_sha256=digest)
    size = await dbsize(redis)
    outcome = await store.send_message(
        ADA, BOB, "hi", T0, request_id="req-1", content_sha256=digest
    )
    assert outcome.outcome == "duplicate" and outcome.message is None
    assert outcome.existing == IdempotencyRecord(1, BOB, digest)
    assert await dbsize(redis) == size and not await redis.exists("message:2")
    assert await redis.xlen("outbox:notifications") == 1


async def test_an_id_that_already_holds_a_message_is_never_overwritten(
    store: RedisMessageStore, redis: Redis
) -> None:
    await add(store, msg(1, content="original"))
    await redis.set(keys.MESSAGE_ID_COUNTER, 0)  # the counter went back
    outcome = await store.send_message(ADA, BOB, "other", T0)
    assert outcome.message is not None and outcome.message.id == 2
    assert json.loads(str(await redis.get("message:1")))["content"] == "original"
    assert await redis.xlen("outbox:notifications") == 2


async def test_message_pages_are_newest_first_below_a_cursor(store: RedisMessageStore) -> None:
    await add(store, msg(1), msg(2, BOB, ADA), msg(3, ADA, CAROL), msg(4))
    assert await ids(store, ADA, None, None) == [4, 3, 2, 1]
    assert await ids(store, ADA, BOB, None) == [4, 2, 1]
    assert await ids(store, ADA, BOB, 4) == [2, 1]
    assert (await store.message_page(ADA, BOB, 4, 1))[0] == [msg(2, BOB, ADA)]
    assert await ids(store, CAROL, None, None) == [3]
    assert await ids(store, CAROL, BOB, None) == []


async def test_messages_carry_the_receivers_read_flag_and_skip_missing_ids(
    store: RedisMessageStore,
) -> None:
    await add(store, msg(1), msg(2, BOB, ADA), msg(3))
    await store.mark_read(BOB, ADA)  # Bob has read 1 and 3; Ada has not read 2
    found = await store.messages([3, 99, 2, 1])
    assert [(m.id, m.read) for m in found] == [(3, True), (2, False), (1, True)]
    assert await store.get(99) is None


async def test_mark_read_clears_the_readers_unread_count_only(
    store: RedisMessageStore, redis: Redis
) -> None:
    await add(store, msg(1), msg(2), msg(3, BOB, ADA))
    conversation = await store.mark_read(BOB, ADA)
    assert conversation is not None
    assert (conversation.peer_email, conversation.unread_count, conversation.message_count) == (
        ADA,
        0,
        3,
    )
    assert conversation.last_message.id == 3 and not conversation.last_message.read
    fields = await redis.hgetall(keys.conversation_key(ADA, BOB))
    assert fields[f"read_upto:{BOB}"] == "3" and fields[f"unread:{BOB}"] == "0"
    assert fields[f"unread:{ADA}"] == "1"
    assert await store.mark_read(BOB, CAROL) is None
    assert not await redis.exists(keys.conversation_key(BOB, CAROL))


async def test_a_message_stored_under_an_id_a_mark_read_covers_counts_as_read(
    store: RedisMessageStore, redis: Redis
) -> None:
    await redis.set(keys.MESSAGE_ID_COUNTER, 4)
    await add(store, msg(5))
    await store.mark_read(BOB, ADA)  # read_upto = 5
    await redis.set(keys.MESSAGE_ID_COUNTER, 3)  # the counter went back: the next id is 4
    outcome = await store.send_message(ADA, BOB, "hi", T0)
    assert outcome.message is not None and (outcome.message.id, outcome.message.read) == (4, True)
    seen_by_bob = await conversation(store, BOB, ADA)
    assert seen_by_bob.unread_count == 0 and seen_by_bob.message_count == 2


async def test_delete_updates_last_message_counts_and_unread(
    store: RedisMessageStore, redis: Redis
) -> None:
    await add(store, msg(1), msg(2), msg(3, BOB, ADA), msg(4))
    await store.mark_read(BOB, ADA)
    await add(store, msg(5))
    assert await store.delete(msg(5))  # unread by Bob: his count goes down
    assert await store.delete(msg(4))  # already read: the count stays
    seen_by_bob = await conversation(store, BOB, ADA)
    assert seen_by_bob.last_message.id == 3 and seen_by_bob.message_count == 3
    assert seen_by_bob.unread_count == 0
    assert seen_by_bob.updated_at == msg(5).timestamp  # deleting does not change it
    assert await ids(store, BOB, None, None) == [3, 2, 1]
    assert not await store.delete(msg(5))  # already gone
    assert (
        await redis.zscore(f"user:{ADA}:conversations_by_time", keys.conversation_key(ADA, BOB))
        == 5
    )


async def test_deleting_the_last_message_removes_the_conversation_everywhere(
    store: RedisMessageStore, redis: Redis
) -> None:
    await add(store, msg(1), msg(2, ADA, CAROL))
    assert await store.delete(msg(1))
    conversations, after = await store.conversation_page(ADA, None, 10)
    assert [c.peer_email for c in conversations] == [CAROL] and after is None
    assert await store.conversation_page(BOB, None, 10) == ([], None)
    assert await redis.smembers(f"user:{BOB}:conversations") == set()
    assert not await redis.exists(keys.conversation_key(ADA, BOB))
    assert await store.mark_read(BOB, ADA) is None


async def test_conversation_pages_are_most_recent_first_below_a_cursor(
    store: RedisMessageStore,
) -> None:
    await add(store, msg(1, ADA, BOB), msg(2, CAROL, ADA), msg(3, BOB, ADA))

    async def peers(before: int | None, size: int) -> tuple[list[str], int | None]:
        page, after = await store.conversation_page(ADA, before, size)
        return [c.peer_email for c in page], after

    assert await peers(None, 10) == ([BOB, CAROL], None)
    assert await peers(3, 10) == ([CAROL], None)
    assert await peers(None, 1) == ([BOB], 3)  # the position: the id of the last message sent


async def test_conversations_seen_from_each_side(store: RedisMessageStore) -> None:
    await add(store, msg(1), msg(2), msg(3, BOB, ADA))
    ada_view = await conversation(store, ADA, BOB)
    bob_view = await conversation(store, BOB, ADA)
    assert (ada_view.peer_email, ada_view.unread_count) == (BOB, 1)
    assert (bob_view.peer_email, bob_view.unread_count) == (ADA, 2)
    assert ada_view.last_message == bob_view.last_message == msg(3, BOB, ADA)
    assert ada_view.updated_at == msg(3).timestamp


async def test_messages_round_trip_through_their_json(store: RedisMessageStore) -> None:
    message = msg(1, content='quote " and \\ and ünïcode')
    await add(store, message)
    assert await store.get(1) == message
    with pytest.raises(ValueError, match="integer id"):
        decode_message('{"id": "42"}')
    with pytest.raises(ValueError, match="content"):
        decode_message('{"id": 42, "sender_email": "a@b.c", "receiver_email": "c@d.e"}')


def test_outbox_events_round_trip_and_malformed_ones_are_refused() -> None:
    event = decode_event(outbox_event(msg(9)))
    assert (event.message_id, event.sender_email, event.receiver_email) == (9, ADA, BOB)
    assert event.timestamp == msg(9).timestamp
    with pytest.raises(ValueError, match="sender_email"):
        decode_event({"message_id": "9"})
    with pytest.raises(ValueError, match="positive integer"):
        decode_event({**outbox_event(msg(9)), "message_id": "-9"})


def test_key_names() -> None:
    assert keys.conversation_key(BOB, ADA) == keys.conversation_key(ADA, BOB)
    assert keys.conversation_messages_key(BOB, ADA) == f"conversation:{ADA}:{BOB}:messages"
    assert keys.idempotency_key(ADA, "x-1") == f"idempotency:send:{ADA}:x-1"
    assert keys.peer_in(keys.conversation_key(ADA, BOB), BOB) == ADA
    with pytest.raises(ValueError, match="participant"):
        keys.peer_in(keys.conversation_key(ADA, BOB), CAROL)


def test_the_outbox_event_carries_a_bounded_preview_and_the_sender_name() -> None:
    message = Message(9, BOB, ADA, "x" * 99 + "é" + "y" * 400, datetime(2025, 1, 14, tzinfo=UTC))
    fields = outbox_event(message, "", "Bob " + "B" * 200)
    assert fields["preview"] == "x" * 99 + "é"
    assert fields["sender_name"] == "Bob " + "B" * 96
    event = decode_event(fields)
    assert (event.preview, event.sender_name) == (fields["preview"], fields["sender_name"])


def test_an_event_recorded_before_previews_still_decodes() -> None:
    old = {
        "message_id": "3",
        "sender_email": BOB,
        "receiver_email": ADA,
        "timestamp": "2025-01-14T12:00:07Z",
    }
    event = decode_event(old)
    assert (event.message_id, event.preview, event.sender_name) == (3, "", "")
