"""Domain values of NotificationService, free of transport and storage imports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NewNotification:
    """A validated CreateNotification request: the stored message to notify about."""

    message_id: int
    sender_email: str
    receiver_email: str
    timestamp: datetime
    read: bool = False
    receiver_account_id: str = ""  # the receiver's account when the message was sent
    preview: str = ""  # the start of the message's content; empty when the event had none
    sender_name: str = ""  # the sender's display name; empty when unknown

    @property
    def id(self) -> str:
        """The notification id: the decimal message id (one notification per message)."""
        return str(self.message_id)

    def as_notification(self) -> Notification:
        return Notification(
            id=self.id,
            message_id=self.message_id,
            sender_email=self.sender_email,
            receiver_email=self.receiver_email,
            timestamp=self.timestamp,
            read=self.read,
            preview=self.preview,
            sender_name=self.sender_name,
        )


@dataclass(frozen=True)
class Notification:
    """A stored notification, owned by its receiver."""

    id: str
    message_id: int
    sender_email: str
    receiver_email: str
    timestamp: datetime  # aware, UTC
    read: bool
    preview: str = ""  # the start of the message's content (empty before previews existed)
    sender_name: str = ""  # the sender's display name when the message was sent, if known


@dataclass(frozen=True)
class CreateResult:
    """Outcome of CreateNotification; ``notification`` is None exactly when not subscribed."""

    notification: Notification | None
    created: bool
    subscribed: bool


@dataclass(frozen=True)
class SubscriptionStatus:
    """Whether ``email`` receives notifications."""

    email: str
    subscribed: bool


@dataclass(frozen=True)
class NotificationPage:
    """One page of a user's notifications (newest first) and their total unread count."""

    notifications: list[Notification]
    next_page_token: str
    unread_count: int
