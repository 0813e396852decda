"""Resuming a listing from a saved page token, sync and async, against the real system."""

from __future__ import annotations

import missive_client as mc
import pytest

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD
from tests.sdk.helpers import (
    async_client,
    async_signed_in,
    connect,
    eventually,
    signed_in,
)

TRANSPORTS = ["grpc", "rest"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_saved_next_page_token_resumes_in_another_client(
    live: System, transport: mc.Transport
) -> None:
    with (
        signed_in(live, "Ada", transport=transport) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert ada.email and bob.email
        sent = [ada.messages.send(bob.email, f"message {n}") for n in range(7)]
        newest_first = [m.id for m in reversed(sent)]

        pager = ada.messages.list(bob.email, page_size=3)
        assert pager.page_token == ""
        assert pager.next_page_token is None  # nothing fetched yet
        first = pager.first_page()
        assert [m.id for m in first.items] == newest_first[:3]
        saved = pager.next_page_token
        assert saved and saved == first.next_page_token

        # Later, elsewhere: a new client of the same user goes on from the saved token.
        with connect(live, transport=transport) as again:
            again.login(ada.email, PASSWORD)
            resumed = again.messages.list(bob.email, page_size=3, page_token=saved)
            assert resumed.page_token == saved
            assert [m.id for m in resumed] == newest_first[3:]
            assert resumed.next_page_token == ""  # exhausted
            second = next(iter(resumed.pages()))
            assert [m.id for m in second.items] == newest_first[3:6]
            assert resumed.next_page_token == second.next_page_token != ""
        assert [m.id for m in pager.starting_at(saved)] == newest_first[3:]

        # Page by page, saving the token after each page, visits every message once.
        seen: list[int] = []
        token = ""
        while True:
            listing = ada.messages.list(bob.email, page_size=2, page_token=token)
            seen += [m.id for m in listing.first_page().items]
            token = listing.next_page_token or ""
            if not token:
                break
        assert seen == newest_first

        # Conversations and notifications resume the same way.
        peers = [signed_in(live, f"Peer{n}", transport=transport) for n in range(3)]
        try:
            for peer in peers:
                assert peer.email
                ada.messages.send(peer.email, "hi")
            conversations = ada.messages.conversations(page_size=2)
            conversations.first_page()
            assert conversations.next_page_token
            rest = ada.messages.conversations(page_size=2, page_token=conversations.next_page_token)
            assert [c.peer_email for c in rest] == [peers[0].email, bob.email]
        finally:
            for peer in peers:
                peer.close()

        eventually(lambda: len(bob.notifications.list().to_list()) == 7)
        notifications = bob.notifications.list(page_size=4)
        head = notifications.first_page()
        assert notifications.next_page_token
        tail = bob.notifications.list(page_size=4, page_token=notifications.next_page_token)
        assert [n.message_id for n in (*head.items, *tail)] == newest_first


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_token_that_is_not_one_is_invalid_argument(live: System, transport: mc.Transport) -> None:
    with signed_in(live, "Ada", transport=transport) as ada:
        with pytest.raises(mc.InvalidArgument) as raised:
            ada.messages.list(page_token="not-a-page-token").to_list()
        assert "page_token" in str(raised.value)


async def test_async_listings_resume_from_a_saved_token(live: System) -> None:
    ada = await async_signed_in(live, "Ada")
    bob = await async_signed_in(live, "Bob")
    async with ada, bob:
        assert ada.email and bob.email
        ids = [(await ada.messages.send(bob.email, f"m{n}")).id for n in range(5)]
        pager = ada.messages.list(bob.email, page_size=2)
        assert pager.next_page_token is None
        assert [m.id for m in (await pager.first_page()).items] == ids[:2:-1]
        saved = pager.next_page_token
        assert saved

        async with async_client(live) as again:
            await again.login(ada.email, PASSWORD)
            resumed = again.messages.list(bob.email, page_size=2, page_token=saved)
            assert resumed.page_token == saved
            assert [m.id async for m in resumed] == ids[2::-1]
            assert resumed.next_page_token == ""
        assert (
            await pager.starting_at(saved).to_list()
            == await ada.messages.list(bob.email, page_token=saved, page_size=2).to_list()
        )
