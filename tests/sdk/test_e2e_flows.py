"""The SDK against the real system: the brief's two flows, sync and async, on both transports."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import missive_client as mc
import pytest

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD, new_email
from tests.sdk.helpers import (
    async_client,
    async_signed_in,
    connect,
    eventually,
    eventually_async,
    signed_in,
)

pytestmark = pytest.mark.e2e
TRANSPORTS = ["grpc", "rest"]


def _recent(moment: datetime) -> bool:
    return moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_flows_send_store_notify_and_watch(live: System, transport: mc.Transport) -> None:
    with (
        signed_in(live, "Ada", transport=transport) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert ada.email and bob.email
        # Task 1: the message is stored with an id and a UTC timestamp, in both users' views.
        sent = ada.messages.send(bob.email, "Hello Bob")
        assert sent.id >= 1 and sent.sender_email == ada.email and not sent.read
        assert _recent(sent.timestamp)
        assert ada.messages.get(sent.id) == sent
        assert [m.id for m in bob.messages.list(ada.email)] == [sent.id]
        [conversation] = bob.messages.conversations()
        assert conversation.peer_email == ada.email and conversation.unread_count == 1
        assert conversation.last_message == sent and conversation.message_count == 1

        # Task 2: Bob is notified (stored, then live on the stream).
        stored = eventually(lambda: bob.notifications.list(unread_only=True).to_list())
        assert [(n.message_id, n.sender_email, n.read) for n in stored] == [
            (sent.id, ada.email, False)
        ]
        assert bob.notifications.unread_count() == 1

        received: list[mc.Notification] = []
        with bob.notifications.watch() as stream:

            def consume() -> None:
                for notification in stream:
                    received.append(notification)
                    if len(received) == 2:
                        return

            reader = threading.Thread(target=consume)
            reader.start()
            eventually(lambda: received)  # the unread one is replayed first
            live_one = ada.messages.send(bob.email, "Are you there?")
            reader.join(15)
            assert not reader.is_alive()
        assert [n.message_id for n in received] == [sent.id, live_one.id]
        assert len({n.id for n in received}) == 2

        read = bob.messages.mark_read(ada.email)
        assert read.unread_count == 0 and read.message_count == 2
        marked = bob.notifications.mark_read(received[0].id)
        assert marked.read and marked.id == received[0].id
        assert bob.notifications.mark_all_read() == 1
        assert bob.notifications.unread_count() == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_async_flows_send_store_notify_and_watch(
    live: System, transport: mc.Transport
) -> None:
    ada = await async_signed_in(live, "Ada", transport=transport)
    bob = await async_signed_in(live, "Bob", transport=transport)
    async with ada, bob:
        assert ada.email and bob.email
        received: list[mc.Notification] = []

        async def consume() -> None:
            async with bob.notifications.watch() as stream:
                async for notification in stream:
                    received.append(notification)
                    if len(received) == 2:
                        return

        reader = asyncio.create_task(consume())
        first = await ada.messages.send(bob.email, "one")
        second = await ada.messages.send(bob.email, "two")
        await asyncio.wait_for(reader, 15)
        assert sorted(n.message_id for n in received) == [first.id, second.id]
        assert {n.receiver_email for n in received} == {bob.email}

        assert [m.content async for m in bob.messages.list(ada.email)] == ["two", "one"]
        [conversation] = await bob.messages.conversations().to_list()
        assert conversation.unread_count == 2
        assert (await bob.messages.mark_read(ada.email)).unread_count == 0
        assert await bob.notifications.mark_all_read() == 2
        assert await bob.notifications.unread_count() == 0
        assert (await bob.users.get()).email == bob.email


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pagination_across_several_pages(live: System, transport: mc.Transport) -> None:
    with (
        signed_in(live, "Ada", transport=transport) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert bob.email
        sent = [ada.messages.send(bob.email, f"message {n}") for n in range(7)]
        pager = ada.messages.list(bob.email, page_size=3)
        assert [len(page.items) for page in pager.pages()] == [3, 3, 1]
        assert [m.id for m in pager] == [m.id for m in reversed(sent)]  # newest first

        peers = [signed_in(live, f"Peer{n}", transport=transport) for n in range(4)]
        try:
            for peer in peers:
                assert peer.email
                ada.messages.send(peer.email, "hi")
            conversations = ada.messages.conversations(page_size=2)
            assert [len(page.items) for page in conversations.pages()] == [2, 2, 1]
            expected = [peer.email for peer in reversed(peers)] + [bob.email]
            assert [c.peer_email for c in conversations] == expected
        finally:
            for peer in peers:
                peer.close()

        notifications = eventually(
            lambda: (found := bob.notifications.list(page_size=3).to_list()) and len(found) == 7
        )
        assert notifications
        pages = list(bob.notifications.list(page_size=3).pages())
        assert [len(page.items) for page in pages] == [3, 3, 1]
        assert {page.unread_count for page in pages} == {7}

        with pytest.raises(mc.PermissionDenied):  # only operators list every user
            ada.users.list(page_size=2).to_list()
        assert ada.email is not None
        live.grant_operator(ada.email)
        everyone = [user.email for user in ada.users.list(page_size=2)]
        assert everyone == sorted(everyone) and {ada.email, bob.email} <= set(everyone)
        assert len(list(ada.users.list(page_size=2).pages())) >= 3


async def test_async_pagination_across_several_pages(live: System) -> None:
    ada = await async_signed_in(live, "Ada")
    bob = await async_signed_in(live, "Bob")
    async with ada, bob:
        assert bob.email
        ids = [(await ada.messages.send(bob.email, f"m{n}")).id for n in range(5)]
        pager = ada.messages.list(bob.email, page_size=2)
        assert [len(page.items) async for page in pager.pages()] == [2, 2, 1]
        assert [m.id async for m in pager] == ids[::-1]
        assert len(await ada.messages.list(page_size=2).to_list(3)) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_send_is_idempotent_per_request_id(live: System, transport: mc.Transport) -> None:
    with (
        signed_in(live, "Ada", transport=transport) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert bob.email
        once = ada.messages.send(bob.email, "exactly once", client_request_id="retry-key-1")
        again = ada.messages.send(bob.email, "exactly once", client_request_id="retry-key-1")
        assert again == once
        other = ada.messages.send(bob.email, "exactly once")  # a new send: a new message
        assert other.id != once.id
        assert len(bob.messages.list(ada.email).to_list()) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_accounts_messages_and_subscriptions_round_trip(
    live: System, transport: mc.Transport
) -> None:
    with (
        signed_in(live, "Ada", transport=transport) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert ada.email and bob.email
        me = ada.users.get()
        assert me.email == ada.email and me.name == "Ada" and me.created_at == me.updated_at
        renamed = ada.users.update(name="Ada L.")
        assert renamed.name == "Ada L." and renamed.updated_at >= me.updated_at

        message = ada.messages.send(bob.email, "to be deleted")
        with pytest.raises(mc.PermissionDenied):
            bob.messages.delete(message.id)  # only the sender may delete
        ada.messages.delete(message.id)
        with pytest.raises(mc.NotFound):
            ada.messages.get(message.id)

        assert bob.notifications.is_subscribed()
        assert bob.notifications.unsubscribe() == mc.Subscription(bob.email, False)
        assert not bob.notifications.is_subscribed()
        quiet = ada.messages.send(bob.email, "while unsubscribed")
        assert bob.messages.get(quiet.id).content == "while unsubscribed"  # still delivered
        with signed_in(live, "Carol", transport=transport) as carol:
            # The relay works in order: once Carol's later notification exists, the one
            # for Bob's message was decided (while he was still unsubscribed).
            assert carol.email
            barrier = ada.messages.send(carol.email, "barrier")
            eventually(
                lambda: [n for n in carol.notifications.list() if n.message_id == barrier.id]
            )
        assert bob.notifications.subscribe() == mc.Subscription(bob.email, True)
        loud = ada.messages.send(bob.email, "subscribed again")
        found = eventually(lambda: [n for n in bob.notifications.list() if n.message_id == loud.id])
        assert len(found) == 1
        assert quiet.id not in {n.message_id for n in bob.notifications.list()}

        ada.users.update(password="a brand new password")
        with pytest.raises(mc.Unauthenticated):
            ada.users.get()  # a new password revokes the tokens issued before it
        with connect(live, transport=transport) as again:
            assert again.login(ada.email, "a brand new password").email == ada.email
            with pytest.raises(mc.Unauthenticated):
                again.login(ada.email, PASSWORD)
            again.users.revoke_tokens()  # sign out everywhere
            with pytest.raises(mc.Unauthenticated):
                again.users.get()
        ada.login(ada.email, "a brand new password")
        ada.users.delete()
        with pytest.raises(mc.Unauthenticated):
            ada.users.get()  # a deleted account's token is refused at once


async def test_async_accounts_round_trip(live: System) -> None:
    async with async_client(live) as client:
        email = new_email("carol")
        user = await client.users.register("Carol", email, PASSWORD)
        assert user.email == email and user.created_at.tzinfo is not None
        token = await client.login(email, PASSWORD)
        assert token.email == email and token.expires_at > datetime.now(UTC)
        assert (await client.users.update(name="Caroline")).name == "Caroline"
        live.grant_operator(email)  # listing every user is for operators
        assert email in [u.email async for u in client.users.list()]
        assert await client.notifications.is_subscribed()
        assert (await client.notifications.unsubscribe()).subscribed is False
        assert (await client.notifications.subscribe()).subscribed is True
        health = await client.status()
        assert len(health) == 7 and all(item.serving for item in health)
        await client.users.delete()
        with pytest.raises(mc.Unauthenticated):
            await client.users.get()  # a deleted account's token is refused at once


def test_status_reports_every_endpoint_serving(live: System) -> None:
    with connect(live) as client:
        health = client.status()
    assert [(h.service, h.transport) for h in health] == [
        ("UserService", "grpc"),
        ("MessageService", "grpc"),
        ("NotificationService", "grpc"),
        ("FrontendService", "grpc"),
        ("UserService", "rest"),
        ("MessageService", "rest"),
        ("NotificationService", "rest"),
    ]
    assert all(h.serving for h in health)


async def test_async_watch_receives_what_another_client_sends(live: System) -> None:
    bob = await async_signed_in(live, "Bob")
    async with bob, async_client(live) as ada:
        ada_email = new_email("ada")
        await ada.users.register("Ada", ada_email, PASSWORD)
        await ada.login(ada_email, PASSWORD)
        assert bob.email
        stream = bob.notifications.watch()
        try:
            pending = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.3)  # the stream is open and idle
            sent = await ada.messages.send(bob.email, "live!")
            notification = await asyncio.wait_for(pending, 10)
        finally:
            await stream.aclose()
        assert notification.message_id == sent.id
        assert notification.sender_email == ada_email and not notification.read
        stored = await eventually_async(lambda: bob.notifications.list().to_list())
        assert [n.id for n in stored] == [notification.id]
