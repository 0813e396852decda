"""UserService's domain logic: registration, sign-in with throttling, and account management."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from services.common.domain import Principal
from services.common.emails import normalise_email
from services.common.errors import ConfigError
from services.common.paging import parse_page
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
    def issue(self, email: str) -> tuple[str, datetime]: ...


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
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._issuer = issuer
        self._limits = limits or LoginLimits()
        self._clock = clock

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
        user = StoredUser(name, address, password_hash, now, now)
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
        if self._passwords.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        token, expires_at = self._issuer.issue(address)
        logger.info("user %s signed in", address)
        return Authentication(address, token, expires_at)

    async def _rehash(self, user: StoredUser, password: str) -> None:
        upgraded = replace(user, password_hash=await self._passwords.hash(password))
        if await self._store.replace(user, upgraded):
            logger.info("upgraded the password hash of %s", user.email)

    async def exists(self, email: str) -> bool:
        return await self._store.exists(normalise_email(email))

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
        """Change the caller's name and/or password; updated_at becomes now."""
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
            )
            if await self._store.replace(current, updated):
                logger.info("updated user %s", address)
                return UserInfo.of(updated)
        raise Unavailable("the account is being changed concurrently; retry")

    async def delete(self, caller: Principal, email: str) -> None:
        address = normalise_email(email)
        caller.require_self(address)
        if not await self._store.delete(address):
            raise NotFound(f"no user is registered under {address}")
        logger.info("deleted user %s", address)

    async def list_users(
        self, page_size: int | None, page_token: str | None
    ) -> tuple[list[UserInfo], str]:
        """One page of users in ascending email order, and the next page's token."""
        page = parse_page(page_size, page_token)
        users, read, total = await self._store.list_page(page.offset, page.size)
        return [UserInfo.of(user) for user in users], page.next_token(read, total)
