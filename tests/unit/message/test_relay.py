"""The outbox relay notifying a NotificationService stand-in over real gRPC, at least once."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import grpc
import grpc.aio
import pytest
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.delivery import (
    DEAD_LETTER_ID_FIELD,
    DEAD_LETTER_OUTCOME_FIELD,
    DEAD_LETTER_REASON_FIELD,
    Relay,
    consumer_name,
)
from services.common.grpc_client import peer_channel
from services.message.models import Message
from services.message.relay import (
    NOTIFY_TIMEOUT_SECONDS,
    OUTBOX,
    NotifyReceiver,
    lane_key,
)
from services.message.service import MessageService
from tests.helpers.accounts import account_id_of
from tests.unit.message.conftest import ADA, BOB, CAROL, StartNotification, stream_fields, user

FAST = dataclasses.replace(OUTBOX, backoff_initial=0.01, backoff_max=0.05, block_ms=100)
DEAD = "outbox:notifications:dead"


@pytest.fixture
async def channel(keys: Path, notification_port: int) -> AsyncIterator[grpc.aio.Channel]:
    credentials = Security.load(keys, "message").credentials
    channel = peer_channel(f"127.0.0.1:{notification_port}", credentials, target="notification")
    yield channel
    await channel.close()


async def pending(redis: Redis) -> int:
    return int((await redis.xpending(OUTBOX.stream, OUTBOX.group))["pending"])


async def send_two(service: MessageService) -> list[Message]:
    return [
        await service.send(user(ADA), sender_email=ADA, receiver_email=BOB, content="one"),
        await service.send(user(CAROL), sender_email=CAROL, receiver_email=BOB, content="two"),
    ]


async def test_the_relay_creates_one_notification_per_message_and_acks(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    sent = await send_two(service)
    relay = Relay(redis, FAST, "test-relay", NotifyReceiver(channel))
    async with start_notification(notification_port) as notification:
        assert await relay.drain_once() == 2

    assert [who for who, _ in notification.received] == ["message", "message"]
    requests = [request for _, request in notification.received]
    assert [(r.message_id, r.sender_email, r.receiver_email, r.read) for r in requests] == [
        (m.id, m.sender_email, m.receiver_email, False) for m in sent
    ]
    assert [r.timestamp.ToDatetime(tzinfo=UTC) for r in requests] == [m.timestamp for m in sent]
    assert [(r.preview, r.sender_name) for r in requests] == [("one", "Ada"), ("two", "Carol")]
    assert await pending(redis) == 0
    assert await redis.xlen(DEAD) == 0
    assert relay.stats()["delivered"] == 2


async def test_an_event_recorded_before_previews_is_still_delivered(
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    await redis.xadd(
        OUTBOX.stream,
        {
            "message_id": "41",
            "sender_email": ADA,
            "receiver_email": BOB,
            "timestamp": "2025-01-14T12:00:41Z",
        },
    )
    relay = Relay(redis, FAST, "test-relay", NotifyReceiver(channel))
    async with start_notification(notification_port) as notification:
        assert await relay.drain_once() == 1
    [(_, request)] = notification.received
    assert (request.message_id, request.preview, request.sender_name) == (41, "", "")
    assert await redis.xlen(DEAD) == 0


async def test_unavailable_and_deadlines_are_retried_until_delivered(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    await service.send(user(ADA), sender_email=ADA, receiver_email=BOB, content="hi")
    relay = Relay(redis, FAST, "test-relay", NotifyReceiver(channel))
    async with start_notification(notification_port) as notification:
        notification.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
        acked = 0
        deadline = time.monotonic() + 10
        while not acked and time.monotonic() < deadline:
            acked = await relay.drain_once()
    assert acked == 1 and notification.calls == 3 and len(notification.received) == 1
    assert relay.stats()["retried"] == 2
    assert await pending(redis) == 0 and await redis.xlen(DEAD) == 0


async def test_a_refused_event_is_dead_lettered_at_once(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    sent = await service.send(user(ADA), sender_email=ADA, receiver_email=BOB, content="hi")
    relay = Relay(redis, FAST, "test-relay", NotifyReceiver(channel))
    async with start_notification(notification_port) as notification:
        notification.failures = [grpc.StatusCode.INVALID_ARGUMENT]
        assert await relay.drain_once() == 1
    assert notification.calls == 1 and notification.received == []
    [dead] = await stream_fields(redis, DEAD)
    assert dead["message_id"] == str(sent.id)
    assert f"refused message {sent.id}" in dead[DEAD_LETTER_REASON_FIELD]
    assert await pending(redis) == 0


async def test_a_malformed_entry_is_dead_lettered_without_a_call(
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    await redis.xadd(OUTBOX.stream, {"message_id": "x", "sender_email": ADA})
    relay = Relay(redis, FAST, "test-relay", NotifyReceiver(channel))
    async with start_notification(notification_port) as notification:
        assert await relay.drain_once() == 1
    assert notification.calls == 0
    assert await redis.xlen(DEAD) == 1


async def test_a_notification_service_that_is_down_delays_without_losing(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    sent = await service.send(user(ADA), sender_email=ADA, receiver_email=BOB, content="hi")
    config = dataclasses.replace(FAST, max_attempts=1000)
    relay = Relay(redis, config, "test-relay", NotifyReceiver(channel, timeout=0.5))
    running = asyncio.create_task(relay.run())
    try:
        while relay.stats()["retried"] < 2:  # noqa: ASYNC110 - observing a real relay
            await asyncio.sleep(0.01)
        assert await pending(redis) == 1
        async with start_notification(notification_port) as notification:
            deadline = time.monotonic() + 10
            while await pending(redis) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert [r.message_id for _, r in notification.received] == [sent.id]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await pending(redis) == 0


def test_the_relay_is_configured_as_documented() -> None:
    assert consumer_name() == f"{socket.gethostname()}-{os.getpid()}"
    assert (OUTBOX.stream, OUTBOX.group, OUTBOX.dead_letter_stream) == (
        "outbox:notifications",
        "notification-relay",
        "outbox:notifications:dead",
    )
    # A delivery (one deadline) must end well before the relay re-reads its batch.
    assert NOTIFY_TIMEOUT_SECONDS * 1000 < OUTBOX.claim_idle_ms / 2


async def test_an_outage_longer_than_any_retry_budget_loses_and_dead_letters_nothing(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    # With FAST's 10-50 ms backoff, the old budget of 8 attempts was spent in well under 0.5 s;
    # NotificationService stays down for 2 s here, while messages keep arriving.
    relay = Relay(
        redis, FAST, "test-relay", NotifyReceiver(channel, timeout=0.2), lane_key=lane_key
    )
    running = asyncio.create_task(relay.run())
    sent: list[Message] = []
    try:
        # At least 2 s, and until more attempts failed than the old budget allowed (a loaded
        # machine makes each attempt slower), within a bound.
        outage_ends, give_up = time.monotonic() + 2, time.monotonic() + 20
        while time.monotonic() < outage_ends or (
            relay.stats()["retried"] < 8 and time.monotonic() < give_up
        ):
            sent += await send_two(service)
            await asyncio.sleep(0.1)
        assert relay.stats()["retried"] >= 8 and relay.stats()["delivered"] == 0
        async with start_notification(notification_port) as notification:
            deadline = time.monotonic() + 10
            while await pending(redis) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            delivered = {r.message_id for _, r in notification.received}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert delivered == {m.id for m in sent}
    assert await redis.xlen(DEAD) == 0 and relay.stats()["dead_lettered"] == 0
    assert await pending(redis) == 0


async def test_a_poison_entry_is_dead_lettered_with_its_reason_while_others_flow(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    first = await send_two(service)
    poison_id = await redis.xadd(OUTBOX.stream, {"message_id": "7", "receiver_email": BOB})
    second = await send_two(service)
    relay = Relay(redis, FAST, "test-relay", NotifyReceiver(channel), lane_key=lane_key)
    async with start_notification(notification_port) as notification:
        assert await relay.drain_once() == 5
    assert [r.message_id for _, r in notification.received] == [m.id for m in first + second]
    [dead] = await stream_fields(redis, DEAD)
    assert dead[DEAD_LETTER_ID_FIELD] == poison_id
    assert dead[DEAD_LETTER_OUTCOME_FIELD] == "permanent"
    assert f"malformed outbox entry {poison_id}" in dead[DEAD_LETTER_REASON_FIELD]
    assert await pending(redis) == 0


def test_events_are_ordered_per_receiver() -> None:
    assert lane_key({"receiver_email": BOB, "message_id": "1"}) == BOB
    assert lane_key({"message_id": "1"}) == ""


async def test_a_backlog_goes_one_call_per_event_to_a_service_without_batches(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
) -> None:
    sent = [
        await service.send(user(ADA), sender_email=ADA, receiver_email=BOB, content=str(n))
        for n in range(5)
    ]
    receiver = NotifyReceiver(channel)
    relay = Relay(
        redis, FAST, "test-relay", receiver, lane_key=lane_key, batch_handler=receiver.deliver_batch
    )
    async with start_notification(notification_port) as notification:  # no CreateNotifications
        assert await relay.drain_once() == 5
    assert [r.message_id for _, r in notification.received] == [m.id for m in sent]
    assert await pending(redis) == 0 and await redis.xlen(DEAD) == 0


@pytest.mark.parametrize("batches", [False, True])
async def test_every_notification_request_names_the_receivers_account(
    service: MessageService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
    batches: bool,
) -> None:
    for n in range(4):  # a backlog for one receiver: one batch when the peer takes batches
        await service.send(user(ADA), sender_email=ADA, receiver_email=BOB, content=str(n))
    receiver = NotifyReceiver(channel)
    relay = Relay(
        redis, FAST, "test-relay", receiver, lane_key=lane_key, batch_handler=receiver.deliver_batch
    )
    async with start_notification(notification_port, batches=batches) as notification:
        assert await relay.drain_once() == 4
    assert [r.receiver_account_id for _, r in notification.received] == [account_id_of(BOB)] * 4
    assert notification.batches == (1 if batches else 0)
