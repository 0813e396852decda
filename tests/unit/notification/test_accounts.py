"""Account ownership of NotificationService's data: a later account of an email never sees an
earlier one's notifications or subscription; erasure of a deleted account."""

from __future__ import annotations

from dataclasses import replace

import pytest
from redis.asyncio import Redis

from services.common.domain import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Principal,
    Unauthenticated,
)
from services.common.sessions import AccountState
from services.notification.keys import OUTBOX_STREAM
from services.notification.service import NotificationService
from services.notification.store import RedisNotificationStore
from tests.unit.notification.conftest import BOB, FRONTEND_SERVICE, new, stream_fields

OLD = "0000000000000001" + "a" * 16
NEW = "0000000000000002" + "b" * 16
USER_SERVICE = Principal("service", "user")


class Accounts:
    """UserService's answers (a peer, not the code under test); the test changes them."""

    def __init__(self) -> None:
        self.state: AccountState | None = AccountState(OLD, 1)

    async def account(self, email: str) -> AccountState | None:
        return self.state


def bob(account_id: str) -> Principal:
    return Principal("user", BOB, account_id=account_id)


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


@pytest.fixture
def service(store: RedisNotificationStore, accounts: Accounts) -> NotificationService:
    return NotificationService(store, accounts)


async def old_history(store: RedisNotificationStore, service: NotificationService) -> None:
    await store.create(replace(new(1), receiver_account_id=OLD))
    await service.unsubscribe(bob(OLD), BOB)


async def test_a_later_account_never_sees_the_earlier_ones_notifications(
    store: RedisNotificationStore, service: NotificationService
) -> None:
    await old_history(store, service)
    page = await service.list_notifications(bob(NEW), BOB)
    assert page.notifications == [] and page.unread_count == 0
    assert (await service.check_subscribed(bob(NEW), BOB)).subscribed  # the default again
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await service.list_notifications(bob(OLD), BOB)


async def test_a_replay_for_the_later_account_lists_nothing_of_the_earlier_one(
    store: RedisNotificationStore, service: NotificationService
) -> None:
    await old_history(store, service)
    page = await service.list_notifications(FRONTEND_SERVICE, BOB, account_id=NEW)
    assert page.notifications == []


async def test_a_late_notification_for_a_deleted_account_is_not_stored(
    store: RedisNotificationStore, service: NotificationService, redis: Redis
) -> None:
    await service.list_notifications(bob(NEW), BOB)  # the new account owns the email
    late = await store.create(replace(new(2), receiver_account_id=OLD))
    assert late.notification is None and not late.created
    assert (await service.list_notifications(bob(NEW), BOB)).notifications == []
    fresh = await store.create(replace(new(3), receiver_account_id=NEW))
    assert fresh.created
    [event] = await stream_fields(redis, OUTBOX_STREAM)
    assert event["receiver_account_id"] == NEW  # the frontend sends it to NEW's streams only


async def test_erase_account(
    store: RedisNotificationStore, service: NotificationService, accounts: Accounts, redis: Redis
) -> None:
    await old_history(store, service)
    with pytest.raises(FailedPrecondition):
        await service.erase_account(USER_SERVICE, BOB, OLD)
    accounts.state = None  # deleted
    assert await service.erase_account(USER_SERVICE, BOB, OLD) == 1
    assert await service.erase_account(USER_SERVICE, BOB, OLD) == 0
    assert not await redis.exists(f"notifications:{BOB}")
    assert not await redis.hexists("subscriptions", BOB)
    late = await store.create(replace(new(4), receiver_account_id=OLD))
    assert late.notification is None  # nothing is stored for the erased account any more
    assert (await service.list_notifications(bob(NEW), BOB)).notifications == []


async def test_bad_input_claims_nothing(service: NotificationService, redis: Redis) -> None:
    with pytest.raises(InvalidArgument):
        await service.mark_read(bob(NEW), BOB, "not-an-id")
    with pytest.raises(InvalidArgument):
        await service.list_notifications(bob(NEW), BOB, page_size=1000)
    assert await redis.dbsize() == 0


async def test_every_list_refuses_the_earlier_account_once_erased_or_taken_over(
    store: RedisNotificationStore, service: NotificationService, accounts: Accounts, redis: Redis
) -> None:
    """The ownership check rides with the page read while the list is the reader's account's
    (one round trip); erased, or taken over by a later account, the earlier one is refused as
    before, and the later one never sees its notifications."""
    await store.create(replace(new(1), receiver_account_id=OLD))
    page = await service.list_notifications(bob(OLD), BOB)  # the marker names OLD now
    assert [n.message_id for n in page.notifications] == [1]
    accounts.state = None  # deleted
    assert await service.erase_account(USER_SERVICE, BOB, OLD) == 1
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await service.list_notifications(bob(OLD), BOB)
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await service.list_notifications(FRONTEND_SERVICE, BOB, account_id=OLD)
    await store.create(replace(new(2), receiver_account_id=OLD))  # a late one: not stored
    accounts.state = AccountState(NEW, 1)
    assert (await service.list_notifications(bob(NEW), BOB)).notifications == []
    await store.create(replace(new(3), receiver_account_id=NEW))
    page = await service.list_notifications(bob(NEW), BOB, unread_only=True)
    assert [n.message_id for n in page.notifications] == [3] and page.unread_count == 1
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await service.list_notifications(bob(OLD), BOB, unread_only=True)


async def test_the_order_of_errors_is_kept_403_then_400_then_the_account(
    service: NotificationService,
) -> None:
    with pytest.raises(InvalidArgument, match="account_id"):
        await service.list_notifications(bob(OLD), "eve@example.com", account_id="not hex")
    with pytest.raises(PermissionDenied):
        await service.list_notifications(bob(OLD), "eve@example.com", page_size=0)
    with pytest.raises(InvalidArgument):
        await service.list_notifications(bob(OLD), BOB, page_token="not a token")
