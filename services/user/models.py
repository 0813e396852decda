"""Domain values of UserService, free of transport and storage imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class StoredUser:
    """A user record as stored, password hash included; it never leaves the service layer."""

    name: str
    email: str
    password_hash: str = field(repr=False)
    created_at: datetime
    updated_at: datetime
    # The account id (never reused; "" in a record written before ids existed) and the version
    # every valid token of the account carries (raised to revoke all earlier tokens).
    account_id: str = ""
    token_version: int = 1
    # "operator" may list every user; "" for everyone else (granted only by the operators CLI).
    role: str = ""
    # The document this record was read from, for compare-and-set updates.
    revision: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class Counter:
    """A throttling counter after an increment: its value and seconds until it resets."""

    count: int
    ttl: int


@dataclass(frozen=True)
class LoginPolicy:
    """The numbers the sign-in admission script applies (see services.user.settings.LoginLimits)."""

    client_failures: int
    client_window_seconds: int
    pair_failures: int
    pair_window_seconds: int
    account_free_failures: int
    account_base_delay_ms: int
    account_max_delay_ms: int
    account_window_seconds: int
    known_clients: int
    known_client_seconds: int


@dataclass(frozen=True)
class Admission:
    """The outcome of asking to verify a password: admitted, or refused for ``retry_after`` s.

    ``scope`` says which limit refused it: ``client``, ``pair`` or ``account``.
    """

    admitted: bool
    retry_after: int = 0
    scope: str = ""


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


@dataclass(frozen=True)
class Existence:
    """Whether a user is registered under ``email`` (normalised), and its account if it has an
    id (a record written before account ids existed exists without one)."""

    email: str
    exists: bool
    account_id: str = ""
    token_version: int = 0
    name: str = ""
