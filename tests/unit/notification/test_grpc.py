"""NotificationService over a real grpc.aio server with the real edge and real credentials."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from missive.notification.v1 import notification_pb2
from redis.asyncio import Redis

from services.notification.keys import OUTBOX_STREAM, notifications_key
from tests.unit.notification.conftest import ADA, BOB, EVE, Server, create_request

pb = notification_pb2
Code = grpc.StatusCode


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value.code()


async def test_message_service_creates_and_the_receiver_lists_it(
    server: Server, redis: Redis
) -> None:
    reply = await server.as_service("message").CreateNotification(create_request(42), timeout=5)

    assert reply.created and reply.subscribed
    assert reply.notification.id == "42" and reply.notification.message_id == 42
    assert (reply.notification.sender_email, reply.notification.receiver_email) == (ADA, BOB)
    assert not reply.notification.read
    assert reply.notification.timestamp == create_request(42).timestamp
    listed = await server.plain().ListNotifications(
        pb.ListNotificationsRequest(email=BOB), metadata=server.user(BOB), timeout=5
    )
    assert list(listed.notifications) == [reply.notification]
    assert listed.unread_count == 1 and listed.next_page_token == ""
    assert await redis.xlen(OUTBOX_STREAM) == 1


async def test_repeats_return_the_stored_notification(server: Server, redis: Redis) -> None:
    stub = server.as_service("message")
    first = await stub.CreateNotification(create_request(7), timeout=5)
    again = await stub.CreateNotification(create_request(7), timeout=5)
    burst = await asyncio.gather(
        *(stub.CreateNotification(create_request(8), timeout=5) for _ in range(5))
    )

    assert first.created and not again.created and again.subscribed
    assert again.notification == first.notification
    assert sum(reply.created for reply in burst) == 1
    assert await redis.llen(notifications_key(BOB)) == 2
    assert await redis.xlen(OUTBOX_STREAM) == 2


async def test_unsubscribed_receiver_gets_no_notification(server: Server, redis: Redis) -> None:
    status = await server.plain().UnsubscribeUser(
        pb.UnsubscribeUserRequest(email=BOB), metadata=server.user(BOB), timeout=5
    )
    assert (status.email, status.subscribed) == (BOB, False)

    reply = await server.as_service("message").CreateNotification(create_request(1), timeout=5)

    assert not reply.HasField("notification")
    assert (reply.created, reply.subscribed) == (False, False)
    assert await redis.exists(notifications_key(BOB), OUTBOX_STREAM) == 0
    await server.plain().SubscribeUser(
        pb.SubscribeUserRequest(email=BOB), metadata=server.user(BOB), timeout=5
    )
    assert (await server.as_service("message").CreateNotification(create_request(2))).created


async def test_only_message_service_may_create(server: Server, redis: Redis) -> None:
    request = create_request(1)
    as_user = server.plain().CreateNotification(request, metadata=server.user(BOB), timeout=5)
    assert await code_of(as_user) == Code.PERMISSION_DENIED
    as_frontend = server.as_service("frontend").CreateNotification(request, timeout=5)
    assert await code_of(as_frontend) == Code.PERMISSION_DENIED
    anonymous = server.plain().CreateNotification(request, timeout=5)
    assert await code_of(anonymous) == Code.UNAUTHENTICATED
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    "request_",
    [
        create_request(0),
        create_request(-1),
        create_request(1, receiver="nope"),
        create_request(1, sender="a?b@example.com"),
        pb.CreateNotificationRequest(message_id=1, sender_email=ADA, receiver_email=BOB),
    ],
)
async def test_invalid_create_is_invalid_argument_and_writes_nothing(
    server: Server, redis: Redis, request_: notification_pb2.CreateNotificationRequest
) -> None:
    call = server.as_service("message").CreateNotification(request_, timeout=5)
    assert await code_of(call) == Code.INVALID_ARGUMENT
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(2**62, 0), (253402300800, 0), (-62135596801, 0), (0, -1), (0, 10**9)]
)
async def test_out_of_range_timestamp_is_invalid_argument(
    server: Server, redis: Redis, seconds: int, nanos: int
) -> None:
    request = create_request(1)
    request.timestamp.seconds, request.timestamp.nanos = seconds, nanos
    call = server.as_service("message").CreateNotification(request, timeout=5)
    assert await code_of(call) == Code.INVALID_ARGUMENT
    assert await redis.dbsize() == 0


async def test_subscription_rpcs(server: Server) -> None:
    stub, bob = server.plain(), server.user(BOB)
    check = pb.CheckUserSubscribedRequest(email="Bob@Example.com")
    assert (await stub.CheckUserSubscribed(check, metadata=bob, timeout=5)).subscribed
    await stub.UnsubscribeUser(pb.UnsubscribeUserRequest(email=BOB), metadata=bob, timeout=5)
    status = await stub.CheckUserSubscribed(check, metadata=bob, timeout=5)
    assert (status.email, status.subscribed) == (BOB, False)
    # MessageService may read anyone's state with its own credential.
    by_message = await server.as_service("message").CheckUserSubscribed(check, timeout=5)
    assert not by_message.subscribed
    subscribed = await stub.SubscribeUser(pb.SubscribeUserRequest(email=BOB), metadata=bob)
    assert subscribed.subscribed


async def test_list_paginates_and_filters(server: Server) -> None:
    creator, stub, bob = server.as_service("message"), server.plain(), server.user(BOB)
    for message_id in range(1, 6):
        await creator.CreateNotification(create_request(message_id), timeout=5)
    await stub.MarkNotificationRead(
        pb.MarkNotificationReadRequest(email=BOB, id="4"), metadata=bob, timeout=5
    )

    first = await stub.ListNotifications(
        pb.ListNotificationsRequest(email=BOB, page_size=2), metadata=bob, timeout=5
    )
    second = await stub.ListNotifications(
        pb.ListNotificationsRequest(email=BOB, page_size=2, page_token=first.next_page_token),
        metadata=bob,
        timeout=5,
    )
    unread = await stub.ListNotifications(
        pb.ListNotificationsRequest(email=BOB, unread_only=True), metadata=bob, timeout=5
    )
    assert [n.message_id for n in first.notifications] == [5, 4]
    assert [n.message_id for n in second.notifications] == [3, 2]
    assert [n.message_id for n in unread.notifications] == [5, 3, 2, 1]
    assert first.unread_count == second.unread_count == unread.unread_count == 4
    # FrontendService replays anyone's unread notifications with its own credential.
    replay = await server.as_service("frontend").ListNotifications(
        pb.ListNotificationsRequest(email=BOB, unread_only=True), timeout=5
    )
    assert list(replay.notifications) == list(unread.notifications)


async def test_mark_read_and_mark_all_read(server: Server) -> None:
    creator, stub, bob = server.as_service("message"), server.plain(), server.user(BOB)
    for message_id in (1, 2, 3):
        await creator.CreateNotification(create_request(message_id), timeout=5)

    marked = await stub.MarkNotificationRead(
        pb.MarkNotificationReadRequest(email=BOB, id="2"), metadata=bob, timeout=5
    )
    assert marked.read and marked.id == "2"
    everything = pb.MarkAllNotificationsReadRequest(email=BOB)
    assert (await stub.MarkAllNotificationsRead(everything, metadata=bob, timeout=5)).marked == 2
    assert (await stub.MarkAllNotificationsRead(everything, metadata=bob, timeout=5)).marked == 0
    missing = stub.MarkNotificationRead(
        pb.MarkNotificationReadRequest(email=BOB, id="99"), metadata=bob, timeout=5
    )
    assert await code_of(missing) == Code.NOT_FOUND
    malformed = stub.MarkNotificationRead(
        pb.MarkNotificationReadRequest(email=BOB, id="x1"), metadata=bob, timeout=5
    )
    assert await code_of(malformed) == Code.INVALID_ARGUMENT


async def test_other_users_data_is_permission_denied_and_unchanged(server: Server) -> None:
    await server.as_service("message").CreateNotification(create_request(1), timeout=5)
    stub, eve = server.plain(), server.user(EVE)
    calls = [
        stub.ListNotifications(pb.ListNotificationsRequest(email=BOB), metadata=eve, timeout=5),
        stub.MarkNotificationRead(
            pb.MarkNotificationReadRequest(email=BOB, id="1"), metadata=eve, timeout=5
        ),
        stub.MarkAllNotificationsRead(
            pb.MarkAllNotificationsReadRequest(email=BOB), metadata=eve, timeout=5
        ),
        stub.UnsubscribeUser(pb.UnsubscribeUserRequest(email=BOB), metadata=eve, timeout=5),
        stub.SubscribeUser(pb.SubscribeUserRequest(email=BOB), metadata=eve, timeout=5),
        stub.CheckUserSubscribed(pb.CheckUserSubscribedRequest(email=BOB), metadata=eve),
    ]
    for call in calls:
        assert await code_of(call) == Code.PERMISSION_DENIED
    # Services outside an RPC's allowlist are refused too.
    frontend_unsubscribes = server.as_service("frontend").UnsubscribeUser(
        pb.UnsubscribeUserRequest(email=BOB), timeout=5
    )
    assert await code_of(frontend_unsubscribes) == Code.PERMISSION_DENIED
    listed = await stub.ListNotifications(
        pb.ListNotificationsRequest(email=BOB), metadata=server.user(BOB), timeout=5
    )
    assert listed.unread_count == 1
    check = pb.CheckUserSubscribedRequest(email=BOB)
    assert (await stub.CheckUserSubscribed(check, metadata=server.user(BOB))).subscribed


async def test_anonymous_and_bad_tokens_are_unauthenticated(server: Server) -> None:
    stub = server.plain()
    request = pb.ListNotificationsRequest(email=BOB)
    assert await code_of(stub.ListNotifications(request, timeout=5)) == Code.UNAUTHENTICATED
    forged = (("authorization", "Bearer not.a.token"),)
    call = stub.ListNotifications(request, metadata=forged, timeout=5)
    assert await code_of(call) == Code.UNAUTHENTICATED


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListNotificationsRequest(email="bob"),
        pb.ListNotificationsRequest(email=BOB, page_size=101),
        pb.ListNotificationsRequest(email=BOB, page_size=-1),
        pb.ListNotificationsRequest(email=BOB, page_token="%%%"),
    ],
)
async def test_bad_list_requests_are_invalid_argument(
    server: Server, request_: notification_pb2.ListNotificationsRequest
) -> None:
    call = server.plain().ListNotifications(request_, metadata=server.user(BOB), timeout=5)
    assert await code_of(call) == Code.INVALID_ARGUMENT


async def test_bad_subscription_email_is_invalid_argument_and_writes_nothing(
    server: Server, redis: Redis
) -> None:
    call = server.plain().UnsubscribeUser(
        pb.UnsubscribeUserRequest(email="b*b@example.com"), metadata=server.user(BOB), timeout=5
    )
    assert await code_of(call) == Code.INVALID_ARGUMENT
    assert await redis.dbsize() == 0
