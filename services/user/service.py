"""UserService's domain logic: registration, sign-in with throttling, and account management."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from services.common.domain import Principal
from services.common.emails import normalise_email
from services.common.errors import ConfigError
from services.common.paging import parse_page
from services.common.sessions import AccountState
from services.user.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    RateLimited,
    Unavailable,
)
from services.user.passwords import Passwords, validate_password
from services.user.store import StoredUser, UserStore

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 100
_UPDATE_ATTEMPTS = 3


class TokenIssuer(Protocol):
    def issue(
        self, email: str, account_id: str = "", token_version: int = 0
    ) -> tuple[str, datetime]: ...


Revoked = Callable[[str], Awaitable[None]]
"""Called with an email after its account's earlier tokens stopped being valid."""


async def _nobody_to_tell(_email: str) -> None:
    return None


@dataclass(frozen=True)
class LoginLimits:
    """Sign-in throttling.

    Per account: at most ``max_failures`` failed attempts in a window of ``lock_seconds``
    that starts with the first one; then the account is locked until the window ends.
    Per client host: at most ``client_attempts`` attempts per ``client_window_seconds``.
    """

    max_failures: int = 5
    lock_seconds: int = 900
    client_attempts: int = 20
    client_window_seconds: int = 60

    def __post_init__(self) -> None:
        if min(self.max_failures, self.lock_seconds, self.client_attempts) < 1:
            raise ConfigError("login limits must be at least 1")
        if self.client_window_seconds < 1:
            raise ConfigError("the client window must be at least 1 second")


@dataclass(frozen=True)
class UserInfo:
    """A user as callers see it: no password, no hash."""

    name: str
    email: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: StoredUser) -> UserInfo:
        return cls(user.name, user.email, user.created_at, user.updated_at)


@dataclass(frozen=True)
class Authentication:
    """A successful sign-in: the access token and when it expires."""

    email: str
    access_token: str
    expires_at: datetime


