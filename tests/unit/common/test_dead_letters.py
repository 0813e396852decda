"""Dead letters listed, replayed (atomically, at most once) and dropped, on a real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.common.dead_letters import MAX_IDS, DeadLetters
from services.common.delivery import OutboxConfig, PermanentDeliveryError, Relay
from services.common.domain import InvalidArgument
from services.common.redis import create_redis

OUTBOX = OutboxConfig(
    stream="outbox:test", group="test-relay", dead_letter_stream="outbox:test:dead"
)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, 3, client_name="dead-letter-test")
    yield client
    await client.aclose()


async def _dead_letter(redis: Redis, events: list[dict[str, str]]) -> list[str]:
    """Put ``events`` (and whatever the outbox holds) through a real relay whose handler
    refuses them for good; the ids of the dead letters."""
    for event in events:
        await redis.xadd(OUTBOX.stream, event)  # type: ignore[arg-type]

    async def refuse(entry_id: str, fields: dict[str, str]) -> None:
        raise PermanentDeliveryError(f"refused {fields.get('message_id')}")

    relay = Relay(redis, OUTBOX, "test-consumer", refuse)
    await relay.ensure_group()
    while await relay.drain_once():
        pass
    entries = await redis.xrange(OUTBOX.dead_letter_stream) or []
    return [str(entry_id) for entry_id, _ in entries]


async def test_list_shows_reason_attempts_and_original_fields_page_by_page(redis: Redis) -> None:
    ids = await _dead_letter(redis, [{"message_id": str(n), "x": "y"} for n in range(5)])
    dead = DeadLetters(redis, OUTBOX)
    first = await dead.page(2, "")
    assert [d.id for d in first.dead_letters] == ids[:2]
    assert first.total == 5 and first.next_page_token
    item = first.dead_letters[0]
    assert item.fields == {"message_id": "0", "x": "y"}
    assert "refused 0" in item.reason and item.attempts == 1
    assert item.consumer == "test-consumer" and item.original_id
    second = await dead.page(2, first.next_page_token)
    last = await dead.page(2, second.next_page_token)
    assert [d.id for d in second.dead_letters + last.dead_letters] == ids[2:]
    assert last.next_page_token == ""
    for size, token in ((101, ""), (-1, ""), (0, "garbage"), (0, "ZDE6eA")):
        with pytest.raises(InvalidArgument):
            await dead.page(size, token)


async def test_replay_moves_the_original_event_back_once(redis: Redis) -> None:
    ids = await _dead_letter(redis, [{"message_id": "1"}, {"message_id": "2"}])
    await redis.xtrim(OUTBOX.stream, maxlen=0)
    dead = DeadLetters(redis, OUTBOX)
    # Concurrent replays of the same id: exactly one puts the event back.
    outcomes = await asyncio.gather(*(dead.replay([ids[0]]) for _ in range(5)))
    assert sorted(o.count for o in outcomes) == [0, 0, 0, 0, 1]
    outbox = await redis.xrange(OUTBOX.stream) or []
    assert [fields for _, fields in outbox] == [{"message_id": "1"}]  # no dead_letter.* field
    assert [d.id for d in (await dead.page(0, "")).dead_letters] == [ids[1]]
    again = await dead.replay([ids[0], "1-1"])
    assert again.count == 0 and again.not_found == [ids[0], "1-1"]


async def test_replay_all_acts_on_what_was_there_and_drop_removes_for_good(redis: Redis) -> None:
    ids = await _dead_letter(redis, [{"message_id": str(n)} for n in range(3)])
    await redis.xtrim(OUTBOX.stream, maxlen=0)
    dead = DeadLetters(redis, OUTBOX)
    dropped = await dead.drop([ids[0]])
    assert dropped.count == 1 and dropped.not_found == []
    assert (await dead.drop([ids[0]])).not_found == [ids[0]]
    replayed = await dead.replay([], everything=True)
    assert replayed.count == 2
    replayed_events = await redis.xrange(OUTBOX.stream) or []
    assert [(f or {})["message_id"] for _, f in replayed_events] == ["1", "2"]
    assert await redis.xlen(OUTBOX.dead_letter_stream) == 0
    # The relay refuses the two replayed events again, and a new one.
    again = await _dead_letter(redis, [{"message_id": "9"}])
    assert len(again) == 3
    assert (await dead.drop([], everything=True)).count == 3
    assert await redis.xlen(OUTBOX.dead_letter_stream) == 0


async def test_bad_requests_change_nothing(redis: Redis) -> None:
    ids = await _dead_letter(redis, [{"message_id": "1"}])
    dead = DeadLetters(redis, OUTBOX)
    for call in (
        dead.replay([]),
        dead.replay(ids, everything=True),
        dead.drop(["not-an-id"]),
        dead.drop(["1-1"] * (MAX_IDS + 1)),
        dead.replay([ids[0], "x"]),
    ):
        with pytest.raises(InvalidArgument):
            await call
    assert [d.id for d in (await dead.page(0, "")).dead_letters] == ids
