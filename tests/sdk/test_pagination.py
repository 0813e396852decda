"""The auto-paginating iterators, over a scripted page source and a real gRPC server."""

from __future__ import annotations

import missive_client as mc
import pytest

from tests.sdk.fakes import FakeServer


def pages_of(items: list[int], size: int) -> tuple[list[str], dict[str, mc.Page[int]]]:
    """A page source keyed by token: "" is the first page; tokens are opaque strings."""
    book: dict[str, mc.Page[int]] = {}
    tokens = [""] + [f"t{n}" for n in range(size, len(items), size)]
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        start = index * size
        book[token] = mc.Page(tuple(items[start : start + size]), following, unread_count=9)
    return tokens, book


def test_pager_walks_every_page_lazily_and_restarts_on_each_iteration() -> None:
    _, book = pages_of(list(range(10)), 3)
    requested: list[str] = []

    def fetch(token: str) -> mc.Page[int]:
        requested.append(token)
        return book[token]

    pager = mc.Pager(fetch)
    assert requested == []  # nothing is fetched before iteration
    assert list(pager) == list(range(10))
    assert requested == ["", "t3", "t6", "t9"]
    assert list(pager) == list(range(10))  # a second iteration starts again
    assert [len(page.items) for page in pager.pages()] == [3, 3, 3, 1]
    assert pager.first_page().unread_count == 9


def test_to_list_stops_fetching_at_the_limit() -> None:
    _, book = pages_of(list(range(10)), 3)
    requested: list[str] = []

    def fetch(token: str) -> mc.Page[int]:
        requested.append(token)
        return book[token]

    assert mc.Pager(fetch).to_list(4) == [0, 1, 2, 3]
    assert requested == ["", "t3"]
    assert mc.Pager(fetch).to_list(0) == []


def test_a_server_repeating_a_token_cannot_loop_forever() -> None:
    def fetch(token: str) -> mc.Page[int]:
        return mc.Page((1,), "same")

    assert list(mc.Pager(fetch)) == [1, 1]


def test_an_empty_first_page_is_an_empty_iteration() -> None:
    assert list(mc.Pager(lambda token: mc.Page((), ""))) == []


async def test_async_pager_matches_the_sync_one() -> None:
    _, book = pages_of(list(range(7)), 2)
    requested: list[str] = []

    async def fetch(token: str) -> mc.Page[int]:
        requested.append(token)
        return book[token]

    pager = mc.AsyncPager(fetch)
    assert [item async for item in pager] == list(range(7))
    assert requested == ["", "t2", "t4", "t6"]
    assert await pager.to_list(3) == [0, 1, 2]
    assert [len(page.items) async for page in pager.pages()] == [2, 2, 2, 1]
    assert (await pager.first_page()).items == (0, 1)


def test_messages_list_pages_through_a_real_grpc_server(fake: FakeServer) -> None:
    fake.backend.messages = [f"m{n}" for n in range(7)]
    with mc.Client.connect(**fake.client_kwargs()) as client:
        client.login("ada@example.com", "correct horse")
        pager = client.messages.list("bob@example.com", page_size=3)
        assert [m.content for m in pager] == [f"m{n}" for n in range(7)]
    requests = [call.request for call in fake.backend.calls_to("GetMessages")]
    assert [r.page_token for r in requests] == ["", "3", "6"]
    assert {r.page_size for r in requests} == {3}
    assert {r.user_email for r in requests} == {"ada@example.com"}
    assert {r.peer_email for r in requests} == {"bob@example.com"}


async def test_async_messages_list_pages_through_a_real_grpc_server(fake: FakeServer) -> None:
    fake.backend.messages = [f"m{n}" for n in range(5)]
    async with mc.AsyncClient(**fake.client_kwargs()) as client:
        await client.login("ada@example.com", "correct horse")
        contents = [m.content async for m in client.messages.list(page_size=2)]
    assert contents == [f"m{n}" for n in range(5)]
    tokens = [call.request.page_token for call in fake.backend.calls_to("GetMessages")]
    assert tokens == ["", "2", "4"]


@pytest.mark.parametrize("size", [None, 1, 100])
def test_page_size_none_asks_for_the_server_default(fake: FakeServer, size: int | None) -> None:
    fake.backend.messages = ["only"]
    with mc.Client.connect(**fake.client_kwargs()) as client:
        client.login("ada@example.com", "correct horse")
        assert client.messages.list(page_size=size).to_list() != []
    [call] = fake.backend.calls_to("GetMessages")
    assert call.request.page_size == (size or 0)


def test_next_page_token_is_where_to_resume_and_page_token_starts_there() -> None:
    tokens, book = pages_of(list(range(10)), 3)
    requested: list[str] = []

    def fetch(token: str) -> mc.Page[int]:
        requested.append(token)
        return book[token]

    pager = mc.Pager(fetch)
    assert (pager.page_token, pager.next_page_token) == ("", None)
    assert pager.first_page().items == (0, 1, 2)
    assert pager.next_page_token == tokens[1]
    resumed = mc.Pager(fetch, pager.next_page_token)
    assert resumed.page_token == tokens[1] and resumed.next_page_token is None
    pages = resumed.pages()
    assert next(pages).items == (3, 4, 5)
    assert resumed.next_page_token == tokens[2]
    assert list(resumed) == [3, 4, 5, 6, 7, 8, 9]
    assert resumed.next_page_token == ""  # exhausted
    assert list(pager.starting_at(tokens[3])) == [9]
    assert requested[-1] == tokens[3]


async def test_async_next_page_token_is_where_to_resume() -> None:
    tokens, book = pages_of(list(range(5)), 2)

    async def fetch(token: str) -> mc.Page[int]:
        return book[token]

    pager = mc.AsyncPager(fetch)
    assert pager.next_page_token is None
    assert (await pager.first_page()).items == (0, 1)
    assert pager.next_page_token == tokens[1]
    resumed = mc.AsyncPager(fetch, tokens[1])
    assert [item async for item in resumed] == [2, 3, 4]
    assert resumed.next_page_token == ""
    assert await pager.starting_at(tokens[2]).to_list() == [4]
