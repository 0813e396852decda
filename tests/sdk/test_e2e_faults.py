"""The SDK through outages: watch resumes without duplicates, retries, token renewal."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import missive_client as mc
import pytest

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD
from tests.sdk.helpers import async_signed_in, eventually, signed_in

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.slow]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A private system: these tests stop and restart services, and want 60 s tokens."""
    running = System.create(
        Path(tmp_path_factory.mktemp("faults")),
        USER_TOKEN_TTL="60",
        USER_LOGIN_CLIENT_ATTEMPTS="100000",
    )
    try:
        running.start()
        yield running
    finally:
        running.close()


def _restart(system: System, name: str) -> None:
    system.stop(name)
    system.start(name)
    asyncio.run(system.wait_healthy(name))


def test_watch_survives_a_frontend_restart_without_duplicates(live: System) -> None:
    with signed_in(live, "Ada") as ada, signed_in(live, "Bob") as bob:
        assert bob.email
        received: list[mc.Notification] = []
        reconnects: list[mc.MissiveError | None] = []
        stream = bob.notifications.watch(on_reconnect=lambda error, wait: reconnects.append(error))

        def consume() -> None:
            for notification in stream:
                received.append(notification)

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        try:
            first = ada.messages.send(bob.email, "before the restart")
            eventually(lambda: len(received) == 1)

            live.stop("frontend")
            second = ada.messages.send(bob.email, "while FrontendService is down")
            eventually(lambda: reconnects)  # the stream noticed and is retrying
            live.start("frontend")
            asyncio.run(live.wait_healthy("frontend"))

            # On reconnection both unread notifications are replayed; only the new one shows.
            eventually(lambda: len(received) >= 2, within=20)
            third = ada.messages.send(bob.email, "after the restart")
            eventually(lambda: len(received) >= 3, within=20)
            time.sleep(0.5)  # room for a duplicate to show up, were there one
        finally:
            stream.close()
            reader.join(10)
        assert [n.message_id for n in received] == [first.id, second.id, third.id]
        assert not reader.is_alive()


async def test_async_watch_survives_a_frontend_restart(live: System) -> None:
    ada = await async_signed_in(live, "Ada")
    bob = await async_signed_in(live, "Bob")
    async with ada, bob:
        assert bob.email
        received: list[mc.Notification] = []

        async def consume() -> None:
            async with bob.notifications.watch() as stream:
                async for notification in stream:
                    received.append(notification)

        reader = asyncio.create_task(consume())
        try:
            first = await ada.messages.send(bob.email, "one")
            await _until(lambda: len(received) == 1)
            await asyncio.to_thread(_restart, live, "frontend")
            second = await ada.messages.send(bob.email, "two")
            await _until(lambda: len(received) >= 2, within=20)
            await asyncio.sleep(0.5)
        finally:
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
        assert [n.message_id for n in received] == [first.id, second.id]


async def _until(check: object, within: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_send_while_user_service_is_down_is_unavailable_then_retry_is_idempotent(
    live: System, transport: mc.Transport
) -> None:
    with (
        signed_in(live, "Ada", transport=transport, retries=0) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert ada.email and bob.email
        peer = bob.email
        live.stop("user")
        try:
            with pytest.raises(mc.Unavailable) as outage:
                ada.messages.send(bob.email, "hello", client_request_id="during-outage")
            assert outage.value.service == "message"  # MessageService said UserService is down
        finally:
            live.start("user")
            asyncio.run(live.wait_healthy("user"))
        # MessageService may need a moment to reconnect: retry with the same key, as
        # documented, until it goes through.
        sent = eventually(lambda: _attempt(ada, peer), within=30)
        again = ada.messages.send(bob.email, "hello", client_request_id="during-outage")
        assert again.id == sent.id
        assert [m.id for m in bob.messages.list(ada.email)] == [sent.id]


def _attempt(client: mc.Client, to: str) -> mc.Message | None:
    try:
        return client.messages.send(to, "hello", client_request_id="during-outage")
    except mc.Unavailable:
        return None


def test_sdk_retries_ride_out_a_short_outage(live: System) -> None:
    with signed_in(live, "Ada", retries=8) as ada, signed_in(live, "Bob") as bob:
        assert bob.email
        live.stop("user")
        restarter = threading.Timer(0.5, lambda: live.start("user"))
        restarter.start()
        try:
            sent = ada.messages.send(bob.email, "sent once despite the outage")
        finally:
            restarter.join()
            asyncio.run(live.wait_healthy("user"))
        assert [m.id for m in bob.messages.list(ada.email)] == [sent.id]


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_token_is_renewed_before_it_expires(live: System, transport: mc.Transport) -> None:
    # Tokens live 60 s here; renewing when fewer than 58.5 s are left means "after 1.5 s".
    with signed_in(live, "Ada", transport=transport, refresh_margin=58.5) as ada:
        assert ada.email and ada.token
        first = ada.login(ada.email, PASSWORD, keep_password=True)
        assert ada.users.get().email == ada.email
        assert ada.token.access_token == first.access_token  # nothing renewed yet
        time.sleep(2.5)
        assert ada.users.get().email == ada.email  # renewed transparently, then called
        assert ada.token.access_token != first.access_token
        assert ada.token.expires_at > first.expires_at


async def test_async_token_is_renewed_before_it_expires(live: System) -> None:
    ada = await async_signed_in(live, "Ada", refresh_margin=58.5)
    async with ada:
        assert ada.email
        first = await ada.login(ada.email, PASSWORD, keep_password=True)
        await asyncio.sleep(2.5)
        assert (await ada.users.get()).email == ada.email
        assert ada.token is not None and ada.token.access_token != first.access_token
