"""Open streams end when their token expires or is revoked, and carry only their account's
notifications (a later account of the same email never reaches an earlier one's stream)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from services.common.domain import Principal, Unauthenticated
from services.common.sessions import AccountState, Sessions
from services.frontend.hub import Hub
from services.frontend.service import FrontendService
from services.notification.models import Notification

BOB = "bob@example.com"
ADA = "ada@example.com"
OLD = "0" * 16 + "a" * 16
NEW = "1" + "0" * 15 + "b" * 16


SENT_AT = datetime(2025, 1, 14, 12, 0, tzinfo=UTC)


def note(nid: int) -> Notification:
    return Notification(str(nid), nid, ADA, BOB, SENT_AT, False)


class NoUnread:
    async def list_unread(self, email: str, account_id: str = "") -> list[Notification]:
        return []


class Accounts:
    """UserService's answers, changed by the test (a peer, not the code under test)."""

    def __init__(self) -> None:
        self.state: AccountState | None = AccountState(OLD, 1)

    async def account(self, email: str) -> AccountState | None:
        return self.state


def bob(account_id: str = OLD, version: int = 1, lifetime: float = 900.0) -> Principal:
    return Principal(
        "user", BOB, account_id=account_id, token_version=version, expires_at=time.time() + lifetime
    )


async def test_a_stream_ends_when_its_token_expires() -> None:
    service = FrontendService(NoUnread(), recheck_seconds=10)
    stream = service.stream(service.open(bob(lifetime=0.3), BOB))
    started = time.monotonic()
    with pytest.raises(Unauthenticated, match="expired; reconnect with a fresh token"):
        await asyncio.wait_for(anext(stream), 5)
    assert time.monotonic() - started < 2
    assert service.hub.open_streams() == 0


@pytest.mark.parametrize("change", ["password", "deleted", "re-registered"])
async def test_a_stream_ends_when_its_token_is_revoked(change: str) -> None:
    accounts = Accounts()
    sessions = Sessions(accounts)
    service = FrontendService(NoUnread(), sessions=sessions, recheck_seconds=0.1)
    stream = service.stream(service.open(bob(), BOB))
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # still valid: the stream stays open
    accounts.state = {
        "password": AccountState(OLD, 2),
        "deleted": None,
        "re-registered": AccountState(NEW, 1),
    }[change]
    sessions.invalidate(BOB)  # what UserService's revocation message does
    with pytest.raises(Unauthenticated):
        await asyncio.wait_for(waiting, 5)
    assert service.hub.open_streams() == 0


async def test_notifications_reach_only_the_streams_of_their_account() -> None:
    service = FrontendService(NoUnread(), Hub())
    old = service.stream(service.open(bob(OLD), BOB))
    new = service.stream(service.open(bob(NEW), BOB))
    old_next = asyncio.ensure_future(anext(old))
    new_next = asyncio.ensure_future(anext(new))
    await asyncio.sleep(0.05)
    assert service.receive(note(1), receiver_account_id=NEW) == 1
    assert await asyncio.wait_for(new_next, 2) == note(1)
    await asyncio.sleep(0.05)
    assert not old_next.done()
    assert service.receive(note(2), receiver_account_id=OLD) == 1
    assert await asyncio.wait_for(old_next, 2) == note(2)
    assert service.receive(note(3)) == 2  # no account given: every stream of the email
