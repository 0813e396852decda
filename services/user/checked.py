"""The token check of UserService's own edges, and the user document it read, kept for the reply
of the same request.

Every user request to UserService checks its token against the account, uncached (the accounts
are here; services.user.__main__ wires ``Sessions(CheckedAccounts(service), ttl_seconds=0)``):
one read of the user document. ``GET /users/{email}`` then answers with that very document
rather than reading it a second time: :class:`CheckedAccounts` keeps what it read in a context
variable of the request (each request runs in its own copy of the context: the edge's check and
the handler share it, other requests do not see it), and :func:`take_checked` hands it to the
handler once. The document is used only for the email it was read for, by the account and token
version the check accepted, and for at most :data:`REUSE_SECONDS` after it was read; anything
else reads the document again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

from services.common.sessions import AccountState
from services.user.models import StoredUser
from services.user.service import UserService, account_state

__all__ = ["REUSE_SECONDS", "CheckedAccounts", "take_checked"]

REUSE_SECONDS: Final = 1.0
"""The oldest document a request's reply is answered from (it was read by the same request)."""

_CHECKED: ContextVar[tuple[str, StoredUser, float] | None] = ContextVar(
    "missive_user_checked", default=None
)


class CheckedAccounts:
    """The AccountLookup of UserService's Sessions: the account of a token's email, from the
    user document, which is kept for the request (:func:`take_checked`)."""

    def __init__(self, service: UserService, clock: Callable[[], float] = time.monotonic) -> None:
        self._service = service
        self._clock = clock

    async def account(self, email: str) -> AccountState | None:
        user = await self._service.record(email)
        _CHECKED.set(None if user is None else (email, user, self._clock()))
        return account_state(user)


def take_checked(email: str, clock: Callable[[], float] = time.monotonic) -> StoredUser | None:
    """The document the token check of this request read for ``email`` (normalised), once;
    None if there is none (no check ran, another email, or read too long ago)."""
    kept = _CHECKED.get()
    if kept is None:
        return None
    _CHECKED.set(None)
    checked_email, user, read_at = kept
    if checked_email != email or clock() - read_at > REUSE_SECONDS:
        return None
    return user
