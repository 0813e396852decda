"""The relays on the real system: outages beyond any retry budget, poison events, batches."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis.asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from services.common.bootstrap import Security
from services.common.grpc_client import peer_channel
from tests.e2e.test_faults import _collect_live, _stored, _users, _wait_stored
from tests.helpers.clients import Stubs, User
from tests.helpers.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.slow]

MESSAGE_DB, NOTIFICATION_DB = 1, 2


async def _send_many(stubs: Stubs, sender: User, receiver: User, count: int) -> list[int]:
    """Send ``count`` messages, each with its own client_request_id; their ids."""
    ids = []
    for _ in range(count):
        ids.append((await stubs.send(sender, receiver, "hello", request_id=uuid.uuid4().hex)).id)
    return ids


async def _dead_letters(system: System) -> int:
    total = 0
    for db, stream in (
        (MESSAGE_DB, "outbox:notifications:dead"),
        (NOTIFICATION_DB, "outbox:frontend:dead"),
    ):
        async with redis.asyncio.Redis.from_url(system.valkey.url, db=db) as client:
            total += await client.xlen(stream)
    return total


async def test_a_notification_service_outage_of_15s_loses_and_dead_letters_nothing(
    fresh_system: System,
) -> None:
    # The old relay gave up after 8 attempts (~6-11 s) and dead-lettered the event for good.
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    try:
        fresh_system.kill("notification")
        sent = await _send_many(stubs, ada, bob, 30)
        await asyncio.sleep(15)
        sent += await _send_many(stubs, ada, bob, 10)
        assert len(sent) == 40
        fresh_system.start("notification")
        await fresh_system.wait_healthy("notification")
        stored = await _wait_stored(stubs, bob, set(sent), within=15)
        assert sorted(stored) == sorted(sent)
        live = await _collect_live(stubs, bob, set(sent), within=10)
        assert sorted(live) == sorted(sent)
        assert await _dead_letters(fresh_system) == 0
    finally:
        await stubs.close()


async def test_a_poison_event_is_dead_lettered_with_its_reason_while_others_flow(
    fresh_system: System,
) -> None:
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    async with redis.asyncio.Redis.from_url(
        fresh_system.valkey.url, db=MESSAGE_DB, decode_responses=True
    ) as messages:
        try:
            fresh_system.stop("notification")  # so that the poison sits inside a backlog
            before = await _send_many(stubs, ada, bob, 10)
            poison = await messages.xadd(
                "outbox:notifications", {"message_id": "oops", "receiver_email": bob.email}
            )
            after = await _send_many(stubs, ada, bob, 10)
            fresh_system.start("notification")
            await fresh_system.wait_healthy("notification")
            stored = await _wait_stored(stubs, bob, set(before + after), within=10)
            assert sorted(stored) == sorted(before + after)
            deadline = time.monotonic() + 5
            while not await messages.xlen("outbox:notifications:dead"):
                assert time.monotonic() < deadline, "the poison event was not dead-lettered"
                await asyncio.sleep(0.05)
            entries: Any = await messages.xrange("outbox:notifications:dead")
            [(_, dead)] = entries
            assert dead["dead_letter.id"] == poison
            assert dead["dead_letter.outcome"] == "permanent"
            assert "malformed outbox entry" in dead["dead_letter.reason"]
            assert dead["message_id"] == "oops"
        finally:
            await stubs.close()


async def test_a_batch_redelivered_after_a_crash_stores_each_notification_once(
    fresh_system: System,
) -> None:
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    credentials = Security.load(fresh_system.keys_dir, "message").credentials
    channel = peer_channel(
        fresh_system.grpc_addr("notification"), credentials, target="notification"
    )
    try:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        when = Timestamp()
        when.GetCurrentTime()
        items = [
            notification_pb2.CreateNotificationRequest(
                message_id=900_000 + n,
                sender_email=ada.email,
                receiver_email=bob.email,
                timestamp=when,
            )
            for n in range(5)
        ]
        first = await stub.CreateNotifications(
            notification_pb2.CreateNotificationsRequest(items=items[:3]), timeout=5
        )
        again = await stub.CreateNotifications(
            notification_pb2.CreateNotificationsRequest(items=items), timeout=5
        )
        assert [r.response.created for r in first.results] == [True] * 3
        assert [r.response.created for r in again.results] == [False] * 3 + [True] * 2
        stored = await _stored(stubs, bob)
        assert sorted(n for n in stored if n >= 900_000) == [900_000 + n for n in range(5)]
    finally:
        await channel.close()
        await stubs.close()
