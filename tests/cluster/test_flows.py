"""The brief's flows on the cluster: register, log in, send, list conversations and messages,
live notification, mark read, account deletion and its erasure. Layout-free tests of
tests/e2e are collected here again with this folder's ``system``; the rest checks what only a
cluster has (key namespaces, keys spread over the masters, nothing written on a refusal)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio
from missive.message.v1 import message_pb2

from tests.e2e.test_accounts import (
    test_a_deleted_accounts_stream_never_gets_the_next_owners_notifications,
    test_a_deleted_accounts_token_is_refused_even_for_the_next_owner,
    test_a_peer_writing_to_a_re_registered_email_starts_a_new_conversation,
    test_a_re_registered_email_sees_nothing_of_the_deleted_account,
    test_a_stream_ends_when_its_account_is_deleted_or_revoked,
    test_an_old_token_is_refused_after_a_password_change,
    test_sign_out_everywhere_revokes_every_token,
)
from tests.e2e.test_flows import (
    test_task2_a_new_subscription_replays_unread_notifications_first,
    test_task2_receiver_is_notified_live_and_the_notification_is_stored,
    test_unsubscribed_receiver_gets_nothing_until_resubscribed,
)
from tests.helpers.clients import Stubs, register_and_login
from tests.helpers.system import System

pytestmark = pytest.mark.e2e

__all__ = [
    "test_a_deleted_accounts_stream_never_gets_the_next_owners_notifications",
    "test_a_deleted_accounts_token_is_refused_even_for_the_next_owner",
    "test_a_peer_writing_to_a_re_registered_email_starts_a_new_conversation",
    "test_a_re_registered_email_sees_nothing_of_the_deleted_account",
    "test_a_stream_ends_when_its_account_is_deleted_or_revoked",
    "test_an_old_token_is_refused_after_a_password_change",
    "test_sign_out_everywhere_revokes_every_token",
    "test_task2_a_new_subscription_replays_unread_notifications_first",
    "test_task2_receiver_is_notified_live_and_the_notification_is_stored",
    "test_unsubscribed_receiver_gets_nothing_until_resubscribed",
]

NAMESPACES = ("u:", "m:", "n:")


async def _keys_by_master(system: System) -> list[dict[str, Any]]:
    """Every key of each master, with its type."""
    assert system.cluster is not None
    found = []
    for master in system.cluster.masters:
        client = redis.asyncio.Redis.from_url(master.url, decode_responses=True)
        try:
            found.append(
                {key: await client.type(key) async for key in client.scan_iter(count=1000)}
            )
        finally:
            await client.aclose()
    return found


async def _snapshot(system: System, prefix: str) -> dict[str, Any]:
    """The keys of one namespace: the value of each plain key, the last id of each stream (a
    relay acknowledging or trimming an outbox changes its dump, not its last id)."""
    assert system.cluster is not None
    state: dict[str, Any] = {}
    for master in system.cluster.masters:
        client = redis.asyncio.Redis.from_url(master.url, decode_responses=True)
        try:
            async for key in client.scan_iter(match=f"{prefix}*", count=1000):
                if await client.type(key) == "stream":
                    info = await client.xinfo_stream(key)
                    state[key] = ("stream", info["last-generated-id"])
                else:
                    state[key] = await client.dump(key)
        finally:
            await client.aclose()
    return state


async def test_send_list_and_mark_read_on_the_cluster(system: System, stubs: Stubs) -> None:
    users = [await register_and_login(system, name) for name in ("Ada", "Bob", "Cy", "Di")]
    ada, bob = users[0], users[1]
    sent = [await stubs.send(ada, bob, f"Hello Bob {n}") for n in range(3)]
    for other in users[2:]:
        await stubs.send(other, bob, f"hi from {other.email}")
    assert [m.id for m in sent] == sorted(m.id for m in sent), "ids keep the sending order"

    for user in (ada, bob):
        page = await stubs.message.GetMessages(
            message_pb2.GetMessagesRequest(user_email=user.email, peer_email=ada.email
                                           if user is bob else bob.email),
            metadata=user.metadata,
            timeout=5,
        )  # fmt: skip
        assert sorted(m.content for m in page.messages) == [f"Hello Bob {n}" for n in range(3)]

    async with httpx.AsyncClient(base_url=system.rest_url("message"), timeout=5) as http:
        listed = await http.get("/list_conversations", headers=bob.headers)
        assert listed.status_code == 200, listed.text
        conversations = listed.json()["conversations"]
        newest_first = [*(u.email for u in reversed(users[2:])), ada.email]
        assert [c["peer_email"] for c in conversations] == newest_first
        with_ada = conversations[-1]
        assert with_ada["unread_count"] == 3 and with_ada["message_count"] == 3
        assert with_ada["last_message"]["content"] == "Hello Bob 2"
    await stubs.message.MarkConversationRead(
        message_pb2.MarkConversationReadRequest(user_email=bob.email, peer_email=ada.email),
        metadata=bob.metadata,
        timeout=5,
    )
    after = await stubs.message.ListConversations(
        message_pb2.ListConversationsRequest(user_email=bob.email), metadata=bob.metadata
    )
    unread = {c.peer_email: c.unread_count for c in after.conversations}
    assert unread[ada.email] == 0 and all(unread[u.email] == 1 for u in users[2:])

    # One database for every service: each key in its service's namespace; and the keys of
    # four users and three conversations are spread over more than one master.
    keys = await _keys_by_master(system)
    everything = [key for master in keys for key in master]
    assert everything and all(key.startswith(NAMESPACES) for key in everything), [
        key for key in everything if not key.startswith(NAMESPACES)
    ]
    assert sum(1 for master in keys if master) >= 2


async def test_a_refused_send_writes_nothing_on_any_master(system: System, stubs: Stubs) -> None:
    ada = await register_and_login(system, "Ada")
    before = await _snapshot(system, "m:")
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
    assert await _snapshot(system, "m:") == before
