"""Authentication and authorisation on every transport; operation lists come from the contracts.

A new RPC or REST operation is covered automatically: if it is not declared public it must
refuse anonymous callers, so an unprotected addition fails this suite.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio
import yaml
from google.protobuf import descriptor_pool, message_factory
from missive.access import RPC_ACCESS
from missive.frontend.v1 import frontend_pb2  # noqa: F401 - registers descriptors
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2
from missive.user.v1 import user_pb2

from services.notification.keys import notifications_key
from tests.helpers.clients import Stubs, User, register_and_login
from tests.helpers.system import ROOT, System

pytestmark = pytest.mark.e2e

_SERVICE_OF = {
    "UserService": "user",
    "MessageService": "message",
    "NotificationService": "notification",
    "FrontendService": "frontend",
}
_ = (message_pb2, notification_pb2, user_pb2)


def _rpc(system: System, method: str) -> tuple[str, Any, bool]:
    """(address, empty request, server-streaming) for a /pkg.Service/Method path."""
    service_full, name = method.strip("/").split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service_full).FindMethodByName(name)
    request = message_factory.GetMessageClass(descriptor.input_type)()
    return (
        system.grpc_addr(_SERVICE_OF[service_full.rsplit(".", 1)[1]]),
        request,
        descriptor.server_streaming,
    )


async def _call(
    system: System, method: str, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.StatusCode:
    address, request, streaming = _rpc(system, method)
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            if streaming:
                call = channel.unary_stream(
                    method,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=lambda b: b,
                )(request, metadata=metadata, timeout=5)
                async for _ in call:
                    break
                call.cancel()
            else:
                await channel.unary_unary(
                    method,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=lambda b: b,
                )(request, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


PROTECTED = sorted(method for method, access in RPC_ACCESS.items() if not access.public)
INTERNAL_ONLY = sorted(
    method for method, access in RPC_ACCESS.items() if not access.public and not access.users
)


def test_the_contracts_declare_public_and_protected_rpcs() -> None:
    assert "/missive.user.v1.UserService/AuthenticateUser" not in PROTECTED
    assert "/missive.notification.v1.NotificationService/CreateNotification" in INTERNAL_ONLY
    assert len(PROTECTED) >= 15


@pytest.mark.parametrize("method", PROTECTED)
async def test_every_protected_rpc_rejects_anonymous_callers(
    system: System, stubs: Stubs, method: str
) -> None:
    assert await _call(system, method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", PROTECTED)
async def test_every_protected_rpc_rejects_a_forged_token(
    system: System, stubs: Stubs, method: str
) -> None:
    forged = (("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhQGIuY29tIn0."),)
    assert await _call(system, method, forged) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", INTERNAL_ONLY)
async def test_internal_rpcs_refuse_user_tokens(system: System, stubs: Stubs, method: str) -> None:
    user = await register_and_login(system, "Mallory")
    assert await _call(system, method, user.metadata) == grpc.StatusCode.PERMISSION_DENIED


def _rest_operations() -> list[tuple[str, str, str, bool]]:
    operations = []
    for document in sorted((ROOT / "openapi").glob("*.yaml")):
        spec = yaml.safe_load(document.read_text())
        default = spec.get("security", [])
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if method not in ("get", "put", "post", "delete", "patch"):
                    continue
                secured = any(op.get("security", default))
                operations.append((document.stem, method.upper(), path, secured))
    return operations


REST = _rest_operations()


@pytest.mark.parametrize(
    ("service", "method", "path"), [(s, m, p) for s, m, p, secured in REST if secured]
)
async def test_every_protected_rest_operation_rejects_anonymous_callers(
    system: System, stubs: Stubs, service: str, method: str, path: str
) -> None:
    url = re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1) == "id" else "someone@example.com", path)
    async with httpx.AsyncClient(base_url=system.rest_url(service), timeout=5) as http:
        reply = await http.request(
            method,
            url,
            params={"email": "someone@example.com"},
            json={} if method in ("POST", "PUT") else None,
        )
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert "someone@example.com" not in reply.text


def test_only_registration_login_and_health_are_public_on_rest() -> None:
    public = {(m, p) for _, m, p, secured in REST if not secured}
    assert public == {("POST", "/users"), ("POST", "/login"), ("GET", "/health")}


async def _state(system: System, user: User) -> dict[int, dict[Any, Any]]:
    """Every Redis key mentioning the user, with its value, in each service database (on a
    Valkey Cluster: on each master, by master)."""
    if system.cluster is not None:
        return await _cluster_state(system, user)
    state: dict[int, dict[Any, Any]] = {}
    for db in (0, 1, 2):
        client = redis.asyncio.Redis.from_url(system.valkey.url, db=db)
        try:
            state[db] = {
                key: await client.dump(key)
                for key in await client.keys("*")
                if user.email.encode() in key
            }
            if await client.exists("subscriptions"):
                state[db]["subscriptions"] = await client.hget("subscriptions", user.email)
        finally:
            await client.aclose()
    return state


async def _cluster_state(system: System, user: User) -> dict[int, dict[Any, Any]]:
    assert system.cluster is not None
    state: dict[int, dict[Any, Any]] = {}
    for index, master in enumerate(system.cluster.masters):
        client = redis.asyncio.Redis.from_url(master.url)
        try:
            state[index] = {
                key: await client.dump(key)
                async for key in client.scan_iter(count=1000)
                if user.email.encode() in key
            }
        finally:
            await client.aclose()
    return state


async def _notified(system: System, user: User) -> None:
    """Wait until NotificationService stored the user's notification (DB 2; on a cluster,
    until the user's own list shows it)."""
    if system.cluster is not None:
        stubs = Stubs.connect(system)
        try:
            async with asyncio.timeout(10):
                while not (  # noqa: ASYNC110
                    await stubs.notification.ListNotifications(
                        notification_pb2.ListNotificationsRequest(email=user.email),
                        metadata=user.metadata,
                        timeout=5,
                    )
                ).notifications:
                    await asyncio.sleep(0.02)
        finally:
            await stubs.close()
        return
    client = redis.asyncio.Redis.from_url(system.valkey.url, db=2)
    try:
        async with asyncio.timeout(10):
            while not await client.exists(notifications_key(user.email)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


async def test_a_user_cannot_read_or_change_another_users_data(
    system: System, stubs: Stubs
) -> None:
    ada, bob, eve = [await register_and_login(system, name) for name in ("Ada", "Bob", "Eve")]
    sent = await stubs.send(ada, bob, "private")
    await _notified(system, bob)  # the relays' writes land before the snapshot, not during
    before = await _state(system, bob)

    grpc_attempts: list[Awaitable[Any]] = [
        stubs.message.GetMessages(
            message_pb2.GetMessagesRequest(user_email=bob.email), metadata=eve.metadata, timeout=5
        ),
        stubs.message.ListConversations(
            message_pb2.ListConversationsRequest(user_email=bob.email),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.message.MarkConversationRead(
            message_pb2.MarkConversationReadRequest(user_email=bob.email, peer_email=ada.email),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.message.SendMessage(
            message_pb2.SendMessageRequest(
                sender_email=bob.email, receiver_email=ada.email, content="spoof"
            ),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.notification.ListNotifications(
            notification_pb2.ListNotificationsRequest(email=bob.email),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.notification.UnsubscribeUser(
            notification_pb2.UnsubscribeUserRequest(email=bob.email),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.notification.MarkAllNotificationsRead(
            notification_pb2.MarkAllNotificationsReadRequest(email=bob.email),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.user.GetUser(
            user_pb2.GetUserRequest(email=bob.email), metadata=eve.metadata, timeout=5
        ),
    ]
    for attempt in grpc_attempts:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await attempt
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, denied.value.details()
    hidden_attempts: list[Awaitable[Any]] = [
        stubs.message.GetMessage(
            message_pb2.GetMessageRequest(user_email=eve.email, id=sent.id),
            metadata=eve.metadata,
            timeout=5,
        ),
        stubs.message.DeleteMessage(
            message_pb2.DeleteMessageRequest(user_email=eve.email, id=sent.id),
            metadata=eve.metadata,
            timeout=5,
        ),
    ]
    for not_theirs in hidden_attempts:
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await not_theirs
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

    async with httpx.AsyncClient(timeout=5) as http:
        rest_attempts = [
            ("GET", system.rest_url("user") + f"/users/{bob.email}", None),
            ("PUT", system.rest_url("user") + f"/users/{bob.email}", {"name": "Pwned"}),
            ("DELETE", system.rest_url("user") + f"/users/{bob.email}", None),
            ("GET", system.rest_url("message") + f"/list_conversations?email={bob.email}", None),
            ("GET", system.rest_url("message") + f"/messages?email={bob.email}", None),
            (
                "GET",
                system.rest_url("notification") + f"/list_notifications?email={bob.email}",
                None,
            ),
            ("DELETE", system.rest_url("notification") + f"/subscriptions/{bob.email}", None),
            (
                "POST",
                system.rest_url("notification") + "/notifications/read_all",
                {"email": bob.email},
            ),
        ]
        for method, url, body in rest_attempts:
            reply = await http.request(method, url, json=body, headers=eve.headers)
            assert reply.status_code == 403, (method, url, reply.status_code, reply.text)
            assert "private" not in reply.text
    assert await _state(system, bob) == before


async def test_rest_lists_default_email_to_the_caller(system: System, stubs: Stubs) -> None:
    """`email` may be left out of the query: the token names the caller."""
    ada, bob = [await register_and_login(system, name) for name in ("Ada", "Bob")]
    sent = await stubs.send(ada, bob, "hello without an email parameter")
    message_url = system.rest_url("message")
    async with httpx.AsyncClient(timeout=5) as http:
        conversations = await http.get(message_url + "/list_conversations", headers=bob.headers)
        assert conversations.status_code == 200, conversations.text
        [conversation] = conversations.json()["conversations"]
        assert conversation["peer_email"] == ada.email
        messages = await http.get(message_url + "/messages", headers=bob.headers)
        assert messages.status_code == 200, messages.text
        assert [m["id"] for m in messages.json()["messages"]] == [sent.id]
        one = await http.get(message_url + f"/messages/{sent.id}", headers=ada.headers)
        assert one.status_code == 200, one.text
        listed = None
        for _ in range(50):  # the notification arrives through the relay
            listed = await http.get(
                system.rest_url("notification") + "/list_notifications", headers=bob.headers
            )
            assert listed.status_code == 200, listed.text
            if listed.json()["notifications"]:
                break
            await asyncio.sleep(0.1)
        assert listed is not None
        assert [n["message_id"] for n in listed.json()["notifications"]] == [sent.id]
        # Given explicitly, it must still be the caller's own address.
        other = await http.get(
            message_url + f"/list_conversations?email={ada.email}", headers=bob.headers
        )
        assert other.status_code == 403, other.text
        deleted = await http.delete(message_url + f"/messages/{sent.id}", headers=ada.headers)
        assert deleted.status_code == 204, deleted.text
