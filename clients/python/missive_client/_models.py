"""The SDK's result types: frozen dataclasses with timezone-aware UTC datetimes.

Both transports (gRPC via betterproto2, REST via openapi-python-client) are converted into
these, so code written against the SDK does not depend on which one carried a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, TypeVar

__all__ = [
    "Conversation",
    "HealthStatus",
    "Message",
    "Notification",
    "Page",
    "ServiceHealth",
    "Subscription",
    "Token",
    "User",
]

T = TypeVar("T")

HealthStatus = Literal["SERVING", "NOT_SERVING", "UNREACHABLE"]


@dataclass(frozen=True, slots=True)
class User:
    """A registered user; the password is never part of it."""

    name: str
    email: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Token:
    """An access token from :meth:`Client.login`; ``access_token`` is secret and not in repr."""

    email: str
    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message from one user to another."""

    id: int
    sender_email: str
    receiver_email: str
    content: str
    timestamp: datetime
    read: bool


@dataclass(frozen=True, slots=True)
class Conversation:
    """The exchange between the caller and one peer, with its last message and unread count."""

    peer_email: str
    last_message: Message
    unread_count: int
    message_count: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Notification:
    """Tells a user that a message arrived for them.

    ``preview`` is the start of the message's content (at most 100 characters) and
    ``sender_name`` the sender's display name; both are empty for notifications created before
    the services carried them.
    """

    id: str
    message_id: int
    sender_email: str
    receiver_email: str
    timestamp: datetime
    read: bool
    preview: str = ""
    sender_name: str = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    """Whether a user receives notifications of new messages (everyone does by default)."""

    email: str
    subscribed: bool


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """The health of one endpoint of the system, as :meth:`Client.status` reports it."""

    service: str
    transport: Literal["grpc", "rest"]
    address: str
    status: HealthStatus
    detail: str = ""

    @property
    def serving(self) -> bool:
        """True when the endpoint answered SERVING."""
        return self.status == "SERVING"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list operation.

    ``next_page_token`` is empty on the last page. ``unread_count`` is the caller's total of
    unread notifications on pages of ``notifications.list`` and ``None`` on other pages.
    """

    items: tuple[T, ...]
    next_page_token: str
    unread_count: int | None = None
