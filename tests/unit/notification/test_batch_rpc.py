"""CreateNotifications over real gRPC and Valkey: per-item results, idempotent redelivery."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest
from missive.notification.v1 import notification_pb2
from redis.asyncio import Redis

from services.notification.keys import OUTBOX_STREAM
from tests.unit.notification.conftest import ADA, BOB, EVE, Server, create_request, stream_fields


def batch(*requests: notification_pb2.CreateNotificationRequest) -> Any:
    return notification_pb2.CreateNotificationsRequest(items=list(requests))


async def stored_message_ids(server: Server, email: str) -> list[int]:
    page = await server.as_service("frontend").ListNotifications(
        notification_pb2.ListNotificationsRequest(email=email, page_size=100), timeout=5
    )
    return [n.message_id for n in page.notifications]


async def test_each_item_is_created_in_order_with_its_own_result(
    server: Server, redis: Redis
) -> None:
    reply = await server.as_service("message").CreateNotifications(
        batch(create_request(1), create_request(2, receiver=EVE), create_request(3)), timeout=5
    )
    assert [r.response.created for r in reply.results] == [True, True, True]
    assert [r.response.notification.message_id for r in reply.results] == [1, 2, 3]
    assert [r.invalid_argument for r in reply.results] == ["", "", ""]
    assert await stored_message_ids(server, BOB) == [3, 1]  # newest first
    assert await stored_message_ids(server, EVE) == [2]
    assert await redis.xlen(OUTBOX_STREAM) == 3  # each pushed to the frontend once


async def test_a_batch_redelivered_after_a_crash_stores_each_notification_once(
    server: Server, redis: Redis
) -> None:
    stub = server.as_service("message")
    first = await stub.CreateNotifications(batch(create_request(1), create_request(2)), timeout=5)
    # The relay crashed before acknowledging: the same entries come again, with newer ones.
    again = await stub.CreateNotifications(
        batch(create_request(1), create_request(2), create_request(3)), timeout=5
    )
    assert [r.response.created for r in again.results] == [False, False, True]
    assert [r.response.notification.id for r in again.results[:2]] == [
        r.response.notification.id for r in first.results
    ]
    assert await stored_message_ids(server, BOB) == [3, 2, 1]
    assert await redis.xlen(OUTBOX_STREAM) == 3  # redelivery pushes nothing again


async def test_an_invalid_item_is_refused_alone(server: Server) -> None:
    bad = create_request(2, receiver="not-an-email")
    reply = await server.as_service("message").CreateNotifications(
        batch(create_request(1), bad, create_request(3, sender=BOB, receiver=ADA)), timeout=5
    )
    assert reply.results[0].response.created and reply.results[2].response.created
    assert not reply.results[1].HasField("response")
    assert "email" in reply.results[1].invalid_argument
    assert await stored_message_ids(server, BOB) == [1]
    assert await stored_message_ids(server, ADA) == [3]


@pytest.mark.parametrize("count", [0, 101])
async def test_an_empty_or_oversized_batch_is_invalid_and_stores_nothing(
    server: Server, redis: Redis, count: int
) -> None:
    requests = [create_request(n) for n in range(1, count + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await server.as_service("message").CreateNotifications(batch(*requests), timeout=5)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 100" in (failure.value.details() or "")
    assert await redis.xlen(OUTBOX_STREAM) == 0


async def test_only_message_service_may_create_in_batches(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await server.as_service("frontend").CreateNotifications(batch(create_request(1)), timeout=5)
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_each_item_keeps_its_receivers_account(server: Server, redis: Redis) -> None:
    older, newer = "0000000000000001" + "a" * 16, "0000000000000002" + "b" * 16
    first, late = create_request(1), create_request(2)
    first.receiver_account_id = newer  # the email's current account
    late.receiver_account_id = older  # a deleted account of the same email, delivered late
    reply = await server.as_service("message").CreateNotifications(batch(first, late), timeout=5)
    assert [r.response.created for r in reply.results] == [True, False]
    assert [r.invalid_argument for r in reply.results] == ["", ""]
    assert await stored_message_ids(server, BOB) == [1]  # nothing stored for the older account
    events = await stream_fields(redis, OUTBOX_STREAM)
    assert [e["receiver_account_id"] for e in events] == [newer]
