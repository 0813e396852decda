"""Account ownership of MessageService's data: a later account of an email never sees an earlier
one's messages, even before the erasure event arrives; erasure of a deleted account."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.domain import (
    FailedPrecondition,
    InvalidArgument,
    Principal,
    RateLimited,
    Unauthenticated,
)
from services.common.sessions import AccountState
from services.message.service import MessageService
from services.message.settings import SendLimits
from services.message.store import RedisMessageStore
from tests.unit.message.conftest import ADA, BOB, CAROL

OLD = "0000000000000001" + "a" * 16
NEW = "0000000000000002" + "b" * 16
PEER = "0000000000000003" + "c" * 16
SERVICE = Principal("service", "user")


class Directory:
    """UserService's answers (a peer, not the code under test); the test changes them."""

    def __init__(self) -> None:
        self.known: dict[str, AccountState] = {
            ADA: AccountState(OLD, 1),
            BOB: AccountState(PEER, 1),
            CAROL: AccountState("0000000000000004" + "d" * 16, 1),
        }

    async def account(self, email: str) -> AccountState | None:
        return self.known.get(email)

    async def accounts(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        return {email: self.known.get(email) for email in emails}


def as_user(email: str, directory: Directory) -> Principal:
    return Principal("user", email, account_id=directory.known[email].account_id)


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def service(store: RedisMessageStore, directory: Directory) -> MessageService:
    return MessageService(store, directory)


async def history(service: MessageService, directory: Directory) -> None:
    ada, bob = as_user(ADA, directory), as_user(BOB, directory)
    await service.send(ada, sender_email=ADA, receiver_email=BOB, content="old secret")
    await service.send(bob, sender_email=BOB, receiver_email=ADA, content="old reply")
    await service.send(ada, sender_email=ADA, receiver_email=CAROL, content="to carol")


async def test_a_later_account_never_sees_the_earlier_ones_messages(
    service: MessageService, directory: Directory
) -> None:
    await history(service, directory)
    directory.known[ADA] = AccountState(NEW, 1)  # deleted and registered again
    new_ada = as_user(ADA, directory)
    assert (await service.get_messages(new_ada, ADA)).messages == []
    assert (await service.list_conversations(new_ada, ADA)).conversations == []
    # Taking over erased the old account's messages for its peers too.
    bob = as_user(BOB, directory)
    assert (await service.get_messages(bob, BOB)).messages == []
    assert (await service.list_conversations(bob, BOB)).conversations == []


async def test_a_peer_writing_first_does_not_hand_the_old_history_to_the_new_account(
    service: MessageService, directory: Directory
) -> None:
    await history(service, directory)
    directory.known[ADA] = AccountState(NEW, 1)
    bob = as_user(BOB, directory)
    sent = await service.send(bob, sender_email=BOB, receiver_email=ADA, content="hi, new Ada")
    new_ada = as_user(ADA, directory)
    page = await service.get_messages(new_ada, ADA, BOB)
    assert [m.id for m in page.messages] == [sent.id]
    [conversation] = (await service.list_conversations(new_ada, ADA)).conversations
    assert conversation.message_count == 1 and conversation.unread_count == 1


async def test_the_earlier_account_is_refused_once_a_later_one_owns_the_email(
    service: MessageService, directory: Directory
) -> None:
    await history(service, directory)
    old_ada = as_user(ADA, directory)
    directory.known[ADA] = AccountState(NEW, 1)
    await service.get_messages(as_user(ADA, directory), ADA)  # the new account takes over
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await service.get_messages(old_ada, ADA)
    with pytest.raises(Unauthenticated):
        await service.send(old_ada, sender_email=ADA, receiver_email=BOB, content="ghost")


async def test_erase_account_removes_everything_the_deleted_account_took_part_in(
    service: MessageService, store: RedisMessageStore, directory: Directory, redis: Redis
) -> None:
    await history(service, directory)
    del directory.known[ADA]  # deleted
    assert await service.erase_account(SERVICE, ADA, OLD) == 3
    assert await service.erase_account(SERVICE, ADA, OLD) == 0  # idempotent
    keys: Any = await redis.keys("*")
    assert sorted(keys) == ["account:" + e for e in (ADA, BOB, CAROL)] + [
        "message_id_counter",
        "outbox:notifications",
    ]
    assert await redis.get(f"account:{ADA}") == f"{OLD}:erased"
    with pytest.raises(Unauthenticated):  # a late request of the deleted account
        await service.get_messages(Principal("user", ADA, account_id=OLD), ADA)


async def test_erase_account_refuses_a_registered_account_and_bad_input(
    service: MessageService, directory: Directory
) -> None:
    await history(service, directory)
    with pytest.raises(FailedPrecondition, match="still registered"):
        await service.erase_account(SERVICE, ADA, OLD)
    with pytest.raises(FailedPrecondition):  # an id above the live one is no deleted account
        await service.erase_account(SERVICE, ADA, "f" * 32)
    with pytest.raises(InvalidArgument):
        await service.erase_account(SERVICE, ADA, "not-an-id")
    page = await service.get_messages(as_user(ADA, directory), ADA)
    assert len(page.messages) == 3  # nothing was erased


async def test_erasing_an_earlier_account_never_touches_the_later_ones_data(
    service: MessageService, directory: Directory
) -> None:
    await history(service, directory)
    directory.known[ADA] = AccountState(NEW, 1)
    new_ada = as_user(ADA, directory)
    bob = as_user(BOB, directory)
    await service.send(bob, sender_email=BOB, receiver_email=ADA, content="hi, new Ada")
    assert await service.erase_account(SERVICE, ADA, OLD) == 0  # the late erasure event
    assert len((await service.get_messages(new_ada, ADA)).messages) == 1


async def test_a_later_account_starts_with_a_fresh_quota_and_send_window(
    redis: Redis, directory: Directory
) -> None:
    limits = SendLimits(messages=2, window_seconds=60)
    service = MessageService(RedisMessageStore(redis, quota_bytes=10_000), directory, limits=limits)
    old_ada, bob = as_user(ADA, directory), as_user(BOB, directory)
    await service.send(old_ada, sender_email=ADA, receiver_email=BOB, content="one")
    await service.send(old_ada, sender_email=ADA, receiver_email=BOB, content="two")
    with pytest.raises(RateLimited):
        await service.send(old_ada, sender_email=ADA, receiver_email=BOB, content="three")
    assert int(str(await redis.get(f"user:{ADA}:stored_bytes"))) > 0
    # Some drift in the old account's counters: taking over must not keep it either.
    await redis.incrby(f"user:{ADA}:stored_bytes", 5_000)
    directory.known[ADA] = AccountState(NEW, 1)  # deleted and registered again
    new_ada = as_user(ADA, directory)
    sent = await service.send(new_ada, sender_email=ADA, receiver_email=BOB, content="fresh")
    assert await redis.get(f"send_rate:{ADA}") == "1"  # a new window, counting only this one
    stored: Any = await redis.get(f"message:{sent.id}")
    assert await redis.get(f"user:{ADA}:stored_bytes") == str(len(stored))
    assert (await service.get_messages(bob, BOB)).messages[0].content == "fresh"
