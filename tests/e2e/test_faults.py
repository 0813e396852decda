"""Nothing lost, nothing duplicated: services and Valkey stopped or killed while messages flow."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from services.common.bootstrap import Security
from services.common.grpc_client import peer_channel
from tests.helpers.aof import AOF_WINDOW_SECONDS
from tests.helpers.clients import Stubs, User, register_and_login
from tests.helpers.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


async def _send_many(
    stubs: Stubs, sender: User, receiver: User, count: int, workers: int = 10
) -> list[int]:
    """Send `count` messages; the ids of those that got OK (failures are tolerated here)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    ok: list[int] = []

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            try:
                ok.append(
                    (await stubs.send(sender, receiver, f"message {n}", request_id=f"r{n}")).id
                )
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ), exc

    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok


async def _stored(stubs: Stubs, user: User) -> list[int]:
    """Message ids of every stored notification of `user` (all pages)."""
    ids: list[int] = []
    token = ""
    while True:
        page = await stubs.notification.ListNotifications(
            notification_pb2.ListNotificationsRequest(
                email=user.email, page_size=100, page_token=token
            ),
            metadata=user.metadata,
            timeout=5,
        )
        ids += [n.message_id for n in page.notifications]
        token = page.next_page_token
        if not token:
            return ids


async def _wait_stored(stubs: Stubs, user: User, expected: set[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        try:
            stored = await _stored(stubs, user)
        except grpc.aio.AioRpcError:
            stored = []
        if set(stored) >= expected or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.2)


async def _collect_live(stubs: Stubs, user: User, expected: set[int], within: float) -> list[int]:
    """Message ids a fresh subscription yields (replay, then live) until all expected arrived."""
    seen: list[int] = []
    stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=user.email), metadata=user.metadata
    )
    deadline = time.monotonic() + within
    try:
        while not set(seen) >= expected and time.monotonic() < deadline:
            try:
                item = await asyncio.wait_for(
                    stream.read(), timeout=max(0.1, deadline - time.monotonic())
                )
            except TimeoutError:
                break
            assert isinstance(item, notification_pb2.Notification)
            seen.append(item.message_id)
    finally:
        stream.cancel()
    return seen


async def _users(system: System) -> tuple[Stubs, User, User]:
    await system.wait_healthy()
    stubs = Stubs.connect(system)
    return stubs, await register_and_login(system, "Ada"), await register_and_login(system, "Bob")


async def test_notification_service_down_delays_but_never_loses(fresh_system: System) -> None:
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    try:
        fresh_system.stop("notification")
        sent = await _send_many(stubs, ada, bob, 200)
        assert len(sent) == 200, "SendMessage must not depend on NotificationService"
        fresh_system.start("notification")
        await fresh_system.wait_healthy("notification")
        restarted = time.monotonic()
        stored = await _wait_stored(stubs, bob, set(sent), within=10)
        live = await _collect_live(
            stubs, bob, set(sent), within=max(1.0, 10 - (time.monotonic() - restarted))
        )
        assert sorted(stored) == sorted(sent), "exactly one stored notification per message"
        assert sorted(live) == sorted(sent), "exactly one delivery per notification on the stream"
    finally:
        await stubs.close()


async def test_frontend_down_stores_notifications_and_replays_them_once(
    fresh_system: System,
) -> None:
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    try:
        fresh_system.stop("frontend")
        sent = await _send_many(stubs, ada, bob, 50)
        assert sorted(await _wait_stored(stubs, bob, set(sent), within=10)) == sorted(sent)
        fresh_system.start("frontend")
        await fresh_system.wait_healthy("frontend")
        live = await _collect_live(stubs, bob, set(sent), within=10)
        await asyncio.sleep(1.0)  # relay redeliveries after the restart must not show twice
        assert Counter(live) == Counter(sent)
    finally:
        await stubs.close()


async def test_message_service_killed_mid_burst_loses_no_acknowledged_notification(
    fresh_system: System,
) -> None:
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    try:
        burst = asyncio.create_task(_send_many(stubs, ada, bob, 400, workers=20))
        while len(await _stored(stubs, bob)) < 20:  # noqa: ASYNC110 - polling the real system
            await asyncio.sleep(0.05)
        fresh_system.kill("message")
        acknowledged = await burst
        assert 0 < len(acknowledged) < 400
        fresh_system.start("message")
        await fresh_system.wait_healthy("message")
        stored = await _wait_stored(stubs, bob, set(acknowledged), within=10)
        assert set(acknowledged) <= set(stored)
        assert len(stored) == len(set(stored)), "no message is notified twice"
    finally:
        await stubs.close()


async def test_valkey_killed_and_restarted_keeps_acknowledged_data_and_services_recover(
    fresh_system: System,
) -> None:
    fresh_system.start()
    stubs, ada, bob = await _users(fresh_system)
    try:
        before = await _send_many(stubs, ada, bob, 50)
        assert len(before) == 50
        await asyncio.sleep(AOF_WINDOW_SECONDS)  # on the AOF before the kill
        fresh_system.valkey.kill()
        with pytest.raises(grpc.aio.AioRpcError) as outage:
            await stubs.send(ada, bob, "during the outage")
        assert outage.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        fresh_system.valkey.restart()
        await fresh_system.wait_healthy(within=10)
        after = (await stubs.send(ada, bob, "after the restart")).id
        messages = await stubs.message.GetMessages(
            message_pb2.GetMessagesRequest(user_email=bob.email, page_size=100),
            metadata=bob.metadata,
            timeout=5,
        )
        assert set(before) | {after} <= {m.id for m in messages.messages}
        stored = await _wait_stored(stubs, bob, set(before) | {after}, within=15)
        assert sorted(stored) == sorted(set(before) | {after})
        assert all(fresh_system.services[name].running for name in fresh_system.services)
    finally:
        await stubs.close()


async def test_redelivered_notification_event_is_stored_once(fresh_system: System) -> None:
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
        event = notification_pb2.CreateNotificationRequest(
            message_id=987654, sender_email=ada.email, receiver_email=bob.email, timestamp=when
        )
        first, again = [await stub.CreateNotification(event, timeout=5) for _ in range(2)]
        assert first.created and not again.created
        assert first.notification.id == again.notification.id
        assert (await _stored(stubs, bob)).count(987654) == 1
    finally:
        await channel.close()
        await stubs.close()
