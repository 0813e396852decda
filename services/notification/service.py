"""NotificationService domain logic: validation, authorisation and paging over a store."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Protocol

from services.common.domain import Principal
from services.common.emails import normalise_email
from services.common.paging import parse_page
from services.notification.errors import InvalidArgument, NotFound, PermissionDenied
from services.notification.models import (
    CreateResult,
    NewNotification,
    Notification,
    NotificationPage,
    SubscriptionStatus,
)

logger = logging.getLogger(__name__)

MAX_MESSAGE_ID = 2**63 - 1
_NOTIFICATION_ID = re.compile(r"[0-9]{1,19}")


class NotificationStore(Protocol):
    """What the service needs from storage (RedisNotificationStore in production)."""

    async def create(self, new: NewNotification) -> CreateResult: ...

    async def list_all(self, email: str) -> list[Notification]: ...

    async def mark_read(self, email: str, notification_id: str) -> Notification | None: ...

    async def mark_all_read(self, email: str) -> int: ...

    async def is_subscribed(self, email: str) -> bool: ...

    async def set_subscribed(self, email: str, subscribed: bool) -> None: ...


def _owner(principal: Principal, raw_email: str) -> str:
    """The normalised email, if ``principal`` may act on it (services were allowlisted)."""
    email = normalise_email(raw_email)
    principal.require_self(email)
    return email


class NotificationService:
    """The operations of the contract, independent of gRPC and REST."""

    def __init__(self, store: NotificationStore) -> None:
        self._store = store

    async def create_notification(
        self,
        principal: Principal,
        *,
        message_id: int,
        sender_email: str,
        receiver_email: str,
        timestamp: datetime | None,
        read: bool = False,
    ) -> CreateResult:
        """Notify the receiver of a stored message once (idempotent per message id)."""
        if not principal.is_service:  # the edge allows only MessageService; belt and braces
            raise PermissionDenied("CreateNotification is internal to Missive's services")
        if not 1 <= message_id <= MAX_MESSAGE_ID:
            raise InvalidArgument(f"message_id must be at least 1, got {message_id}")
        sender = normalise_email(sender_email, "sender_email")
        receiver = normalise_email(receiver_email, "receiver_email")
        if timestamp is None:
            raise InvalidArgument("timestamp is required")
        if timestamp.tzinfo is None:
            raise InvalidArgument("timestamp must carry a UTC offset")
        new = NewNotification(message_id, sender, receiver, timestamp, read)
        result = await self._store.create(new)
        if result.created:
            logger.debug("notification %s stored for %s", new.id, receiver)
        elif not result.subscribed:
            logger.debug("no notification for message %s: %s is unsubscribed", message_id, receiver)
        else:
            logger.debug("notification %s already exists; not created again", new.id)
        return result

    async def check_subscribed(self, principal: Principal, email: str) -> SubscriptionStatus:
        owner = _owner(principal, email)
        return SubscriptionStatus(owner, await self._store.is_subscribed(owner))

    async def subscribe(self, principal: Principal, email: str) -> SubscriptionStatus:
        owner = _owner(principal, email)
        await self._store.set_subscribed(owner, True)
        logger.info("%s subscribed to notifications", owner)
        return SubscriptionStatus(owner, True)

    async def unsubscribe(self, principal: Principal, email: str) -> SubscriptionStatus:
        owner = _owner(principal, email)
        await self._store.set_subscribed(owner, False)
        logger.info("%s unsubscribed from notifications", owner)
        return SubscriptionStatus(owner, False)

    async def list_notifications(
        self,
        principal: Principal,
        email: str,
        *,
        unread_only: bool = False,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> NotificationPage:
        """One page of the owner's notifications, newest first, and their unread total."""
        owner = _owner(principal, email)
        page = parse_page(page_size, page_token)
        stored = await self._store.list_all(owner)
        unread = [n for n in stored if not n.read]
        listed = unread if unread_only else stored
        items = listed[page.offset : page.offset + page.size]
        return NotificationPage(items, page.next_token(len(items), len(listed)), len(unread))

    async def mark_read(
        self, principal: Principal, email: str, notification_id: str
    ) -> Notification:
        owner = _owner(principal, email)
        if not _NOTIFICATION_ID.fullmatch(notification_id):
            raise InvalidArgument("id must be 1 to 19 decimal digits")
        notification = await self._store.mark_read(owner, notification_id)
        if notification is None:
            raise NotFound(f"no notification {notification_id} for {owner}")
        return notification

    async def mark_all_read(self, principal: Principal, email: str) -> int:
        owner = _owner(principal, email)
        marked = await self._store.mark_all_read(owner)
        logger.debug("marked %d notifications of %s read", marked, owner)
        return marked
