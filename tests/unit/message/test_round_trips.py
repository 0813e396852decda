"""Every read of MessageService is a constant number of Redis round trips, whatever the page
size: a page is one script, checked against the same page read item by item."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.domain import Principal
from services.common.paging import MAX_PAGE_SIZE
from services.message import keys
from services.message.models import Conversation, Message
from services.message.records import conversation_state, decode_conversation, decode_message
from services.message.service import MessageService
from services.message.store import RedisMessageStore
from tests.helpers.accounts import account_id_of
from tests.helpers.round_trips import RoundTrips
from tests.unit.message.conftest import ADA, BOB, MESSAGE_DB, KnownUsers, store_messages

T0 = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)
PEERS = [f"peer{n:03}@example.com" for n in range(MAX_PAGE_SIZE + 5)]
PAGE_SIZES = (1, 10, MAX_PAGE_SIZE)


@pytest.fixture
async def trips(redis_url: str) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips(redis_url, MESSAGE_DB)
    yield counted
    await counted.aclose()


@pytest.fixture
def counted(trips: RoundTrips) -> RedisMessageStore:
    """The store over the counting client (the ``store`` fixture writes the data uncounted)."""
    return RedisMessageStore(trips.redis)


async def seed(store: RedisMessageStore, peers: list[str]) -> int:
    """A conversation of Ada with each peer and four messages with Bob, in both directions;
    some read, some not; message 6 (Bob's) deleted. The number of ids taken."""
    pairs = [(ADA, BOB)] + [(ADA, p) if n % 2 else (p, ADA) for n, p in enumerate(peers)]
    pairs += [(BOB, ADA), (ADA, BOB)]
    for n, (sender, receiver) in enumerate(pairs, start=1):
        await store_messages(store, Message(n, sender, receiver, f"m{n}", T0 + timedelta(n)))
    await store.mark_read(ADA, peers[0])  # peer 0 wrote to Ada: read
    await store.mark_read(peers[3], ADA)  # Ada wrote to peer 3: read
    await store.mark_read(BOB, ADA)
    last = len(pairs) + 1
    await store_messages(store, Message(last, ADA, BOB, "unread", T0 + timedelta(last)))
    deleted = await store.get(len(pairs) - 1)
    assert deleted is not None and await store.delete(deleted)
    return last


async def one_by_one(redis: Redis, index: str, before: int | None, size: int) -> list[Message]:
    """The page read the N+1 way: the index, then each message, then each read marker."""
    bound = f"({before}" if before else "+inf"
    ids: Any = await redis.zrevrangebyscore(index, bound, "-inf", start=0, num=size)
    found = []
    for message_id in ids:
        text = await redis.get(keys.message_key(int(message_id)))
        if text is None:
            continue
        message = decode_message(str(text))
        conversation = keys.conversation_key(message.sender_email, message.receiver_email)
        upto = await redis.hget(conversation, f"read_upto:{message.receiver_email}")
        found.append(message._replace(read=message.id <= int(upto or 0)))
    return found


async def conversations_one_by_one(
    redis: Redis, email: str, before: int | None, size: int
) -> list[Conversation]:
    bound = f"({before}" if before else "+inf"
    members: Any = await redis.zrevrangebyscore(
        keys.user_conversations_by_time_key(email), bound, "-inf", start=0, num=size
    )
    found = []
    for member in members:
        fields: Any = await redis.hgetall(member)
        last = await redis.get(keys.message_key(int(fields["last_message_id"])))
        peer = keys.peer_in(str(member), email)
        state = [fields.get(name) for name in conversation_state(email, peer)]
        found.append(decode_conversation(email, peer, state, str(last)))
    return found


@pytest.mark.parametrize("peer", [None, BOB])
async def test_a_page_of_messages_is_one_round_trip_whatever_its_size(
    store: RedisMessageStore,
    counted: RedisMessageStore,
    trips: RoundTrips,
    redis: Redis,
    peer: str | None,
) -> None:
    await seed(store, PEERS)
    index = (
        keys.user_messages_key(ADA) if peer is None else keys.conversation_messages_key(ADA, BOB)
    )
    await counted.message_page(ADA, peer, None, 1)  # connects and loads the script
    for size in PAGE_SIZES:
        before: int | None = None
        listed: list[Message] = []
        while True:
            assert await trips.of(counted.message_page(ADA, peer, before, size)) == 1
            page, after = await counted.message_page(ADA, peer, before, size)
            assert page == await one_by_one(redis, index, before, size)
            listed += page
            if after is None:
                break
            before = after
        assert listed == await one_by_one(redis, index, None, 1000)
        assert {m.read for m in listed} == {True, False}


@pytest.mark.parametrize("size", PAGE_SIZES)
async def test_a_page_of_conversations_is_one_round_trip_whatever_its_size(
    store: RedisMessageStore, counted: RedisMessageStore, trips: RoundTrips, redis: Redis, size: int
) -> None:
    await seed(store, PEERS)
    await counted.conversation_page(ADA, None, 1)
    before: int | None = None
    listed: list[Conversation] = []
    while True:
        assert await trips.of(counted.conversation_page(ADA, before, size)) == 1
        page, after = await counted.conversation_page(ADA, before, size)
        assert page == await conversations_one_by_one(redis, ADA, before, size)
        listed += page
        if after is None:
            break
        before = after
    assert [c.peer_email for c in listed] == [BOB, *PEERS[::-1]]
    assert sum(c.unread_count for c in listed) > 0 and any(c.last_message.read for c in listed)


async def test_one_message_and_marking_a_conversation_read_are_one_round_trip_each(
    store: RedisMessageStore, counted: RedisMessageStore, trips: RoundTrips
) -> None:
    await seed(store, PEERS[:4])
    await counted.get(1)  # connects and loads the scripts
    await counted.mark_read(ADA, BOB)
    assert await trips.of(counted.get(1)) == 1
    assert await trips.of(counted.get(999)) == 1
    assert await trips.of(counted.messages(list(range(1, 7)))) == 1
    assert await trips.of(counted.mark_read(ADA, BOB)) == 1
    conversation = await counted.mark_read(ADA, BOB)
    assert conversation is not None and conversation.unread_count == 0
    assert [conversation] == (await counted.conversation_page(ADA, None, 1))[0]


async def test_the_service_lists_in_one_round_trip_the_ownership_check_riding_with_the_page(
    store: RedisMessageStore, counted: RedisMessageStore, trips: RoundTrips
) -> None:
    await seed(store, PEERS)
    service = MessageService(counted, KnownUsers({ADA, BOB, *PEERS}))
    ada = Principal("user", ADA, account_id_of(ADA))
    # The first read claims Ada's data (no account marker yet): the claim, then the page.
    await service.list_conversations(ada, ADA)
    await service.get_messages(ada, ADA)
    for size in PAGE_SIZES:
        assert await trips.of(service.list_conversations(ada, ADA, page_size=size)) == 1
        assert await trips.of(service.get_messages(ada, ADA, page_size=size)) == 1
        assert await trips.of(service.get_messages(ada, ADA, BOB, page_size=size)) == 1
    # A page read with the check equals the one without it.
    assert await service.list_conversations(ada, ADA, page_size=7) == await MessageService(
        store, KnownUsers()
    ).list_conversations(Principal("user", ADA), ADA, page_size=7)


async def test_page_edges_empty_exactly_full_and_an_index_entry_without_its_message(
    store: RedisMessageStore, redis: Redis
) -> None:
    assert await store.message_page(ADA, None, None, 10) == ([], None)
    assert await store.conversation_page(ADA, None, 10) == ([], None)
    await seed(store, PEERS[:4])  # ids 1..8, 6 deleted
    page, after = await store.message_page(ADA, None, None, 7)
    assert [m.id for m in page] == [8, 7, 5, 4, 3, 2, 1] and after is None  # exactly full
    await redis.delete(keys.message_key(3))  # left in the indexes: skipped, still a position
    page, after = await store.message_page(ADA, None, None, 3)
    assert [m.id for m in page] == [8, 7, 5] and after == 5
    page, after = await store.message_page(ADA, None, after, 2)
    assert [m.id for m in page] == [4] and after == 3
    assert await store.message_page(ADA, None, after, 2) == (await store.messages([2, 1]), None)
    conversations, after = await store.conversation_page(ADA, None, 5)  # 3 was peer 1's last
    assert [c.peer_email for c in conversations] == [BOB, PEERS[3], PEERS[2], PEERS[0]]
    assert after is None


async def test_read_flags_follow_the_conversation_key_order_of_non_ascii_emails(
    store: RedisMessageStore,
) -> None:
    """The script builds each message's conversation key itself: with the two emails in the
    order Python sorts them (code points), whatever the server's locale would say."""
    zed, umit, eve = "zed@example.com", "ümit@example.com", "Éve@example.com"
    for n, (sender, receiver) in enumerate([(zed, umit), (umit, zed), (zed, eve), (eve, zed)]):
        await store_messages(store, Message(n + 1, sender, receiver, "hi", T0))
    await store.mark_read(umit, zed)  # message 1 read; 2 (to zed) not
    await store.mark_read(zed, eve)  # message 4 read; 3 (to eve) not
    page, _ = await store.message_page(zed, None, None, 10)
    assert [(m.id, m.read) for m in page] == [(4, True), (3, False), (2, False), (1, True)]


@pytest.mark.parametrize(
    "corrupt",
    [
        "not json",
        '{"id":3}',
        '{"id":3,"sender_email":"x","receiver_email":"y","content":"c","timestamp":"t"},1',
        '["a list"]',
    ],
)
async def test_a_corrupt_last_message_leaves_out_only_its_conversation(
    store: RedisMessageStore, redis: Redis, corrupt: str
) -> None:
    """The last messages of a page are parsed together: one that does not parse, or is not
    a message, leaves out its own conversation (logged), as when each was parsed alone."""
    await seed(store, PEERS[:4])  # ids 1..8, 6 deleted; peer 1's conversation ends with 3
    before, _ = await store.conversation_page(ADA, None, 10)
    await redis.set(keys.message_key(3), corrupt)
    after, position = await store.conversation_page(ADA, None, 10)
    assert after == [c for c in before if c.peer_email != PEERS[1]] and position is None
    assert len(after) == len(before) - 1 == 4
