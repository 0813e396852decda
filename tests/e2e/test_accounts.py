"""Account lifecycle through the four real services: deletion erases, tokens are revoked.

Regression tests for the penetration test's findings: a re-registered email inherited the
previous owner's messages, conversations, notifications and subscription; old tokens kept
working after a password change or deletion (and read the next owner's account); open streams
outlived their token and carried the next owner's notifications.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2
from missive.user.v1 import user_pb2

from services.common.auth import LEEWAY_SECONDS, KeyRing, UserTokenIssuer
from services.common.redis import create_cluster
from services.user.keys import cluster_user_key
from tests.helpers.clients import PASSWORD, Stubs, User, next_notification, register_and_login
from tests.helpers.system import System

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "another horse battery"
# Every service learns of a revocation within this bound (the documented 5 s, plus slack).
REVOCATION_BOUND = 6.0


def email(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


async def login(system: System, address: str, password: str = PASSWORD) -> User:
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
        reply = await http.post("/login", json={"email": address, "password": password})
        assert reply.status_code == 200, reply.text
        return User(address, reply.json()["access_token"])


async def delete_account(system: System, user: User) -> None:
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
        reply = await http.delete(f"/users/{user.email}", headers=user.headers)
        assert reply.status_code == 204, reply.text


async def rest_get(system: System, service: str, path: str, user: User, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=system.rest_url(service), timeout=10) as http:
        return await http.get(path, params=params or None, headers=user.headers)


async def grpc_code(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``check()`` holds (AssertionError if it does not within ``within``)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, "the condition never held"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def account_of(system: System, address: str) -> tuple[str, int]:
    if system.cluster is not None:  # UserService's cluster layout
        cluster = create_cluster(system.cluster.url)
        try:
            document = json.loads(await cluster.get(cluster_user_key(address)) or "{}")
        finally:
            await cluster.aclose()
        return document["id"], document["token_version"]
    db = redis.asyncio.Redis.from_url(system.valkey.url, db=0, decode_responses=True)
    try:
        document = json.loads(await db.get(f"user:{address}") or "{}")
    finally:
        await db.aclose()
    return document["id"], document["token_version"]


async def history(system: System, user: User, ada: User) -> None:
    """Ada and ``user`` wrote to each other; ``user`` unsubscribed after being notified."""
    stubs = Stubs.connect(system)
    try:
        await stubs.send(user, ada, "secret from the first owner")
        await stubs.send(ada, user, "reply to the first owner")

        async def notified() -> bool:
            page = await stubs.notification.ListNotifications(
                notification_pb2.ListNotificationsRequest(email=user.email),
                metadata=user.metadata,
                timeout=5,
            )
            return len(page.notifications) == 1

        await eventually(notified, 15)
        await stubs.notification.UnsubscribeUser(
            notification_pb2.UnsubscribeUserRequest(email=user.email),
            metadata=user.metadata,
            timeout=5,
        )
    finally:
        await stubs.close()


async def test_a_re_registered_email_sees_nothing_of_the_deleted_account(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    alice = await register_and_login(system, "Alice")
    await history(system, alice, ada)
    old_account, _ = await account_of(system, alice.email)
    await delete_account(system, alice)

    mallory = await register_and_login(system, "Mallory", alice.email)
    assert (await account_of(system, alice.email))[0] > old_account  # a new account

    # REST
    messages = await rest_get(system, "message", "/messages", mallory, email=mallory.email)
    assert messages.status_code == 200 and messages.json()["messages"] == []
    conversations = await rest_get(
        system, "message", "/list_conversations", mallory, email=mallory.email
    )
    assert conversations.status_code == 200 and conversations.json()["conversations"] == []
    notifications = await rest_get(
        system, "notification", "/list_notifications", mallory, email=mallory.email
    )
    assert notifications.status_code == 200
    assert notifications.json()["notifications"] == []
    assert notifications.json()["unread_count"] == 0
    subscription = await rest_get(
        system, "notification", f"/subscriptions/{mallory.email}", mallory
    )
    assert subscription.status_code == 200 and subscription.json()["subscribed"] is True
    record = await rest_get(system, "user", f"/users/{mallory.email}", mallory)
    assert record.status_code == 200 and record.json()["name"] == "Mallory"

    # gRPC
    page = await stubs.message.GetMessages(
        message_pb2.GetMessagesRequest(user_email=mallory.email), metadata=mallory.metadata
    )
    assert list(page.messages) == []
    listed = await stubs.message.ListConversations(
        message_pb2.ListConversationsRequest(user_email=mallory.email), metadata=mallory.metadata
    )
    assert list(listed.conversations) == []
    own = await stubs.notification.ListNotifications(
        notification_pb2.ListNotificationsRequest(email=mallory.email), metadata=mallory.metadata
    )
    assert list(own.notifications) == [] and own.unread_count == 0
    status = await stubs.notification.CheckUserSubscribed(
        notification_pb2.CheckUserSubscribedRequest(email=mallory.email),
        metadata=mallory.metadata,
    )
    assert status.subscribed
    user = await stubs.user.GetUser(
        user_pb2.GetUserRequest(email=mallory.email), metadata=mallory.metadata
    )
    assert user.name == "Mallory"

    # The deleted account's messages also left Ada's conversations (erasure, at least once).
    async def erased_for_ada() -> bool:
        peers = await stubs.message.ListConversations(
            message_pb2.ListConversationsRequest(user_email=ada.email), metadata=ada.metadata
        )
        return all(c.peer_email != alice.email for c in peers.conversations)

    await eventually(erased_for_ada, 15)


async def test_a_peer_writing_to_a_re_registered_email_starts_a_new_conversation(
    system: System, stubs: Stubs
) -> None:
    """The conversation key conversation:{a}:{b} is shared with a peer who still had history:
    the new owner sees only what was sent to the new account."""
    ada = await register_and_login(system, "Ada")
    alice = await register_and_login(system, "Alice")
    await history(system, alice, ada)
    await delete_account(system, alice)
    mallory = await register_and_login(system, "Mallory", alice.email)

    sent = await stubs.send(ada, mallory, "hello, new owner")  # Ada writes first
    page = await stubs.message.GetMessages(
        message_pb2.GetMessagesRequest(user_email=mallory.email, peer_email=ada.email),
        metadata=mallory.metadata,
    )
    assert [m.content for m in page.messages] == ["hello, new owner"]
    [conversation] = (
        await stubs.message.ListConversations(
            message_pb2.ListConversationsRequest(user_email=mallory.email),
            metadata=mallory.metadata,
        )
    ).conversations
    assert conversation.message_count == 1 and conversation.last_message.id == sent.id

    async def notified() -> bool:
        page = await stubs.notification.ListNotifications(
            notification_pb2.ListNotificationsRequest(email=mallory.email),
            metadata=mallory.metadata,
        )
        return [n.message_id for n in page.notifications] == [sent.id]

    await eventually(notified, 15)  # subscribed again: the old unsubscription is gone


async def test_an_old_token_is_refused_after_a_password_change(
    system: System, stubs: Stubs
) -> None:
    alice = await register_and_login(system, "Alice")
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
        changed = await http.put(
            f"/users/{alice.email}", json={"password": NEW_PASSWORD}, headers=alice.headers
        )
        assert changed.status_code == 200, changed.text
    await assert_refused_everywhere(system, stubs, alice)
    fresh = await login(system, alice.email, NEW_PASSWORD)
    assert (await rest_get(system, "user", f"/users/{alice.email}", fresh)).status_code == 200
    page = await rest_get(system, "message", "/messages", fresh, email=fresh.email)
    assert page.status_code == 200


async def test_sign_out_everywhere_revokes_every_token(system: System, stubs: Stubs) -> None:
    alice = await register_and_login(system, "Alice")
    other = await login(system, alice.email)
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
        revoked = await http.post(f"/users/{alice.email}/revoke_tokens", headers=alice.headers)
        assert revoked.status_code == 204, revoked.text
    await assert_refused_everywhere(system, stubs, alice)
    await assert_refused_everywhere(system, stubs, other)
    fresh = await login(system, alice.email)
    assert (await rest_get(system, "user", f"/users/{alice.email}", fresh)).status_code == 200


async def test_a_deleted_accounts_token_is_refused_even_for_the_next_owner(
    system: System, stubs: Stubs
) -> None:
    alice = await register_and_login(system, "Alice")
    await delete_account(system, alice)
    await assert_refused_everywhere(system, stubs, alice)
    mallory = await register_and_login(system, "Mallory", alice.email)
    # Alice's old token does not read Mallory's account either.
    await assert_refused_everywhere(system, stubs, alice)
    assert (await rest_get(system, "user", f"/users/{alice.email}", mallory)).status_code == 200


async def assert_refused_everywhere(system: System, stubs: Stubs, user: User) -> None:
    """Every service refuses ``user``'s token (401 / UNAUTHENTICATED) within the bound."""

    async def refused() -> bool:
        answers = [
            (await rest_get(system, "user", f"/users/{user.email}", user)).status_code,
            (await rest_get(system, "message", "/messages", user, email=user.email)).status_code,
            (
                await rest_get(
                    system, "notification", "/list_notifications", user, email=user.email
                )
            ).status_code,
        ]
        async with httpx.AsyncClient(base_url=system.rest_url("notification"), timeout=10) as h:
            answers.append(
                (await h.put(f"/subscriptions/{user.email}", headers=user.headers)).status_code
            )
        codes = [
            await grpc_code(
                stubs.user.GetUser(
                    user_pb2.GetUserRequest(email=user.email), metadata=user.metadata
                )
            ),
            await grpc_code(
                stubs.message.GetMessages(
                    message_pb2.GetMessagesRequest(user_email=user.email), metadata=user.metadata
                )
            ),
            await grpc_code(
                stubs.notification.SubscribeUser(
                    notification_pb2.SubscribeUserRequest(email=user.email),
                    metadata=user.metadata,
                )
            ),
        ]
        return answers == [401] * 4 and codes == [grpc.StatusCode.UNAUTHENTICATED] * 3

    await eventually(refused, REVOCATION_BOUND)


