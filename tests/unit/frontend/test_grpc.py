"""FrontendService over real gRPC: replay then live, dedupe per stream, auth, errors, logging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from missive.frontend.v1 import frontend_pb2
from missive.notification.v1 import notification_pb2

from services.common.bootstrap import Security
from services.common.grpc_edge import SERVICE_TOKEN_HEADER
from tests.unit.frontend.conftest import (
    ADA,
    BOB,
    Frontend,
    Peer,
    StartFrontend,
    notification,
)

Stream = grpc.aio.UnaryStreamCall[
    frontend_pb2.SubscribeNotificationsRequest, notification_pb2.Notification
]
TokenFor = Callable[[str], str]


async def next_item(stream: Stream, within: float = 5.0) -> notification_pb2.Notification:
    item = await asyncio.wait_for(stream.read(), within)
    assert isinstance(item, notification_pb2.Notification), f"stream ended: {item!r}"
    return item


async def stream_error(stream: Stream, within: float = 5.0) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await asyncio.wait_for(stream.read(), within)
    return failure.value


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    return failure.value


async def test_replays_unread_oldest_first_across_pages_then_streams_live(
    frontend: Frontend, peer: Peer, token_for: TokenFor
) -> None:
    # Newest first, as NotificationService lists them; read ones and other users' are skipped.
    peer.servicer.stored = [
        notification(7),
        notification(6, ADA),
        notification(5),
        notification(4, read=True),
        notification(3),
        notification(2),
        notification(1),
    ]
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        replayed = [await next_item(stream) for _ in range(5)]
        assert replayed == [notification(n) for n in (1, 2, 3, 5, 7)]
        assert await frontend.push(notification(8)) == 1
        assert await next_item(stream) == notification(8)
    finally:
        stream.cancel()
    callers = {name for name, _ in peer.servicer.calls}
    requests = [request for _, request in peer.servicer.calls]
    assert callers == {"frontend"}, "the replay uses FrontendService's own credential"
    assert len(requests) == 3, "all pages are fetched (the stand-in serves 2 per page)"
    assert all(r.email == BOB and r.unread_only for r in requests)
    assert [r.page_token for r in requests] == ["", "2", "4"]


async def test_the_same_id_pushed_twice_is_yielded_once(
    frontend: Frontend, token_for: TokenFor
) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        assert await frontend.push(notification(1)) == 1
        assert await frontend.push(notification(1)) == 0, "already carried by the only stream"
        assert await frontend.push(notification(2)) == 1
        assert [await next_item(stream), await next_item(stream)] == [
            notification(1),
            notification(2),
        ]
    finally:
        stream.cancel()


async def test_a_replayed_id_pushed_live_is_not_sent_again(
    frontend: Frontend, peer: Peer, token_for: TokenFor
) -> None:
    peer.servicer.stored = [notification(2), notification(1)]
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        assert [await next_item(stream), await next_item(stream)] == [
            notification(1),
            notification(2),
        ]
        assert await frontend.push(notification(2)) == 0
        assert await frontend.push(notification(3)) == 1
        assert await next_item(stream) == notification(3)
    finally:
        stream.cancel()


async def test_every_stream_of_the_receiver_gets_it_and_other_users_get_nothing(
    frontend: Frontend, token_for: TokenFor
) -> None:
    first, second = frontend.subscribe(BOB, token_for(BOB)), frontend.subscribe(BOB, token_for(BOB))
    other = frontend.subscribe(ADA, token_for(ADA))
    try:
        await frontend.wait_streams(BOB, 2)
        await frontend.wait_streams(ADA, 1)
        assert await frontend.push(notification(1)) == 2
        assert await next_item(first) == notification(1)
        assert await next_item(second) == notification(1)
        # Ada's first item is the one addressed to her: Bob's never reached her stream.
        assert await frontend.push(notification(2, ADA, sender=BOB)) == 1
        assert await next_item(other) == notification(2, ADA, sender=BOB)
    finally:
        for stream in (first, second, other):
            stream.cancel()


async def test_nobody_connected_is_not_an_error(frontend: Frontend) -> None:
    assert await frontend.push(notification(1)) == 0


async def test_the_receiver_email_is_normalised(frontend: Frontend, token_for: TokenFor) -> None:
    stream = frontend.subscribe(" Bob@Example.COM ", token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        assert await frontend.push(notification(1, "BOB@example.com ")) == 1
        assert await next_item(stream) == notification(1)
    finally:
        stream.cancel()


async def test_a_stream_is_unregistered_when_the_client_cancels(
    frontend: Frontend, token_for: TokenFor
) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    await frontend.wait_streams(BOB, 1)
    stream.cancel()
    await frontend.wait_streams(BOB, 0)
    assert frontend.service.hub.open_streams() == 0
    assert await frontend.push(notification(1)) == 0


async def test_the_notification_is_shown_as_one_structured_log_line(
    frontend: Frontend, token_for: TokenFor, caplog: pytest.LogCaptureFixture
) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        with caplog.at_level(logging.DEBUG, logger="services.frontend"):
            assert await frontend.push(notification(42)) == 1
    finally:
        stream.cancel()
    shown = [r for r in caplog.records if isinstance(getattr(r, "fields", None), dict)]
    assert len(shown) == 1
    assert shown[0].levelno == logging.DEBUG  # one line per push: never INFO on the hot path
    assert shown[0].fields == {  # type: ignore[attr-defined]
        "notification_id": "42",
        "message_id": 42,
        "sender_email": ADA,
        "receiver_email": BOB,
        "timestamp": "2025-01-02T03:04:47+00:00",
        "delivered_to": 1,
    }


async def test_anonymous_subscribe_is_unauthenticated(frontend: Frontend) -> None:
    error = await stream_error(frontend.subscribe(BOB))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert frontend.service.hub.open_streams() == 0


async def test_subscribing_to_another_users_email_is_denied(
    frontend: Frontend, peer: Peer, token_for: TokenFor
) -> None:
    peer.servicer.stored = [notification(1)]
    error = await stream_error(frontend.subscribe(BOB, token_for(ADA)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert frontend.service.hub.open_streams() == 0
    assert peer.servicer.calls == [], "nothing of Bob's was fetched"


async def test_a_service_credential_cannot_subscribe(frontend: Frontend, keys: Path) -> None:
    # Sent by hand: grpc.aio gives peer_channel's interceptor only unary-unary calls.
    credential = Security.load(keys, "notification").credentials.token_for("frontend")
    stream = frontend.plain().SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=BOB),
        metadata=((SERVICE_TOKEN_HEADER, credential),),
    )
    assert (await stream_error(stream)).code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("email", ["", "not-an-email", "b*b@example.com", "bob:x@example.com"])
async def test_a_malformed_subscribe_email_is_invalid(
    frontend: Frontend, token_for: TokenFor, email: str
) -> None:
    error = await stream_error(frontend.subscribe(email, token_for(BOB)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert frontend.service.hub.open_streams() == 0


async def test_receive_with_a_user_token_is_denied(frontend: Frontend, token_for: TokenFor) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        call = frontend.plain().ReceiveNotification(
            frontend_pb2.ReceiveNotificationRequest(notification=notification(1)),
            metadata=(("authorization", f"Bearer {token_for(BOB)}"),),
            timeout=5,
        )
        assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED
        assert await frontend.push(notification(2)) == 1
        assert await next_item(stream) == notification(2), "the denied one never reached it"
    finally:
        stream.cancel()


@pytest.mark.parametrize("service", ["message", "user", "frontend"])
async def test_receive_from_another_service_is_denied(frontend: Frontend, service: str) -> None:
    call = frontend.as_service(service).ReceiveNotification(
        frontend_pb2.ReceiveNotificationRequest(notification=notification(1)), timeout=5
    )
    assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_anonymous_receive_is_unauthenticated(frontend: Frontend) -> None:
    call = frontend.plain().ReceiveNotification(
        frontend_pb2.ReceiveNotificationRequest(notification=notification(1)), timeout=5
    )
    assert (await rpc_error(call)).code() == grpc.StatusCode.UNAUTHENTICATED


def _bad(**changes: object) -> notification_pb2.Notification:
    message = notification(1)
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def _no_timestamp() -> notification_pb2.Notification:
    message = notification(1)
    message.ClearField("timestamp")
    return message


def _out_of_range_timestamp() -> notification_pb2.Notification:
    message = notification(1)
    message.timestamp.seconds = 2**62
    return message


@pytest.mark.parametrize(
    "request_",
    [
        frontend_pb2.ReceiveNotificationRequest(),
        frontend_pb2.ReceiveNotificationRequest(notification=_bad(id="")),
        frontend_pb2.ReceiveNotificationRequest(notification=_bad(id="abc")),
        frontend_pb2.ReceiveNotificationRequest(notification=_bad(id="1" * 20)),
        frontend_pb2.ReceiveNotificationRequest(notification=_bad(receiver_email="")),
        frontend_pb2.ReceiveNotificationRequest(notification=_bad(receiver_email="bob")),
        frontend_pb2.ReceiveNotificationRequest(notification=_bad(receiver_email="?ob@x.com")),
        frontend_pb2.ReceiveNotificationRequest(notification=_out_of_range_timestamp()),
        frontend_pb2.ReceiveNotificationRequest(notification=_no_timestamp()),
    ],
    ids=[
        "unset",
        "empty-id",
        "letters-id",
        "long-id",
        "no-receiver",
        "bad-receiver",
        "glob",
        "ts",
        "no-ts",
    ],
)
async def test_bad_notifications_are_invalid_and_reach_no_stream(
    frontend: Frontend, token_for: TokenFor, request_: frontend_pb2.ReceiveNotificationRequest
) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        call = frontend.as_service("notification").ReceiveNotification(request_, timeout=5)
        assert (await rpc_error(call)).code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await frontend.push(notification(2)) == 1
        assert await next_item(stream) == notification(2)
    finally:
        stream.cancel()


async def test_replay_source_down_is_unavailable(
    start_frontend: StartFrontend, dead_address: str, token_for: TokenFor
) -> None:
    async with start_frontend(dead_address) as frontend:
        error = await stream_error(frontend.subscribe(BOB, token_for(BOB)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "NotificationService" in (error.details() or "")
        await frontend.wait_streams(BOB, 0)


async def test_replay_refused_by_the_peer_is_unavailable(
    frontend: Frontend, peer: Peer, token_for: TokenFor
) -> None:
    # A peer that rejects a page (here the second one) is as good as down for the replay:
    # the client gets UNAVAILABLE (retry), not the peer's code, and nothing half-replayed.
    peer.servicer.stored = [notification(3), notification(2), notification(1)]
    peer.servicer.refuse_page_tokens = True
    stream = frontend.subscribe(BOB, token_for(BOB))
    assert (await stream_error(stream)).code() == grpc.StatusCode.UNAVAILABLE
    await frontend.wait_streams(BOB, 0)
