"""UserService's domain logic: registration, sign-in with throttling, and account management."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from services.common.domain import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Principal,
    RateLimited,
    Unavailable,
)
from services.common.emails import normalise_email
from services.common.paging import parse_page
from services.common.sessions import AccountState
from services.user.models import (
    Admission,
    Authentication,
    Counter,
    Existence,
    LoginPolicy,
    StoredUser,
    UserInfo,
)
from services.user.passwords import Passwords, validate_password
from services.user.settings import LoginLimits

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 100
MAX_LOOKUP_EMAILS = 100
"""The most emails one CheckUsersExist call may ask about."""
OPERATOR = "operator"
"""The role that may list every user (granted with ``python -m services.user.operators``)."""
_UPDATE_ATTEMPTS = 3


class UserStore(Protocol):
    """What the service needs from storage (RedisUserStore on a standalone Redis,
    ClusterUserStore on a Valkey Cluster)."""

    async def create(self, user: StoredUser) -> bool: ...

    async def get(self, email: str) -> StoredUser | None: ...

    async def get_many(self, emails: Sequence[str]) -> list[StoredUser | None]: ...

    async def exists(self, email: str) -> bool: ...

    async def replace(self, current: StoredUser, updated: StoredUser) -> bool: ...

    async def new_account_id(self, email: str) -> str: ...

    async def delete(self, user: StoredUser) -> bool: ...

    async def list_page(self, offset: int, size: int) -> tuple[list[StoredUser], int, int]: ...

    async def admit_login(self, email: str, client: str, policy: LoginPolicy) -> Admission: ...

    async def login_succeeded(self, email: str, client: str, policy: LoginPolicy) -> None: ...

    async def count_registration(self, client: str, window_seconds: int) -> Counter: ...


class TokenIssuer(Protocol):
    def issue(
        self, email: str, account_id: str = "", token_version: int = 0
    ) -> tuple[str, datetime]: ...


Revoked = Callable[[str], Awaitable[None]]
"""Called with an email after its account's earlier tokens stopped being valid."""


async def _nobody_to_tell(_email: str) -> None:
    return None


_REFUSALS = {
    "client": "too many failed sign-in attempts from this client; retry in {} seconds",
    "pair": "too many failed sign-in attempts for this account from this client; "
    "retry in {} seconds",
    "account": "too many recent failed sign-in attempts for this account; retry in {} seconds",
}


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


def account_state(user: StoredUser | None) -> AccountState | None:
    """What a token check needs of a user document: None without an account id."""
    if user is None or not user.account_id:
        return None
    return AccountState(user.account_id, user.token_version, user.name)