async def stream_end(stream: Any, within: float) -> tuple[grpc.StatusCode, list[int]]:
    """Read ``stream`` until it ends: its status and the message ids it carried meanwhile."""
    carried: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while True:
            item = await asyncio.wait_for(stream.read(), timeout=within)
            assert isinstance(item, notification_pb2.Notification), f"ended: {item!r}"
            carried.append(item.message_id)
    return ended.value.code(), carried


async def test_a_stream_ends_when_its_token_expires(system: System, stubs: Stubs) -> None:
    alice = await register_and_login(system, "Alice")
    account_id, version = await account_of(system, alice.email)
    issuer = UserTokenIssuer(KeyRing.load(system.keys_dir, "user", sign_user_tokens=True), 60)
    # Accepted for 2 more seconds (the 30 s leeway included), like a token about to expire.
    expiring, _ = issuer.issue(
        alice.email, account_id, version, now=int(time.time()) - 60 - LEEWAY_SECONDS + 2
    )
    stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=alice.email),
        metadata=(("authorization", f"Bearer {expiring}"),),
    )
    started = time.monotonic()
    code, _ = await stream_end(stream, within=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("how", ["deleted", "revoked"])
async def test_a_stream_ends_when_its_account_is_deleted_or_revoked(
    system: System, stubs: Stubs, how: str
) -> None:
    alice = await register_and_login(system, "Alice")
    stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=alice.email), metadata=alice.metadata
    )
    await asyncio.sleep(1)  # the stream is open (it sends nothing: no unread notification)
    started = time.monotonic()
    if how == "deleted":
        await delete_account(system, alice)
    else:
        async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
            reply = await http.post(f"/users/{alice.email}/revoke_tokens", headers=alice.headers)
            assert reply.status_code == 204
    code, _ = await stream_end(stream, within=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started < REVOCATION_BOUND


async def test_a_deleted_accounts_stream_never_gets_the_next_owners_notifications(
    system: System, stubs: Stubs
) -> None:
    ada = await register_and_login(system, "Ada")
    alice = await register_and_login(system, "Alice")
    old_stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=alice.email), metadata=alice.metadata
    )
    await asyncio.sleep(1)  # the stream is open (it sends nothing: no unread notification)
    await delete_account(system, alice)
    mallory = await register_and_login(system, "Mallory", alice.email)  # within the 5 s bound
    new_stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=mallory.email), metadata=mallory.metadata
    )
    sent = await stubs.send(ada, mallory, "for the new owner only")
    assert (await next_notification(new_stream)).message_id == sent.id
    code, carried = await stream_end(old_stream, within=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert sent.id not in carried
    new_stream.cancel()
