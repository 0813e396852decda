"""NotificationService domain logic over the real store: validation, idempotency, races, paging."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.domain import InvalidArgument, NotFound, PermissionDenied
from services.notification.keys import OUTBOX_STREAM, notifications_key
from services.notification.models import CreateResult
from services.notification.service import NotificationService
from services.notification.store import RedisNotificationStore
from tests.unit.notification.conftest import (
    ADA,
    BOB,
    EVE,
    FRONTEND_SERVICE,
    MESSAGE_SERVICE,
    stream_fields,
    user,
    when,
)


async def create(service: NotificationService, message_id: int, receiver: str = BOB, **kw: Any):
    arguments: dict[str, Any] = {
        "message_id": message_id,
        "sender_email": ADA,
        "receiver_email": receiver,
        "timestamp": when(message_id),
    }
    arguments.update(kw)
    return await service.create_notification(MESSAGE_SERVICE, **arguments)


async def test_create_normalises_emails_and_stores_an_unread_notification(
    service: NotificationService,
) -> None:
    result = await create(service, 3, receiver="  Bob@Example.COM ", sender_email="ADA@example.com")

    assert result.created and result.subscribed and result.notification is not None
    assert result.notification.receiver_email == BOB
    assert result.notification.sender_email == ADA
    assert not result.notification.read
    page = await service.list_notifications(user(BOB), BOB)
    assert page.notifications == [result.notification] and page.unread_count == 1


async def test_the_same_message_twice_and_five_times_concurrently_stores_one(
    service: NotificationService, redis: Redis
) -> None:
    first = await create(service, 10)
    second = await create(service, 10)
    concurrent = await asyncio.gather(*(create(service, 11) for _ in range(5)))

    assert first.created and not second.created
    assert second.notification == first.notification
    assert sum(r.created for r in concurrent) == 1
    assert len({r.notification for r in concurrent}) == 1
    assert Counter(
        n.message_id for n in (await service.list_notifications(user(BOB), BOB)).notifications
    ) == {10: 1, 11: 1}
    entries = await stream_fields(redis, OUTBOX_STREAM)
    assert sorted(fields["id"] for fields in entries) == ["10", "11"]


async def test_unsubscribed_receiver_gets_nothing_until_subscribed_again(
    service: NotificationService, redis: Redis
) -> None:
    await service.unsubscribe(user(BOB), BOB)

    skipped = await create(service, 1)

    assert (skipped.notification, skipped.created, skipped.subscribed) == (None, False, False)
    assert await redis.exists(notifications_key(BOB), OUTBOX_STREAM) == 0

    await service.subscribe(user(BOB), BOB)
    stored = await create(service, 2)
    assert stored.created
    page = await service.list_notifications(user(BOB), BOB)
    assert [n.message_id for n in page.notifications] == [2]
    assert await redis.xlen(OUTBOX_STREAM) == 1


async def test_unsubscribe_racing_100_creates_never_stores_a_message_twice(
    service: NotificationService, redis: Redis
) -> None:
    clock = itertools.count()  # orders events across tasks
    spans: dict[int, tuple[int, int, CreateResult]] = {}
    unsubscribe_span: list[int] = []
    queue = list(range(1, 101))
    twenty_done = asyncio.Event()

    async def worker() -> None:
        while queue:
            message_id = queue.pop(0)
            started = next(clock)
            result = await create(service, message_id)
            spans[message_id] = (started, next(clock), result)
            if len(spans) >= 20:
                twenty_done.set()
            await asyncio.sleep(0.005)  # messages keep arriving while the unsubscribe runs

    async def unsubscribe_midway() -> None:
        await twenty_done.wait()
        unsubscribe_span.append(next(clock))
        await service.unsubscribe(user(BOB), BOB)
        unsubscribe_span.append(next(clock))

    await asyncio.gather(unsubscribe_midway(), *(worker() for _ in range(10)))

    stored = Counter(
        n.message_id for n in await RedisNotificationStore(redis, retention=1000).list_all(BOB)
    )
    assert set(stored.values()) == {1}, "a message has 0 or 1 notifications, never 2"
    assert 20 <= len(stored) < 100, "the unsubscribe landed in the middle of the burst"
    unsubscribe_start, unsubscribe_end = unsubscribe_span
    for message_id, (started, ended, result) in spans.items():
        assert result.created == (message_id in stored) == result.subscribed
        if ended < unsubscribe_start:
            assert result.created, f"message {message_id} finished before the unsubscribe"
        if started > unsubscribe_end:
            assert not result.subscribed, f"message {message_id} started after the unsubscribe"
    pushed = Counter(fields["id"] for fields in await stream_fields(redis, OUTBOX_STREAM))
    assert pushed == Counter(str(message_id) for message_id in stored)
    # Redelivery of the whole burst changes nothing: stored ones dedupe, skipped ones skip.
    await asyncio.gather(*(create(service, message_id) for message_id in range(1, 101)))
    assert await redis.xlen(OUTBOX_STREAM) == len(stored)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"message_id": 0}, "message_id"),
        ({"message_id": -5}, "message_id"),
        ({"receiver_email": "not-an-email"}, "receiver_email"),
        ({"receiver_email": "b*b@example.com"}, "receiver_email"),
        ({"receiver_email": ""}, "receiver_email"),
        ({"sender_email": "ada:x@example.com"}, "sender_email"),
        ({"timestamp": None}, "timestamp"),
        ({"timestamp": datetime(2025, 1, 1)}, "timestamp"),
    ],
)
async def test_invalid_creates_are_rejected_and_write_nothing(
    service: NotificationService, redis: Redis, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await create(service, changes.pop("message_id", 1), **changes)
    assert await redis.dbsize() == 0


async def test_only_services_create_notifications(
    service: NotificationService, redis: Redis
) -> None:
    with pytest.raises(PermissionDenied):
        await service.create_notification(
            user(BOB), message_id=1, sender_email=ADA, receiver_email=BOB, timestamp=when(1)
        )
    assert await redis.dbsize() == 0


async def test_pagination_is_newest_first_with_unread_only_and_unread_count(
    service: NotificationService,
) -> None:
    for message_id in range(1, 8):
        await create(service, message_id)
    for read in ("2", "5", "6"):
        await service.mark_read(user(BOB), BOB, read)

    pages, token = [], ""
    while True:
        page = await service.list_notifications(user(BOB), BOB, page_size=3, page_token=token)
        pages.append([n.message_id for n in page.notifications])
        assert page.unread_count == 4
        token = page.next_page_token
        if not token:
            break
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]

    unread = await service.list_notifications(user(BOB), BOB, unread_only=True, page_size=3)
    assert [n.message_id for n in unread.notifications] == [7, 4, 3]
    rest = await service.list_notifications(
        user(BOB), BOB, unread_only=True, page_size=3, page_token=unread.next_page_token
    )
    assert [n.message_id for n in rest.notifications] == [1] and rest.next_page_token == ""

    exact = await service.list_notifications(user(BOB), BOB, page_size=7)
    assert len(exact.notifications) == 7 and exact.next_page_token == ""


@pytest.mark.parametrize(
    ("size", "token"), [(101, ""), (-1, ""), (10, "garbage!"), (10, "b2s6LTE")]
)
async def test_bad_paging_is_invalid_argument(
    service: NotificationService, size: int, token: str
) -> None:
    with pytest.raises(InvalidArgument):
        await service.list_notifications(user(BOB), BOB, page_size=size, page_token=token)


async def test_mark_read_and_mark_all(service: NotificationService) -> None:
    for message_id in (1, 2, 3):
        await create(service, message_id)

    marked = await service.mark_read(user(BOB), " BOB@example.com", "2")
    assert marked.read and marked.message_id == 2
    assert (await service.list_notifications(user(BOB), BOB)).unread_count == 2
    assert await service.mark_all_read(user(BOB), BOB) == 2
    assert await service.mark_all_read(user(BOB), BOB) == 0

    with pytest.raises(NotFound):
        await service.mark_read(user(BOB), BOB, "9")
    for bad in ("", "abc", "1" * 20, "-1", "1 ", "\u0661"):
        with pytest.raises(InvalidArgument):
            await service.mark_read(user(BOB), BOB, bad)


async def test_users_act_only_on_their_own_data(service: NotificationService) -> None:
    await create(service, 1)
    attempts = [
        service.list_notifications(user(EVE), BOB),
        service.mark_read(user(EVE), BOB, "1"),
        service.mark_all_read(user(EVE), BOB),
        service.unsubscribe(user(EVE), BOB),
        service.subscribe(user(EVE), BOB),
        service.check_subscribed(user(EVE), BOB),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied):
            await attempt
    page = await service.list_notifications(user(BOB), BOB)
    assert page.unread_count == 1 and (await service.check_subscribed(user(BOB), BOB)).subscribed


async def test_allowlisted_services_act_on_any_email(service: NotificationService) -> None:
    await create(service, 1)
    assert (await service.check_subscribed(MESSAGE_SERVICE, BOB)).subscribed
    page = await service.list_notifications(FRONTEND_SERVICE, BOB, unread_only=True)
    assert [n.message_id for n in page.notifications] == [1]


async def test_subscription_calls_are_idempotent(service: NotificationService) -> None:
    for _ in range(2):
        assert not (await service.unsubscribe(user(BOB), BOB)).subscribed
    assert not (await service.check_subscribed(user(BOB), BOB)).subscribed
    for _ in range(2):
        status = await service.subscribe(user(BOB), "Bob@Example.com")
        assert (status.email, status.subscribed) == (BOB, True)


async def test_the_notification_keeps_a_bounded_preview_and_the_sender_name(
    service: NotificationService, redis: Redis
) -> None:
    long_text = "é" * 100 + "cut here"
    result = await service.create_notification(
        MESSAGE_SERVICE,
        message_id=5,
        sender_email=ADA,
        receiver_email=BOB,
        timestamp=when(5),
        preview=long_text,
        sender_name="Ada Lovelace",
    )
    assert result.notification is not None
    assert result.notification.preview == "é" * 100
    assert result.notification.sender_name == "Ada Lovelace"
    # A repeat (an event redelivered) stores nothing more and keeps the first one.
    again = await service.create_notification(
        MESSAGE_SERVICE,
        message_id=5,
        sender_email=ADA,
        receiver_email=BOB,
        timestamp=when(5),
        preview="something else",
    )
    assert not again.created
    page = await service.list_notifications(user(BOB), BOB)
    [listed] = page.notifications
    assert (listed.preview, listed.sender_name) == ("é" * 100, "Ada Lovelace")
    assert await redis.xlen(OUTBOX_STREAM) == 1
    [fields] = await stream_fields(redis, OUTBOX_STREAM)
    assert '"preview":"' in fields["notification"]


async def test_an_event_without_preview_still_notifies_and_old_records_still_list(
    service: NotificationService, redis: Redis
) -> None:
    result = await service.create_notification(
        MESSAGE_SERVICE, message_id=6, sender_email=ADA, receiver_email=BOB, timestamp=when(6)
    )
    assert result.created and result.notification is not None
    assert (result.notification.preview, result.notification.sender_name) == ("", "")
    # A notification stored before previews existed has neither key.
    old = (
        '{"id":"4","message_id":4,"sender_email":"ada@example.com",'
        '"receiver_email":"bob@example.com","timestamp":"2025-01-14T12:00:04Z","read":false}'
    )
    await redis.rpush(notifications_key(BOB), old)
    page = await service.list_notifications(user(BOB), BOB)
    assert [(n.id, n.preview) for n in page.notifications] == [("6", ""), ("4", "")]