def _existence(email: str, user: StoredUser | None) -> Existence:
    """What CheckUserExists answers: a record without an account id (written before ids
    existed) exists, with nothing more."""
    if user is None or not user.account_id:
        return Existence(email, user is not None)
    return Existence(email, True, user.account_id, user.token_version, user.name)


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

    async def register(
        self, name: str, email: str, password: str, client: str | None = None
    ) -> UserInfo:
        """Create an account; AlreadyExists if the (normalised) email is taken.

        RateLimited when ``client`` (the caller's host; None for trusted in-process callers)
        has registered too often in the window. Every attempt that gets as far as hashing counts.
        """
        validate_name(name)
        address = normalise_email(email)
        validate_password(password)
        taken = AlreadyExists(f"a user is already registered under {address}")
        if await self._store.exists(address):  # spares a hash (and a count) for a duplicate
            raise taken
        if client is not None:
            limits = self._limits
            counted = await self._store.count_registration(client, limits.register_window_seconds)
            if counted.count > limits.register_attempts:
                logger.warning("registration throttled for client %s", client)
                raise RateLimited(
                    f"too many registrations from this client; retry in {counted.ttl} seconds",
                    counted.ttl,
                )
        password_hash = await self._passwords.hash(password)
        now = self._clock()
        account_id = await self._store.new_account_id(address)
        user = StoredUser(name, address, password_hash, now, now, account_id=account_id)
        if not await self._store.create(user):
            raise taken
        logger.info("registered user %s", address)
        return UserInfo.of(user)

    async def authenticate(self, email: str, password: str, client: str) -> Authentication | None:
        """A token if the credentials match; None (same cost and answer) if they do not.

        RateLimited while the client, the account from this client, or the account's back-off
        refuses the attempt (see :class:`LoginLimits`). Each admitted attempt counts as a
        failure until it succeeds, so parallel guesses cannot exceed a limit either.
        """
        address = normalise_email(email)
        validate_password(password)
        policy = self._limits.policy
        admission = await self._store.admit_login(address, client, policy)
        if not admission.admitted:
            logger.warning(
                "sign-in throttled (%s) for %s from %s", admission.scope, address, client
            )
            raise RateLimited(
                _REFUSALS[admission.scope].format(admission.retry_after), admission.retry_after
            )
        user = await self._store.get(address)
        matches = await self._passwords.verify(
            None if user is None else user.password_hash, password
        )
        if user is None or not matches:
            logger.info("failed sign-in for %s", address)
            return None
        await self._store.login_succeeded(address, client, policy)
        if not user.account_id:
            user = await self._assign_account_id(user)
        if self._passwords.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        token, expires_at = self._issuer.issue(address, user.account_id, user.token_version)
        logger.info("user %s signed in", address)
        return Authentication(address, token, expires_at)

    async def _assign_account_id(self, user: StoredUser) -> StoredUser:
        """Give a record written before account ids existed its id (once, compare-and-set)."""
        upgraded = replace(user, account_id=await self._store.new_account_id(user.email))
        if await self._store.replace(user, upgraded):
            logger.info("assigned an account id to %s", user.email)
            return (await self._store.get(user.email)) or upgraded
        current = await self._store.get(user.email)
        if current is None or not current.account_id:
            raise Unavailable("the account is being changed concurrently; retry")
        return current

    async def account(self, email: str) -> AccountState | None:
        """The account registered under ``email`` (for token checks), or None."""
        return account_state(await self.record(email))

    async def record(self, email: str) -> StoredUser | None:
        """The user document stored under ``email`` (normalised), or None (the token check of
        services.user.checked, which keeps it for the request's own reply)."""
        return await self._store.get(email)

    async def _rehash(self, user: StoredUser, password: str) -> None:
        upgraded = replace(user, password_hash=await self._passwords.hash(password))
        if await self._store.replace(user, upgraded):
            logger.info("upgraded the password hash of %s", user.email)

    async def exists(self, email: str) -> bool:
        return await self._store.exists(normalise_email(email))

    async def lookup(self, email: str) -> AccountState | None:
        """Whether ``email`` is registered, and its account (id and token version) if so."""
        return await self.account(normalise_email(email))

    async def lookup_many(self, emails: Sequence[str]) -> list[Existence]:
        """Whether each email is registered (in request order), and its account: one store
        round trip. InvalidArgument naming the index of the first malformed email, before
        anything is read."""
        if not 1 <= len(emails) <= MAX_LOOKUP_EMAILS:
            raise InvalidArgument(
                f"emails must list 1 to {MAX_LOOKUP_EMAILS} addresses, got {len(emails)}"
            )
        addresses = [normalise_email(raw, f"emails[{i}]") for i, raw in enumerate(emails)]
        users = await self._store.get_many(addresses)
        return [_existence(address, user) for address, user in zip(addresses, users, strict=True)]

    async def get(
        self, caller: Principal, email: str, *, checked: StoredUser | None = None
    ) -> UserInfo:
        """The caller's own record (PermissionDenied before NotFound, revealing nothing).

        ``checked``: the document the check of the caller's token read during this very request
        (services.user.checked); answered from it, without reading again, when it is the
        caller's account's document as the token names it."""
        address = normalise_email(email)
        caller.require_self(address)
        if (
            checked is not None
            and checked.email == address
            and caller.kind == "user"
            and checked.account_id
            and checked.account_id == caller.account_id
            and checked.token_version == caller.token_version
        ):
            return UserInfo.of(checked)
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
        self, page_size: int | None, page_token: str | None, caller: Principal | None = None
    ) -> tuple[list[UserInfo], str]:
        """One page of users in ascending email order, and the next page's token.

        ``caller`` None is a service (ListUsers is internal); a user must hold the operator
        role, so that an ordinary account cannot enumerate every address.
        """
        if caller is not None and not caller.is_service:
            record = await self._store.get(caller.name)
            if record is None or record.role != OPERATOR:
                raise PermissionDenied("only operators may list every user")
        page = parse_page(page_size, page_token)
        users, read, total = await self._store.list_page(page.offset, page.size)
        return [UserInfo.of(user) for user in users], page.next_token(read, total)

    async def set_role(self, email: str, role: str) -> UserInfo:
        """Grant (``operator``) or remove (``""``) a role; an operator's tool, never an API."""
        if role not in ("", OPERATOR):
            raise InvalidArgument(f"unknown role {role!r}")
        address = normalise_email(email)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._store.get(address)
            if current is None:
                raise NotFound(f"no user is registered under {address}")
            if await self._store.replace(current, replace(current, role=role)):
                logger.info("role of %s is now %r", address, role or "user")
                return UserInfo.of(current)
        raise Unavailable("the account is being changed concurrently; retry")
