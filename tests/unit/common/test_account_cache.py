"""Sessions.accounts: the account cache answering "is this user registered?" for several emails
at once (MessageService's sender and receiver), shared with the token checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from services.common.domain import Unavailable
from services.common.sessions import AccountState, Sessions
from tests.unit.common.test_sessions import ACCOUNT, ADA, BOB, LATER, Accounts, Clock, ada

CAROL = "carol@example.com"


class BatchAccounts(Accounts):
    """Answers several emails in one question, remembering each question."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    async def accounts(self, emails: Sequence[str]) -> Mapping[str, AccountState | None]:
        self.batches.append(list(emails))
        if self.down:
            raise Unavailable("UserService is temporarily unavailable")
        return {email: self.states.get(email) for email in emails}


async def test_cached_accounts_are_answered_and_the_rest_asked_together() -> None:
    accounts, clock = BatchAccounts(), Clock()
    sessions = Sessions(accounts, ttl_seconds=5, clock=clock)
    found = await sessions.accounts([ADA, BOB, ADA])
    assert found == {ADA: AccountState(ACCOUNT, 1), BOB: AccountState(LATER, 1)}
    assert accounts.batches == [[ADA, BOB]]  # one question, each email once
    assert await sessions.accounts([BOB, ADA]) == found
    assert accounts.batches == [[ADA, BOB]]
    await sessions.check(ada())  # the token check uses the same entries
    assert accounts.lookups == 0
    clock.now = 5.1  # past the ttl: asked again
    await sessions.accounts([ADA])
    assert accounts.batches[-1] == [ADA]


async def test_an_email_without_an_account_is_never_answered_from_the_cache() -> None:
    accounts = BatchAccounts()
    sessions = Sessions(accounts, ttl_seconds=60)
    assert await sessions.accounts([ADA, CAROL]) == {ADA: AccountState(ACCOUNT, 1), CAROL: None}
    accounts.states[CAROL] = AccountState(LATER, 1)  # registers
    assert (await sessions.accounts([ADA, CAROL]))[CAROL] == AccountState(LATER, 1)
    assert accounts.batches == [[ADA, CAROL], [CAROL]]


async def test_a_dropped_account_is_asked_again_and_a_deleted_one_found_missing() -> None:
    accounts = BatchAccounts()
    sessions = Sessions(accounts, ttl_seconds=60)
    await sessions.accounts([ADA, BOB])
    del accounts.states[BOB]  # deleted: UserService publishes the email, the cache drops it
    sessions.invalidate(BOB)
    assert await sessions.accounts([ADA, BOB]) == {ADA: AccountState(ACCOUNT, 1), BOB: None}
    assert accounts.batches[-1] == [BOB]


async def test_a_lookup_without_batches_is_asked_per_email_and_failures_are_unavailable() -> None:
    accounts = Accounts()
    sessions = Sessions(accounts, ttl_seconds=60)
    assert (await sessions.accounts([ADA, BOB]))[BOB] == AccountState(LATER, 1)
    assert accounts.lookups == 2
    accounts.down = True
    assert (await sessions.accounts([ADA]))[ADA] == AccountState(ACCOUNT, 1)  # cached
    with pytest.raises(Unavailable):
        await sessions.accounts([ADA, CAROL])


async def test_the_cache_stays_bounded_and_unknown_emails_take_no_room() -> None:
    accounts = BatchAccounts()
    sessions = Sessions(accounts, max_entries=2)
    accounts.states[CAROL] = AccountState("0000000000000003" + "c" * 16, 1)
    await sessions.accounts([ADA, BOB, CAROL])
    assert len(sessions) == 2
    await sessions.accounts([f"nobody{i}@example.com" for i in range(10)])
    assert len(sessions) == 2
    before = len(accounts.batches)
    await sessions.accounts([BOB, CAROL])  # the two most recent are still cached
    assert len(accounts.batches) == before