def utc_now() -> datetime:
    """Now in UTC, truncated to the milliseconds the store keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def validate_name(name: str, field: str = "name") -> str:
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidArgument(f"{field} must be 1 to {MAX_NAME_CHARS} characters long")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field} is not valid Unicode text") from None
    return name


class UserService:
    """Every UserService operation, shared by the gRPC and REST adapters."""

    def __init__(
        self,
        store: UserStore,
        passwords: Passwords,
        issuer: TokenIssuer,
        limits: LoginLimits | None = None,
        clock: Callable[[], datetime] = utc_now,
        revoked: Revoked = _nobody_to_tell,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._issuer = issuer
        self._limits = limits or LoginLimits()
        self._clock = clock
        self._revoked = revoked

    async def healthy(self) -> bool:
        return await self._store.ping()

    async def register(self, name: str, email: str, password: str) -> UserInfo:
        """Create an account; AlreadyExists if the (normalised) email is taken."""
        validate_name(name)
        address = normalise_email(email)
        validate_password(password)
        taken = AlreadyExists(f"a user is already registered under {address}")
        if await self._store.exists(address):  # spares a hash for the common duplicate
            raise taken
        password_hash = await self._passwords.hash(password)
        now = self._clock()
        account_id = await self._store.new_account_id()
        user = StoredUser(name, address, password_hash, now, now, account_id=account_id)
        if not await self._store.create(user):
            raise taken
        logger.info("registered user %s", address)
        return UserInfo.of(user)

    async def authenticate(self, email: str, password: str, client: str) -> Authentication | None:
        """A token if the credentials match; None (same cost and answer) if they do not.

        RateLimited while the client or the account is throttled. Every attempt counts against
        the account until one succeeds, so parallel guesses cannot exceed the limit either.
        """
        address = normalise_email(email)
        validate_password(password)
        limits = self._limits
        by_client = await self._store.count_client_attempt(client, limits.client_window_seconds)
        if by_client.count > limits.client_attempts:
            logger.warning("sign-in throttled for client %s", client)
            raise RateLimited(
                f"too many sign-in attempts from this client; retry in {by_client.ttl} seconds",
                by_client.ttl,
            )
        attempts = await self._store.count_login_attempt(address, limits.lock_seconds)
        if attempts.count > limits.max_failures:
            logger.warning("sign-in throttled for account %s", address)
            raise RateLimited(
                f"too many failed sign-in attempts; retry in {attempts.ttl} seconds",
                attempts.ttl,
            )
        user = await self._store.get(address)
        matches = await self._passwords.verify(
            None if user is None else user.password_hash, password
        )
        if user is None or not matches:
            logger.info("failed sign-in for %s", address)
            return None
        await self._store.clear_login_failures(address)
        if not user.account_id:
            user = await self._assign_account_id(user)
        if self._passwords.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        token, expires_at = self._issuer.issue(address, user.account_id, user.token_version)
        logger.info("user %s signed in", address)
        return Authentication(address, token, expires_at)

    async def _assign_account_id(self, user: StoredUser) -> StoredUser:
        """Give a record written before account ids existed its id (once, compare-and-set)."""
        upgraded = replace(user, account_id=await self._store.new_account_id())
        if await self._store.replace(user, upgraded):
            logger.info("assigned an account id to %s", user.email)
            return (await self._store.get(user.email)) or upgraded
        current = await self._store.get(user.email)
        if current is None or not current.account_id:
            raise Unavailable("the account is being changed concurrently; retry")
        return current

    async def account(self, email: str) -> AccountState | None:
        """The account registered under ``email`` (for token checks), or None."""
        user = await self._store.get(email)
        if user is None or not user.account_id:
            return None
        return AccountState(user.account_id, user.token_version)

    async def _rehash(self, user: StoredUser, password: str) -> None:
        upgraded = replace(user, password_hash=await self._passwords.hash(password))
        if await self._store.replace(user, upgraded):
            logger.info("upgraded the password hash of %s", user.email)

    async def exists(self, email: str) -> bool:
        return await self._store.exists(normalise_email(email))

    async def lookup(self, email: str) -> AccountState | None:
        """Whether ``email`` is registered, and its account (id and token version) if so."""
        return await self.account(normalise_email(email))

    async def get(self, caller: Principal, email: str) -> UserInfo:
        """The caller's own record (PermissionDenied before NotFound, revealing nothing)."""
        address = normalise_email(email)
        caller.require_self(address)
        user = await self._store.get(address)
        if user is None:
            raise NotFound(f"no user is registered under {address}")
        return UserInfo.of(user)

    async def update(
        self, caller: Principal, email: str, *, name: str | None, password: str | None
    ) -> UserInfo:
        """Change the caller's name and/or password; updated_at becomes now.

        A new password revokes every token issued before it (the token version goes up)."""
        address = normalise_email(email)
        caller.require_self(address)
        if name is None and password is None:
            raise InvalidArgument("give at least one of name, password")
        if name is not None:
            validate_name(name)
        new_hash = None
        if password is not None:
            validate_password(password)
            new_hash = await self._passwords.hash(password)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._store.get(address)
            if current is None:
                raise NotFound(f"no user is registered under {address}")
            updated = replace(
                current,
                name=current.name if name is None else name,
                password_hash=current.password_hash if new_hash is None else new_hash,
                updated_at=max(self._clock(), current.created_at),
                token_version=current.token_version + (new_hash is not None),
            )
            if await self._store.replace(current, updated):
                logger.info("updated user %s", address)
                if new_hash is not None:
                    await self._revoked(address)
                return UserInfo.of(updated)
        raise Unavailable("the account is being changed concurrently; retry")

    async def revoke_tokens(self, caller: Principal, email: str) -> None:
        """Sign out everywhere: every token of the caller's account issued so far stops
        working (the one used for this call included)."""
        address = normalise_email(email)
        caller.require_self(address)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._store.get(address)
            if current is None:
                raise NotFound(f"no user is registered under {address}")
            updated = replace(current, token_version=current.token_version + 1)
            if await self._store.replace(current, updated):
                logger.info("revoked every token of %s", address)
                await self._revoked(address)
                return
        raise Unavailable("the account is being changed concurrently; retry")

    async def delete(self, caller: Principal, email: str) -> None:
        """Delete the caller's account: its record now, its data in the other services through
        the outbox (an erasure event written with the deletion), its tokens at once."""
        address = normalise_email(email)
        caller.require_self(address)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._store.get(address)
            if current is None:
                raise NotFound(f"no user is registered under {address}")
            if await self._store.delete(current):
                logger.info("deleted user %s (account %s)", address, current.account_id)
                await self._revoked(address)
                return
        raise Unavailable("the account is being changed concurrently; retry")

    async def list_users(
        self, page_size: int | None, page_token: str | None
    ) -> tuple[list[UserInfo], str]:
        """One page of users in ascending email order, and the next page's token."""
        page = parse_page(page_size, page_token)
        users, read, total = await self._store.list_page(page.offset, page.size)
        return [UserInfo.of(user) for user in users], page.next_token(read, total)
