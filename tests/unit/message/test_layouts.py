"""The API's guarantees on both key layouts: MessageService over the standalone store (Valkey
DB 1) and over the cluster store (a real 3-master Valkey Cluster), through the service only.

Ordering and paging, idempotency, access to one's own data, deletes, limits, and the account
rules (a later account never sees an earlier one's messages; erasure) must not depend on the
layout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from services.common.domain import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    Principal,
    RateLimited,
    Unauthenticated,
)
from services.common.redis import create_cluster, create_redis
from services.common.sessions import AccountState
from services.message.cluster_store import ClusterMessageStore
from services.message.models import Message
from services.message.service import MessageService, MessageStore
from services.message.settings import SendLimits
from services.message.store import RedisMessageStore
from tests.helpers.accounts import account_id_of
from tests.unit.message.conftest import ADA, BOB, CAROL, EVE, MESSAGE_DB, KnownUsers, user

OLD = "0000000000000001" + "a" * 16
NEW = "0000000000000002" + "b" * 16
SERVICE = Principal("service", "user")


class Directory:
    """UserService's answers (a peer, not the code under test); the test changes them."""

    def __init__(self) -> None:
        self.known: dict[str, AccountState] = {
            ADA: AccountState(OLD, 1),
            BOB: AccountState("0000000000000003" + "c" * 16, 1),
            CAROL: AccountState("0000000000000004" + "d" * 16, 1),
        }

    async def account(self, email: str) -> AccountState | None:
        return self.known.get(email)

    async def accounts(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        return {email: self.known.get(email) for email in emails}

    def principal(self, email: str) -> Principal:
        return Principal("user", email, account_id=self.known[email].account_id)


StoreFactory = Callable[..., MessageStore]


@pytest.fixture(params=["standalone", "cluster"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """A factory of the layout's store (keyword arguments as both stores take them)."""
    if request.param == "standalone":
        redis = create_redis(request.getfixturevalue("redis_url"), MESSAGE_DB)

        def standalone(**options: int) -> MessageStore:
            return RedisMessageStore(redis, **options)

        yield standalone
        await redis.aclose()
    else:
        cluster = create_cluster(request.getfixturevalue("cluster_url"))

        def clustered(**options: int) -> MessageStore:
            return ClusterMessageStore(cluster, **options)

        yield clustered
        await cluster.aclose()


@pytest.fixture
def known_users() -> KnownUsers:
    return KnownUsers()


@pytest.fixture
def service(make_store: StoreFactory, known_users: KnownUsers) -> MessageService:
    return MessageService(make_store(), known_users)


async def send(service: MessageService, sender: str, receiver: str, content: str = "hi") -> Message:
    return await service.send(
        user(sender), sender_email=sender, receiver_email=receiver, content=content
    )


async def test_get_messages_pages_newest_first_across_pages(service: MessageService) -> None:
    sent = [await send(service, *((ADA, BOB) if n % 2 else (BOB, ADA)), f"m{n}") for n in range(7)]
    await send(service, ADA, CAROL, "to carol")
    seen: list[Message] = []
    token, pages = "", 0
    while True:
        page = await service.get_messages(user(BOB), BOB, "", page_size=3, page_token=token)
        seen += page.messages
        pages += 1
        token = page.next_page_token
        if not token:
            break
        await send(service, ADA, BOB, "arrives between pages")  # must not shift later pages
    assert pages == 3
    assert seen == sorted(sent, key=lambda m: -m.id) == sent[::-1]  # newest first = sent last


async def test_get_messages_across_conversations_newest_first(service: MessageService) -> None:
    sent = [await send(service, ADA, peer, peer) for peer in (BOB, CAROL, EVE, BOB, ADA)]
    page = await service.get_messages(user(ADA), ADA, page_size=2)
    rest = await service.get_messages(user(ADA), ADA, page_size=10, page_token=page.next_page_token)
    assert page.messages + rest.messages == sent[::-1]
    assert rest.next_page_token == ""
    assert (await service.get_messages(user(ADA), ADA, BOB)).messages == [sent[3], sent[0]]


async def test_list_conversations_pages_across_pages(
    service: MessageService, known_users: KnownUsers
) -> None:
    peers = [f"peer{n}@example.com" for n in range(5)]
    known_users.emails.update(peers)
    for peer in peers:
        await send(service, peer, ADA)
    first = await service.list_conversations(user(ADA), ADA, page_size=2)
    second = await service.list_conversations(
        user(ADA), ADA, page_size=2, page_token=first.next_page_token
    )
    await send(service, peers[0], ADA, "moves to the top, not into the next page")
    third = await service.list_conversations(
        user(ADA), ADA, page_size=2, page_token=second.next_page_token
    )
    listed = [c.peer_email for p in (first, second, third) for c in p.conversations]
    # The conversation that moved left the pages still to come: it heads a new listing.
    assert listed == peers[:0:-1] and third.next_page_token == ""
    top = (await service.list_conversations(user(ADA), ADA, page_size=1)).conversations
    assert [(c.peer_email, c.message_count, c.unread_count) for c in top] == [(peers[0], 2, 2)]


async def test_a_conversations_last_message_is_read_once_its_receiver_read_it(
    service: MessageService,
) -> None:
    # Both readers see the same flag: for the sender, it follows the peer's read marker.
    await send(service, BOB, ADA, "first")
    await send(service, ADA, BOB, "the last one")

    async def flags() -> list[tuple[str, bool, int]]:
        listed = [
            c
            for email in (ADA, BOB)
            for c in (await service.list_conversations(user(email), email)).conversations
        ]
        return [(c.peer_email, c.last_message.read, c.unread_count) for c in listed]

    assert await flags() == [(BOB, False, 1), (ADA, False, 1)]
    marked = await service.mark_read(user(BOB), BOB, ADA)
    assert (marked.peer_email, marked.last_message.read, marked.unread_count) == (ADA, True, 0)
    assert await flags() == [(BOB, True, 1), (ADA, True, 0)]
    await service.mark_read(user(ADA), ADA, BOB)
    assert await flags() == [(BOB, True, 0), (ADA, True, 0)]


async def test_a_note_to_self_is_a_conversation_with_oneself(service: MessageService) -> None:
    note = await send(service, ADA, ADA, "remember the milk")
    [conversation] = (await service.list_conversations(user(ADA), ADA)).conversations
    assert (conversation.peer_email, conversation.message_count) == (ADA, 1)
    assert (await service.mark_read(user(ADA), ADA, ADA)).unread_count == 0
    assert (await service.get_message(user(ADA), ADA, note.id)).read
    await service.delete(user(ADA), ADA, note.id)
    assert (await service.list_conversations(user(ADA), ADA)).conversations == []
    assert (await service.get_messages(user(ADA), ADA)).messages == []


async def test_concurrent_repeats_store_one_message(service: MessageService) -> None:
    replies = await asyncio.gather(
        *(
            service.send(
                user(ADA), sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="c"
            )
            for _ in range(10)
        )
    )
    assert len({r.id for r in replies}) == 1
    assert (await service.get_messages(user(BOB), BOB)).messages == [replies[0]]
    with pytest.raises(AlreadyExists, match="different message"):
        await service.send(
            user(ADA), sender_email=ADA, receiver_email=BOB, content="other", client_request_id="c"
        )
    await service.delete(user(ADA), ADA, replies[0].id)
    with pytest.raises(AlreadyExists, match="since been deleted"):
        await service.send(
            user(ADA), sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="c"
        )


async def test_only_participants_see_and_only_the_sender_deletes(service: MessageService) -> None:
    sent = await send(service, ADA, BOB)
    assert await service.get_message(user(BOB), BOB, sent.id) == sent
    with pytest.raises(NotFound):
        await service.get_message(user(EVE), EVE, sent.id)
    with pytest.raises(PermissionDenied):
        await service.delete(user(BOB), BOB, sent.id)
    with pytest.raises(NotFound):
        await service.delete(user(EVE), EVE, sent.id)
    await service.delete(user(ADA), ADA, sent.id)
    with pytest.raises(NotFound):
        await service.get_message(user(BOB), BOB, sent.id)
    with pytest.raises(NotFound):
        await service.mark_read(user(BOB), BOB, ADA)  # the conversation went with it


async def test_deleting_updates_the_conversation_for_both(service: MessageService) -> None:
    first = await send(service, ADA, BOB, "1")
    second = await send(service, ADA, BOB, "2")
    await service.delete(user(ADA), ADA, second.id)
    [seen] = (await service.list_conversations(user(BOB), BOB)).conversations
    assert (seen.last_message, seen.message_count, seen.unread_count) == (first, 1, 1)
    assert seen.updated_at == second.timestamp


async def test_sending_is_limited_and_over_quota_refused_until_a_delete(
    make_store: StoreFactory, known_users: KnownUsers
) -> None:
    limited = MessageService(
        make_store(), known_users, limits=SendLimits(messages=2, window_seconds=60)
    )
    await send(limited, ADA, BOB)
    await send(limited, ADA, BOB)
    with pytest.raises(RateLimited, match="at most 2 messages"):
        await send(limited, ADA, CAROL)
    assert len((await limited.get_messages(user(ADA), ADA)).messages) == 2

    small = MessageService(make_store(quota_bytes=1000), known_users)  # two of these fit
    kept = [await send(small, CAROL, BOB, "x" * 300) for _ in range(2)]
    with pytest.raises(RateLimited, match="storage quota"):
        await send(small, CAROL, BOB, "x" * 300)
    await small.delete(user(CAROL), CAROL, kept[0].id)
    await send(small, CAROL, BOB, "x" * 300)


async def history(service: MessageService, directory: Directory) -> None:
    ada, bob = directory.principal(ADA), directory.principal(BOB)
    await service.send(ada, sender_email=ADA, receiver_email=BOB, content="old secret")
    await service.send(bob, sender_email=BOB, receiver_email=ADA, content="old reply")
    await service.send(ada, sender_email=ADA, receiver_email=CAROL, content="to carol")


async def test_a_later_account_never_sees_the_earlier_ones_messages(
    make_store: StoreFactory,
) -> None:
    directory = Directory()
    service = MessageService(make_store(), directory)
    await history(service, directory)
    directory.known[ADA] = AccountState(NEW, 1)  # deleted and registered again
    bob = directory.principal(BOB)
    sent = await service.send(bob, sender_email=BOB, receiver_email=ADA, content="hi, new Ada")
    new_ada = directory.principal(ADA)
    assert [m.id for m in (await service.get_messages(new_ada, ADA)).messages] == [sent.id]
    [conversation] = (await service.list_conversations(new_ada, ADA)).conversations
    assert (conversation.message_count, conversation.unread_count) == (1, 1)
    assert (await service.get_messages(bob, BOB)).messages == [sent]
    assert (await service.list_conversations(directory.principal(CAROL), CAROL)).conversations == []
    with pytest.raises(Unauthenticated):
        await service.get_messages(Principal("user", ADA, account_id=OLD), ADA)


async def test_erase_account_removes_everything_the_deleted_account_took_part_in(
    make_store: StoreFactory,
) -> None:
    directory = Directory()
    service = MessageService(make_store(), directory)
    await history(service, directory)
    await service.send(
        directory.principal(BOB), sender_email=BOB, receiver_email=CAROL, content="kept"
    )
    del directory.known[ADA]  # deleted
    assert await service.erase_account(SERVICE, ADA, OLD) == 3
    assert await service.erase_account(SERVICE, ADA, OLD) == 0  # idempotent
    bob = directory.principal(BOB)
    assert [m.content for m in (await service.get_messages(bob, BOB)).messages] == ["kept"]
    assert [c.peer_email for c in (await service.list_conversations(bob, BOB)).conversations] == [
        CAROL
    ]
    with pytest.raises(Unauthenticated):  # a late request of the deleted account
        await service.get_messages(Principal("user", ADA, account_id=OLD), ADA)


async def test_every_read_refuses_the_earlier_account_once_its_data_is_erased_or_taken_over(
    make_store: StoreFactory,
) -> None:
    """The ownership check rides with the page read while the data is the reader's account's:
    after erasure (the marker is a tombstone) and after a later account took the email over,
    every list of the earlier account is refused as before, and the later one reads its own."""
    directory = Directory()
    service = MessageService(make_store(), directory)
    await history(service, directory)
    old_ada = directory.principal(ADA)

    def reads(principal: Principal) -> list[Callable[[], Awaitable[object]]]:
        return [
            lambda: service.list_conversations(principal, ADA),
            lambda: service.get_messages(principal, ADA),
            lambda: service.get_messages(principal, ADA, BOB),
        ]

    for read in reads(old_ada):  # the marker names the account: the one-round-trip path
        await read()
    del directory.known[ADA]
    assert await service.erase_account(SERVICE, ADA, OLD) == 3
    for read in reads(old_ada):
        with pytest.raises(Unauthenticated, match="no longer exists"):
            await read()
    directory.known[ADA] = AccountState(NEW, 1)  # registered again
    new_ada = directory.principal(ADA)
    assert (await service.list_conversations(new_ada, ADA)).conversations == []
    for read in reads(new_ada):
        await read()
    for read in reads(old_ada):
        with pytest.raises(Unauthenticated, match="no longer exists"):
            await read()
    bob = directory.principal(BOB)
    sent = await service.send(bob, sender_email=BOB, receiver_email=ADA, content="hi, new Ada")
    assert (await service.get_messages(new_ada, ADA, BOB)).messages == [sent]
    [conversation] = (await service.list_conversations(new_ada, ADA)).conversations
    assert conversation.last_message == sent and conversation.unread_count == 1


async def test_pages_read_with_the_account_check_equal_the_pages_without_it(
    service: MessageService,
) -> None:
    for n, other in enumerate([BOB, CAROL, EVE, BOB, CAROL, BOB, ADA]):
        await send(service, *((ADA, other) if n % 2 else (other, ADA)), f"m{n}")
    await service.mark_read(user(ADA), ADA, BOB)
    checked = Principal("user", ADA, account_id=account_id_of(ADA))  # the sends claimed it
    for peer in (None, BOB):
        token, pages = "", 0
        while True:
            page = await service.get_messages(checked, ADA, peer, page_size=2, page_token=token)
            plain = await service.get_messages(user(ADA), ADA, peer, page_size=2, page_token=token)
            assert page == plain
            pages, token = pages + 1, page.next_page_token
            if not token:
                break
        assert pages > 1
    token, pages = "", 0
    while True:
        listed = await service.list_conversations(checked, ADA, page_size=2, page_token=token)
        assert listed == await service.list_conversations(
            user(ADA), ADA, page_size=2, page_token=token
        )
        pages, token = pages + 1, listed.next_page_token
        if not token:
            break
    assert pages == 2
