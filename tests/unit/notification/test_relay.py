"""The outbox relay pushing notifications to a FrontendService stand-in over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.notification.v1 import notification_pb2
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.delivery import DEAD_LETTER_REASON_FIELD, Relay, consumer_name
from services.common.grpc_client import peer_channel
from services.common.grpc_edge import Context, EdgeInterceptor
from services.common.grpc_server import bind_port, create_grpc_server
from services.notification.keys import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM
from services.notification.relay import OUTBOX, FrontendPush, lane_key
from services.notification.service import NotificationService
from services.notification.wire import notification_to_proto
from tests.unit.notification.conftest import (
    ADA,
    BOB,
    EVE,
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


class SelectiveFrontend(frontend_pb2_grpc.FrontendServiceServicer):
    """A peer stand-in: hangs on pushes for ``stuck`` receivers, fails some others at random."""

    def __init__(self, stuck: set[str], failure_rate: float = 0.0, fail_first: int = 0) -> None:
        self.stuck = stuck
        self.failure_rate = failure_rate
        self.fail_first = fail_first
        self.rng = random.Random(5)
        self.received: list[notification_pb2.Notification] = []

        self.batches: list[int] = []  # sizes of the ReceiveNotifications calls
        self.singles = 0  # ReceiveNotification calls
        self.accounts: list[str] = []  # receiver_account_id of every push received

    async def _admit(self, receivers: set[str], context: Context) -> None:
        if receivers & self.stuck:
            await asyncio.sleep(30)  # the relay's deadline ends the call first
        self.fail_first -= 1
        if self.fail_first >= 0 or self.rng.random() < self.failure_rate:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in failure")

    async def ReceiveNotification(
        self, request: frontend_pb2.ReceiveNotificationRequest, context: Context
    ) -> frontend_pb2.ReceiveNotificationResponse:
        await self._admit({request.notification.receiver_email}, context)
        self.singles += 1
        self.received.append(request.notification)
        self.accounts.append(request.receiver_account_id)
        return frontend_pb2.ReceiveNotificationResponse(delivered_to=1)

    async def ReceiveNotifications(
        self, request: frontend_pb2.ReceiveNotificationsRequest, context: Context
    ) -> frontend_pb2.ReceiveNotificationsResponse:
        await self._admit({item.notification.receiver_email for item in request.items}, context)
        self.batches.append(len(request.items))
        self.received.extend(item.notification for item in request.items)
        self.accounts.extend(item.receiver_account_id for item in request.items)
        return frontend_pb2.ReceiveNotificationsResponse(
            results=[frontend_pb2.ReceiveNotificationResult(delivered_to=1) for _ in request.items]
        )

    async def SubscribeNotifications(
        self, request: frontend_pb2.SubscribeNotificationsRequest, context: Context
    ) -> AsyncIterator[notification_pb2.Notification]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")
        yield notification_pb2.Notification()  # pragma: no cover


@contextlib.asynccontextmanager
async def serve_frontend(
    keys: Path, port: int, servicer: SelectiveFrontend
) -> AsyncIterator[SelectiveFrontend]:
    server = create_grpc_server(
        interceptors=[EdgeInterceptor(Security.load(keys, "frontend").verifier)]
    )
    frontend_pb2_grpc.add_FrontendServiceServicer_to_server(servicer, server)
    bind_port(server, "127.0.0.1", port, "FRONTEND_GRPC_PORT")
    await server.start()
    try:
        yield servicer
    finally:
        await server.stop(None)


async def notify_each(service: NotificationService, receivers: list[str]) -> None:
    for message_id, receiver in enumerate(receivers, start=1):
        await service.create_notification(
            MESSAGE_SERVICE,
            message_id=message_id,
            sender_email=ADA if receiver != ADA else BOB,
            receiver_email=receiver,
            timestamp=when(message_id),
        )


async def test_a_stuck_receiver_does_not_hold_back_the_others(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    keys: Path,
    frontend_port: int,
) -> None:
    receivers = [EVE, BOB, EVE, ADA, BOB] * 4
    await notify_each(service, receivers)
    frontend = SelectiveFrontend(stuck={EVE})
    push = FrontendPush(channel, timeout=0.3)
    relay = Relay(
        redis, FAST, "test-relay", push, lane_key=lane_key, batch_handler=push.deliver_batch
    )
    async with serve_frontend(keys, frontend_port, frontend):
        running = asyncio.create_task(relay.run())
        try:
            async with asyncio.timeout(5):
                while len(frontend.received) < receivers.count(BOB) + receivers.count(ADA):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                while await pending(redis) > receivers.count(EVE):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert {n.receiver_email for n in frontend.received} == {ADA, BOB}
            assert await pending(redis) == receivers.count(EVE)  # still pending, not lost
            frontend.stuck.clear()
            async with asyncio.timeout(10):
                while await pending(redis):  # noqa: ASYNC110 - observing a real relay
                    await asyncio.sleep(0.02)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    eve = [int(n.message_id) for n in frontend.received if n.receiver_email == EVE]
    assert eve == [n for n, r in enumerate(receivers, start=1) if r == EVE]
    assert await redis.xlen(OUTBOX_DEAD_LETTER_STREAM) == 0


async def test_many_receivers_pending_events_share_few_batch_calls_in_order(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    keys: Path,
    frontend_port: int,
) -> None:
    # 40 receivers with 3 notifications each, interleaved: 120 events, one lane per receiver.
    receivers = [f"user{n}@example.com" for n in range(40)] * 3
    await notify_each(service, receivers)
    frontend = SelectiveFrontend(stuck=set())
    push = FrontendPush(channel)
    relay = Relay(
        redis, FAST, "test-relay", push, lane_key=lane_key, batch_handler=push.deliver_batch
    )
    async with serve_frontend(keys, frontend_port, frontend):
        assert await relay.drain_once() == len(receivers)
    # The heads of many lanes went together: a few calls of up to 100, not one per receiver.
    assert sum(frontend.batches) == len(receivers) and frontend.singles == 0
    assert len(frontend.batches) <= 3 and max(frontend.batches) == FAST.max_batch
    for receiver in set(receivers):
        got = [int(n.message_id) for n in frontend.received if n.receiver_email == receiver]
        assert got == [n for n, r in enumerate(receivers, start=1) if r == receiver]
    assert await pending(redis) == 0 and relay.stats()["delivered"] == len(receivers)


async def test_each_receiver_gets_its_pushes_in_order_through_failures(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    keys: Path,
    frontend_port: int,
) -> None:
    rng = random.Random(11)
    receivers = [rng.choice([ADA, BOB, EVE]) for _ in range(90)]
    await notify_each(service, receivers)
    frontend = SelectiveFrontend(stuck=set(), failure_rate=0.3, fail_first=2)
    push = FrontendPush(channel)
    relay = Relay(
        redis, FAST, "test-relay", push, lane_key=lane_key, batch_handler=push.deliver_batch
    )
    async with serve_frontend(keys, frontend_port, frontend):
        running = asyncio.create_task(relay.run())
        try:
            async with asyncio.timeout(20):
                while relay.stats()["delivered"] < len(receivers):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    for receiver in (ADA, BOB, EVE):
        got = [int(n.message_id) for n in frontend.received if n.receiver_email == receiver]
        assert got == [n for n, r in enumerate(receivers, start=1) if r == receiver]
    assert relay.stats()["retried"] > 0 and relay.stats()["dead_lettered"] == 0
    assert max(frontend.batches) > 1  # backlogs went in batches


async def test_a_frontend_without_batches_gets_one_push_per_notification(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    start_frontend: StartFrontend,
    frontend_port: int,
) -> None:
    await notify(service, 1, 2, 3)
    push = FrontendPush(channel)
    relay = Relay(
        redis, FAST, "test-relay", push, lane_key=lane_key, batch_handler=push.deliver_batch
    )
    async with start_frontend(frontend_port) as frontend:  # no ReceiveNotifications
        await relay.drain_once()
    assert [n.id for _, n in frontend.received] == ["1", "2", "3"]
    assert await pending(redis) == 0 and relay.stats()["dead_lettered"] == 0


async def test_batched_and_single_pushes_name_the_receivers_account(
    service: NotificationService,
    redis: Redis,
    channel: grpc.aio.Channel,
    keys: Path,
    frontend_port: int,
) -> None:
    account = "0000000000000007" + "e" * 16
    for message_id in range(1, 5):
        await service.create_notification(
            MESSAGE_SERVICE,
            message_id=message_id,
            sender_email=ADA,
            receiver_email=BOB,
            timestamp=when(message_id),
            receiver_account_id=account,
        )
    frontend = SelectiveFrontend(stuck=set())
    push = FrontendPush(channel)
    relay = Relay(
        redis, FAST, "test-relay", push, lane_key=lane_key, batch_handler=push.deliver_batch
    )
    async with serve_frontend(keys, frontend_port, frontend):
        assert await relay.drain_once() == 4
    assert frontend.batches == [4]  # the backlog of one receiver went in one call
    await service.create_notification(
        MESSAGE_SERVICE,
        message_id=5,
        sender_email=ADA,
        receiver_email=BOB,
        timestamp=when(5),
        receiver_account_id=account,
    )
    async with serve_frontend(keys, frontend_port, frontend):
        assert await relay.drain_once() == 1
    assert frontend.batches == [4]  # a lone entry went through ReceiveNotification
    assert frontend.accounts == [account] * 5
