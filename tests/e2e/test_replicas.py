"""Replicas: live fan-out across FrontendService replicas, relays sharing their consumer group,
and round_robin over UserService replicas, with real processes on one embedded Valkey."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
import redis
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.notification.v1 import notification_pb2 as N

from tests.helpers.clients import Stubs, User, next_notification, register_and_login
from tests.helpers.replicas import Replica, server_calls
from tests.helpers.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


def _subscribe(
    channel: grpc.aio.Channel, user: User
) -> grpc.aio.UnaryStreamCall[frontend_pb2.SubscribeNotificationsRequest, N.Notification]:
    stub = frontend_pb2_grpc.FrontendServiceStub(channel)
    return stub.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=user.email), metadata=user.metadata
    )


async def test_a_push_to_one_frontend_replica_reaches_the_streams_on_every_replica_once(
    fresh_system: System, replicas: list[Replica]
) -> None:
    system = fresh_system
    system.start()
    second = Replica(system, "frontend", system.base / "frontend-2.log")
    replicas.append(second)
    await system.wait_healthy()
    await second.wait_healthy()
    stubs = Stubs.connect(system)  # pushes go to the System's FrontendService only
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    async with grpc.aio.insecure_channel(second.addr) as other:
        on_b = _subscribe(other, bob)
        on_a = _subscribe(stubs.channels[3], bob)
        try:
            await asyncio.sleep(0.3)  # both registered before the send
            sent = [await stubs.send(ada, bob, f"hello {n}") for n in range(3)]
            for stream in (on_b, on_a):
                shown = [await next_notification(stream) for _ in sent]
                assert [n.message_id for n in shown] == [m.id for m in sent]
            # The replicas' bus subscriptions are lost (their pub/sub connections killed): each
            # stream ends with UNAVAILABLE, since it may have missed a notification. That is
            # also the next thing each stream carries: no notification came twice.
            with redis.Redis.from_url(system.valkey.url) as admin:
                assert admin.client_kill_filter(_type="pubsub") >= 2  # also revocation followers
            for stream in (on_b, on_a):
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await asyncio.wait_for(stream.read(), 10)
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "reconnect" in (ended.value.details() or "")
            # ...one sent meanwhile is replayed on reconnect, with those never marked read.
            missed = await stubs.send(ada, bob, "while B was resubscribing")
            deadline = time.monotonic() + 10
            while True:  # B refuses streams until it is subscribed again
                again = _subscribe(other, bob)
                try:
                    replayed = [await next_notification(again) for _ in range(4)]
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    assert time.monotonic() < deadline, exc
                    await asyncio.sleep(0.2)
            assert [n.message_id for n in replayed] == [*(m.id for m in sent), missed.id]
            live = await stubs.send(ada, bob, "live again")
            assert (await next_notification(again)).message_id == live.id
            again.cancel()
        finally:
            on_a.cancel()
            on_b.cancel()
            await stubs.close()


async def test_calls_spread_over_user_replicas_and_survive_one_killed(
    fresh_system: System, replicas: list[Replica]
) -> None:
    system = fresh_system
    system.start("user", "notification", "frontend")
    second = Replica(system, "user", system.base / "user-2.log")
    replicas.append(second)
    await system.wait_healthy("user", "notification", "frontend")
    await second.wait_healthy()
    # MessageService balances over both UserService replicas (its USER_SERVICE_ADDR is a list);
    # each replica's gRPC server metrics count the calls it handled.
    system.extra_env.update(USER_SERVICE_ADDR=f"{system.grpc_addr('user')},{second.addr}")
    system.start("message")
    await system.wait_healthy("message")
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    check = "/missive.user.v1.UserService/CheckUsersExist"
    urls = (system.metrics_url("user"), second.metrics_url)

    async def handled() -> tuple[int, ...]:
        return tuple(await asyncio.gather(*(server_calls(url, check) for url in urls)))

    before = await handled()
    async with grpc.aio.insecure_channel(system.grpc_addr("message")) as channel:
        message = message_pb2_grpc.MessageServiceStub(channel)

        async def send(receiver: str) -> message_pb2.SendMessageResponse:
            return await message.SendMessage(
                message_pb2.SendMessageRequest(
                    sender_email=ada.email, receiver_email=receiver, content="hi"
                ),
                metadata=ada.metadata,
                timeout=10,
            )

        async def unknown(n: int) -> None:
            # An unknown receiver is never cached: every send asks UserService.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await send(f"nobody-{n}@example.com")
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value

        for n in range(20):
            await unknown(n)
        counts = tuple(now - then for now, then in zip(await handled(), before, strict=True))
        print(f"CheckUsersExist per UserService replica over 20 sends: {counts}")
        assert sum(counts) == 20 and min(counts) >= 5, counts
        second.kill()
        for n in range(20, 30):  # every call still answered, by the replica left
            await unknown(n)
        assert (await send(bob.email)).message.receiver_email == bob.email


async def test_two_message_relays_with_one_killed_deliver_every_event_once(
    fresh_system: System, replicas: list[Replica]
) -> None:
    system = fresh_system
    system.start()
    second = Replica(system, "message", system.base / "message-2.log")
    replicas.append(second)
    await system.wait_healthy()
    await second.wait_healthy()
    stubs = Stubs.connect(system)
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    # NotificationService is down: both relays read the events and hold them (retrying).
    system.stop("notification")
    sent = [await stubs.send(ada, bob, f"event {n}") for n in range(40)]
    group = "outbox:notifications"
    with redis.Redis.from_url(system.valkey.url, db=1, decode_responses=True) as data:
        deadline = time.monotonic() + 10
        while True:
            holding = {
                c["name"]: c["pending"]
                for g in data.xinfo_groups(group)
                for c in data.xinfo_consumers(group, g["name"])
            }
            if sum(holding.values()) == len(sent) and len(holding) == 2:
                break
            assert time.monotonic() < deadline, holding
            await asyncio.sleep(0.1)
        print(f"events held per relay before the kill: {sorted(holding.values())}")
        assert all(count > 0 for count in holding.values()), holding
        second.kill()  # its events stay pending under its name until reclaimed
        system.start("notification")
        await system.wait_healthy("notification")
        started = time.monotonic()
        stored: list[int] = []
        while True:
            reply = await stubs.notification.ListNotifications(
                N.ListNotificationsRequest(email=bob.email, page_size=100),
                metadata=bob.metadata,
                timeout=5,
            )
            stored = [n.message_id for n in reply.notifications]
            if len(set(stored)) == len(sent) or time.monotonic() - started > 45:
                break
            await asyncio.sleep(0.5)
        print(f"every event delivered {time.monotonic() - started:.1f}s after the restart")
        assert sorted(stored) == sorted(m.id for m in sent)  # every one, each stored once
        for g in data.xinfo_groups(group):
            assert g["pending"] == 0, g
    await stubs.close()
