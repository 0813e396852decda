"""The outbox relay pushing notifications to a FrontendService stand-in over real gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.delivery import DEAD_LETTER_REASON_FIELD, Relay
from services.common.grpc_edge import peer_channel
from services.notification.relay import OUTBOX, FrontendPush, consumer_name
from services.notification.service import NotificationService
from services.notification.store import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM
from services.notification.wire import notification_to_proto
from tests.unit.notification.conftest import (
    ADA,
    BOB,
    MESSAGE_SERVICE,
    StartFrontend,
    stream_fields,
    when,
)

FAST = dataclasses.replace(OUTBOX, backoff_initial=0.01, backoff_max=0.05, block_ms=100)


@pytest.fixture
async def channel(keys: Path, frontend_port: int) -> AsyncIterator[grpc.aio.Channel]:
    credentials = Security.load(keys, "notification").credentials
    channel = peer_channel(f"127.0.0.1:{frontend_port}", credentials, target="frontend")
    yield channel
    await channel.close()


async def notify(service: NotificationService, *message_ids: int) -> None:
    for message_id in message_ids:
        await service.create_notification(
            MESSAGE_SERVICE,
            message_id=message_id,
            sender_email=ADA,
            receiver_email=BOB,
            timestamp=when(message_id),
        )


async def pending(redis: Redis) -> int:
    return int((await redis.xpending(OUTBOX_STREAM, OUTBOX.group))["pending"])


async def test_the_relay_pushes_each_new_notification_and_acks_it(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_frontend: StartFrontend,
    frontend_port: int,
) -> None:
    await notify(service, 1, 2)
    relay = Relay(redis, FAST, "test-relay", FrontendPush(channel))
    async with start_frontend(frontend_port) as frontend:
        assert await relay.drain_once() == 2

    stored = (await service.list_notifications(MESSAGE_SERVICE, BOB)).notifications
    assert frontend.received == [
        ("notification", notification_to_proto(n)) for n in reversed(stored)
    ]
    assert await pending(redis) == 0
    assert await redis.xlen(OUTBOX_DEAD_LETTER_STREAM) == 0
    assert relay.stats()["delivered"] == 2


async def test_unavailable_and_deadline_exceeded_are_retried_until_delivered(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_frontend: StartFrontend,
    frontend_port: int,
) -> None:
    await notify(service, 1)
    relay = Relay(redis, FAST, "test-relay", FrontendPush(channel, timeout=0.3))
    async with start_frontend(frontend_port) as frontend:
        frontend.failures = [grpc.StatusCode.UNAVAILABLE]
        frontend.stall_seconds = 1.0  # the first push times out
        acked = 0
        deadline = time.monotonic() + 10
        while not acked and time.monotonic() < deadline:
            acked = await relay.drain_once()

    assert acked == 1 and frontend.calls == 3
    assert [n.id for _, n in frontend.received] == ["1"]
    assert relay.stats()["retried"] == 2
    assert await pending(redis) == 0
    assert await redis.xlen(OUTBOX_DEAD_LETTER_STREAM) == 0


async def test_a_refused_notification_is_dead_lettered_at_once(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_frontend: StartFrontend,
    frontend_port: int,
) -> None:
    await notify(service, 1)
    relay = Relay(redis, FAST, "test-relay", FrontendPush(channel))
    async with start_frontend(frontend_port) as frontend:
        frontend.failures = [grpc.StatusCode.INVALID_ARGUMENT]
        assert await relay.drain_once() == 1

    assert frontend.calls == 1 and frontend.received == []
    dead = await stream_fields(redis, OUTBOX_DEAD_LETTER_STREAM)
    assert len(dead) == 1 and dead[0]["id"] == "1"
    assert "refused notification 1" in dead[0][DEAD_LETTER_REASON_FIELD]
    assert await pending(redis) == 0


async def test_a_malformed_outbox_entry_is_dead_lettered_without_a_push(
    redis: Redis, channel: grpc.aio.Channel, start_frontend: StartFrontend, frontend_port: int
) -> None:
    await redis.xadd(OUTBOX_STREAM, {"id": "5", "notification": "{not json"})
    relay = Relay(redis, FAST, "test-relay", FrontendPush(channel))
    async with start_frontend(frontend_port) as frontend:
        assert await relay.drain_once() == 1
    assert frontend.calls == 0
    assert await redis.xlen(OUTBOX_DEAD_LETTER_STREAM) == 1


async def test_a_frontend_that_is_down_delays_the_push_without_losing_it(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_frontend: StartFrontend,
    frontend_port: int,
) -> None:
    await notify(service, 1)
    config = dataclasses.replace(FAST, max_attempts=1000)
    relay = Relay(redis, config, "test-relay", FrontendPush(channel, timeout=0.5))
    running = asyncio.create_task(relay.run())
    try:
        while relay.stats()["retried"] < 2:  # noqa: ASYNC110 - observing a real relay
            await asyncio.sleep(0.01)
        assert await pending(redis) == 1
        async with start_frontend(frontend_port) as frontend:
            deadline = time.monotonic() + 10
            while not frontend.received and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            while await pending(redis) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert [n.id for _, n in frontend.received] == ["1"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await pending(redis) == 0


def test_the_consumer_is_named_after_host_and_process() -> None:
    assert consumer_name() == f"{socket.gethostname()}-{os.getpid()}"
    assert (OUTBOX.stream, OUTBOX.group, OUTBOX.dead_letter_stream) == (
        "outbox:frontend",
        "frontend-relay",
        "outbox:frontend:dead",
    )
