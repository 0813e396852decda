"""The brief's two flows through all four real services: send a message, get notified live."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
import redis.asyncio
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2

from tests.helpers.clients import Stubs, next_notification, register_and_login
from tests.helpers.system import System

pytestmark = pytest.mark.e2e


async def test_task1_send_checks_users_and_stores_the_conversation(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")

    sent = await stubs.send(ada, bob, "Hello Bob")
    assert sent.id >= 1 and sent.sender_email == ada.email and sent.receiver_email == bob.email
    assert sent.timestamp.seconds > 0 and not sent.read

    for user in (ada, bob):
        page = await stubs.message.GetMessages(
            message_pb2.GetMessagesRequest(user_email=user.email), metadata=user.metadata, timeout=5
        )
        assert [m.content for m in page.messages] == ["Hello Bob"]

    async with httpx.AsyncClient(base_url=system.rest_url("message"), timeout=5) as http:
        listed = await http.get(
            "/list_conversations", params={"email": bob.email}, headers=bob.headers
        )
        assert listed.status_code == 200, listed.text
        [conversation] = listed.json()["conversations"]
        assert conversation["peer_email"] == ada.email
        assert conversation["unread_count"] == 1 and conversation["message_count"] == 1
        assert conversation["last_message"]["content"] == "Hello Bob"

    db = redis.asyncio.Redis.from_url(system.valkey.url, db=1, decode_responses=True)
    try:
        a, b = sorted([ada.email, bob.email])
        assert await db.exists(f"conversation:{a}:{b}") and not await db.exists(
            f"conversation:{b}:{a}"
        )
        assert await db.exists(f"message:{sent.id}")
        assert await db.sismember(f"user:{ada.email}:conversations", f"conversation:{a}:{b}")
        assert await db.sismember(f"user:{bob.email}:conversations", f"conversation:{a}:{b}")
    finally:
        await db.aclose()


async def test_task1_unknown_receiver_is_not_found_and_nothing_is_stored(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    db = redis.asyncio.Redis.from_url(system.valkey.url, db=1, decode_responses=True)
    try:
        before = {key: await db.dump(key) for key in await db.keys("*")}
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stubs.message.SendMessage(
                message_pb2.SendMessageRequest(
                    sender_email=ada.email, receiver_email="nobody@example.com", content="hi"
                ),
                metadata=ada.metadata,
                timeout=5,
            )
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nobody@example.com" in (failure.value.details() or "")
        assert {key: await db.dump(key) for key in await db.keys("*")} == before
    finally:
        await db.aclose()


async def test_task2_receiver_is_notified_live_and_the_notification_is_stored(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=bob.email), metadata=bob.metadata
    )
    try:
        await asyncio.sleep(0.3)  # the subscription is registered before the send
        sent = await stubs.send(ada, bob, "Are you there?")
        live = await next_notification(stream)
        assert live.message_id == sent.id and live.sender_email == ada.email and not live.read
    finally:
        stream.cancel()

    async with httpx.AsyncClient(base_url=system.rest_url("notification"), timeout=5) as http:
        listed = await http.get(
            "/list_notifications", params={"email": bob.email}, headers=bob.headers
        )
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert [n["message_id"] for n in body["notifications"]] == [sent.id]
        assert body["unread_count"] == 1 and body["notifications"][0]["read"] is False
        marked = await http.post(
            f"/notifications/{body['notifications'][0]['id']}/read",
            json={"email": bob.email},
            headers=bob.headers,
        )
        assert marked.status_code == 200 and marked.json()["read"] is True


async def test_task2_a_new_subscription_replays_unread_notifications_first(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    first = await stubs.send(ada, bob, "one")
    second = await stubs.send(ada, bob, "two")
    listing = notification_pb2.ListNotificationsRequest(email=bob.email)
    for _ in range(100):  # both notifications are stored asynchronously by the relay
        stored = await stubs.notification.ListNotifications(
            listing, metadata=bob.metadata, timeout=5
        )
        if len(stored.notifications) == 2:
            break
        await asyncio.sleep(0.1)
    stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=bob.email), metadata=bob.metadata
    )
    try:
        replayed = [await next_notification(stream) for _ in range(2)]
        assert [n.message_id for n in replayed] == [first.id, second.id]
        third = await stubs.send(ada, bob, "three")
        live = await next_notification(stream)
        assert live.message_id == third.id
    finally:
        stream.cancel()


async def test_unsubscribed_receiver_gets_nothing_until_resubscribed(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    await stubs.notification.UnsubscribeUser(
        notification_pb2.UnsubscribeUserRequest(email=bob.email), metadata=bob.metadata, timeout=5
    )
    muted = await stubs.send(ada, bob, "you will not hear this")
    await asyncio.sleep(1.5)  # the relay has had every chance to deliver it
    await stubs.notification.SubscribeUser(
        notification_pb2.SubscribeUserRequest(email=bob.email), metadata=bob.metadata, timeout=5
    )
    heard = await stubs.send(ada, bob, "now you will")
    listing = notification_pb2.ListNotificationsRequest(email=bob.email)
    for _ in range(100):
        stored = await stubs.notification.ListNotifications(
            listing, metadata=bob.metadata, timeout=5
        )
        if stored.notifications:
            break
        await asyncio.sleep(0.1)
    assert [n.message_id for n in stored.notifications] == [heard.id]
    assert muted.id not in {n.message_id for n in stored.notifications}
