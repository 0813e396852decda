"""ReceiveNotifications over real gRPC: each item shown in order, dedupe per stream, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from missive.frontend.v1 import frontend_pb2
from missive.notification.v1 import notification_pb2

from tests.helpers.accounts import account_id_of
from tests.unit.frontend.conftest import ADA, BOB, Frontend, notification


def batch(*items: notification_pb2.Notification) -> frontend_pb2.ReceiveNotificationsRequest:
    return frontend_pb2.ReceiveNotificationsRequest(
        items=[frontend_pb2.ReceiveNotificationRequest(notification=n) for n in items]
    )


async def test_each_item_is_shown_in_order_once_per_stream(
    frontend: Frontend, token_for: Callable[[str], str]
) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        stub = frontend.as_service("notification")
        reply = await stub.ReceiveNotifications(
            batch(notification(11), notification(12, ADA), notification(13)), timeout=5
        )
        assert [r.delivered_to for r in reply.results] == [1, 0, 1]
        # Redelivered with a newer one after a crash: only the new id is sent again.
        again = await stub.ReceiveNotifications(
            batch(notification(11), notification(13), notification(14)), timeout=5
        )
        assert [r.delivered_to for r in again.results] == [0, 0, 1]
        seen = [await asyncio.wait_for(stream.read(), 5) for _ in range(3)]
        assert [n.message_id for n in seen if isinstance(n, notification_pb2.Notification)] == [
            11,
            13,
            14,
        ]
    finally:
        stream.cancel()


async def test_an_invalid_item_is_refused_alone(frontend: Frontend) -> None:
    bad = notification(2)
    bad.receiver_email = "not-an-email"
    reply = await frontend.as_service("notification").ReceiveNotifications(
        batch(notification(1), bad, notification(3)), timeout=5
    )
    assert [bool(r.invalid_argument) for r in reply.results] == [False, True, False]
    assert "email" in reply.results[1].invalid_argument


@pytest.mark.parametrize("count", [0, 101])
async def test_an_empty_or_oversized_batch_is_invalid(frontend: Frontend, count: int) -> None:
    items = [notification(n) for n in range(1, count + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await frontend.as_service("notification").ReceiveNotifications(batch(*items), timeout=5)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_notification_service_may_push_in_batches(frontend: Frontend) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await frontend.as_service("message").ReceiveNotifications(batch(notification(1)), timeout=5)
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_batch_items_reach_only_the_streams_of_their_account(
    frontend: Frontend, token_for: Callable[[str], str]
) -> None:
    stream = frontend.subscribe(BOB, token_for(BOB))
    try:
        await frontend.wait_streams(BOB, 1)
        earlier_account = "0" * 31 + "1"  # a deleted account of the same email
        request = frontend_pb2.ReceiveNotificationsRequest(
            items=[
                frontend_pb2.ReceiveNotificationRequest(
                    notification=notification(21), receiver_account_id=earlier_account
                ),
                frontend_pb2.ReceiveNotificationRequest(
                    notification=notification(22), receiver_account_id=account_id_of(BOB)
                ),
            ]
        )
        reply = await frontend.as_service("notification").ReceiveNotifications(request, timeout=5)
        assert [r.delivered_to for r in reply.results] == [0, 1]
        shown = await asyncio.wait_for(stream.read(), 5)
        assert isinstance(shown, notification_pb2.Notification) and shown.message_id == 22
    finally:
        stream.cancel()
