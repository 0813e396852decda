"""A page of notifications is one Redis round trip whatever its size, and the same page (and
counts) as slicing the whole decoded list."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.common.domain import Principal
from services.common.paging import MAX_PAGE_SIZE
from services.notification.keys import notifications_key
from services.notification.models import Notification
from services.notification.service import NotificationService
from services.notification.store import RedisNotificationStore
from tests.helpers.accounts import account_id_of
from tests.helpers.round_trips import RoundTrips
from tests.unit.notification.conftest import BOB, NOTIFICATION_DB, new

STORED = 250


@pytest.fixture
async def trips(redis_url: str) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips(redis_url, NOTIFICATION_DB)
    yield counted
    await counted.aclose()


@pytest.fixture
def counted(trips: RoundTrips) -> RedisNotificationStore:
    return RedisNotificationStore(trips.redis, retention=1000)


async def seed(store: RedisNotificationStore) -> None:
    """STORED notifications of Bob, every third one read."""
    for message_id in range(1, STORED + 1):
        await store.create(new(message_id))
    for message_id in range(1, STORED + 1, 3):
        await store.mark_read(BOB, str(message_id))


async def sliced(
    store: RedisNotificationStore, unread_only: bool, offset: int, size: int
) -> tuple[list[Notification], int, int]:
    """The page as the whole decoded list gives it."""
    stored = await store.list_all(BOB)
    unread = [n for n in stored if not n.read]
    listed = unread if unread_only else stored
    return listed[offset : offset + size], len(listed), len(unread)


@pytest.mark.parametrize("unread_only", [False, True])
@pytest.mark.parametrize("size", [1, 10, MAX_PAGE_SIZE])
async def test_a_page_is_one_round_trip_whatever_its_size(
    store: RedisNotificationStore,
    counted: RedisNotificationStore,
    trips: RoundTrips,
    unread_only: bool,
    size: int,
) -> None:
    await seed(store)
    await counted.list_page(BOB, unread_only=unread_only, offset=0, size=1)  # loads the script
    offset, seen = 0, 0
    while True:
        call = counted.list_page(BOB, unread_only=unread_only, offset=offset, size=size)
        assert await trips.of(call) == 1
        page = await counted.list_page(BOB, unread_only=unread_only, offset=offset, size=size)
        assert page == await sliced(store, unread_only, offset, size)
        seen += len(page[0])
        if not page[0]:
            break
        offset += size
    assert seen == (STORED * 2 // 3 if unread_only else STORED)
    assert page == ([], seen, STORED * 2 // 3)  # past the end: empty, still counted


async def test_an_empty_list_is_one_round_trip(
    counted: RedisNotificationStore, trips: RoundTrips
) -> None:
    await counted.list_page(BOB, unread_only=False, offset=0, size=20)
    assert await trips.of(counted.list_page(BOB, unread_only=True, offset=0, size=20)) == 1
    assert await counted.list_page(BOB, unread_only=False, offset=0, size=20) == ([], 0, 0)


@pytest.mark.parametrize("malformed", ["not json", '{"id": 3}', '{"id":"3","read":"no"}'])
async def test_malformed_items_are_skipped_and_not_counted_as_before(
    store: RedisNotificationStore, redis: Redis, malformed: str
) -> None:
    for message_id in (1, 2, 3):
        await store.create(new(message_id))
    await store.mark_read(BOB, "1")
    await redis.lpush(notifications_key(BOB), malformed)
    for unread_only in (False, True):
        for offset, size in ((0, 1), (0, 20), (1, 1), (2, 5)):
            page = await store.list_page(BOB, unread_only=unread_only, offset=offset, size=size)
            assert page == await sliced(store, unread_only, offset, size)
    items, listed, unread = await store.list_page(BOB, unread_only=False, offset=0, size=20)
    assert [n.message_id for n in items] == [3, 2, 1] and (listed, unread) == (3, 2)


async def test_a_corrupt_item_in_the_stored_form_is_left_out_of_its_page(
    store: RedisNotificationStore, redis: Redis
) -> None:
    """Only the page is decoded: an item that has the stored form (id first, read last) but
    is not a notification is skipped like any malformed one when its page is read."""
    for message_id in (1, 2):
        await store.create(new(message_id))
    await redis.lpush(notifications_key(BOB), '{"id":"3","read":false}')
    items, listed, unread = await store.list_page(BOB, unread_only=True, offset=0, size=20)
    assert [n.message_id for n in items] == [2, 1] and (listed, unread) == (2, 2)


async def test_an_item_holding_two_notifications_is_left_out_though_the_page_is_parsed_at_once(
    store: RedisNotificationStore, redis: Redis
) -> None:
    """The page's items are parsed as one JSON array: an item that is two stored
    notifications joined by a comma (the stored form at both ends) is not two of them."""
    for message_id in (1, 2):
        await store.create(new(message_id))
    [second, first] = await redis.lrange(notifications_key(BOB), 0, -1)
    await redis.lpush(notifications_key(BOB), f"{second!s},{first!s}")
    items, listed, unread = await store.list_page(BOB, unread_only=False, offset=0, size=20)
    assert [n.message_id for n in items] == [2, 1] and (listed, unread) == (2, 2)


async def test_the_service_lists_in_one_round_trip_the_ownership_check_riding_with_the_page(
    store: RedisNotificationStore, counted: RedisNotificationStore, trips: RoundTrips
) -> None:
    await seed(store)
    service = NotificationService(counted)
    bob = Principal("user", BOB, account_id_of(BOB))
    await service.list_notifications(bob, BOB)  # the first read claims the list: two
    for size in (1, 20, MAX_PAGE_SIZE):
        for unread_only in (False, True):
            call = service.list_notifications(bob, BOB, unread_only=unread_only, page_size=size)
            assert await trips.of(call) == 1
            checked = await service.list_notifications(
                bob, BOB, unread_only=unread_only, page_size=size
            )
            unchecked = await NotificationService(store).list_notifications(
                Principal("user", BOB), BOB, unread_only=unread_only, page_size=size
            )
            assert checked == unchecked
