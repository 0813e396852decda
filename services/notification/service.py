"""NotificationService domain logic: validation, authorisation and paging over a store."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from services.common.auth import ACCOUNT_ID
from services.common.domain import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Principal,
    Unauthenticated,
)
from services.common.emails import normalise_email
from services.common.paging import parse_page
from services.common.sessions import GONE, AccountLookup
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

    async def create_many(self, batch: Sequence[NewNotification]) -> list[CreateResult]: ...

    async def list_page(
        self, email: str, *, unread_only: bool, offset: int, size: int
    ) -> tuple[list[Notification], int, int]: ...

    async def owned_page(
        self, email: str, account_id: str, *, unread_only: bool, offset: int, size: int
    ) -> tuple[list[Notification], int, int] | None: ...

    async def mark_read(self, email: str, notification_id: str) -> Notification | None: ...

    async def mark_all_read(self, email: str) -> int: ...

    async def is_subscribed(self, email: str) -> bool: ...

    async def set_subscribed(self, email: str, subscribed: bool) -> None: ...

    async def claim(self, email: str, account_id: str) -> bool: ...

    async def erase_account(self, email: str, account_id: str) -> int: ...


PREVIEW_CHARS = 100
"""Longest preview and sender name a notification keeps (Unicode code points)."""


def _bounded(text: str) -> str:
    """``text`` cut to PREVIEW_CHARS characters (a longer one is shortened, not refused)."""
    return text[:PREVIEW_CHARS]


def _account_id(raw: str, field: str) -> str:
    if raw and not ACCOUNT_ID.fullmatch(raw):
        raise InvalidArgument(f"{field} must be 32 lower-case hex digits or empty")
    return raw


def _claimant(principal: Principal, account_id: str) -> str:
    """The account that must own the data a call reads or changes: a user's token names it; an
    internal caller may name it with ``account_id`` ("" = none)."""
    return principal.account_id if principal.kind == "user" else account_id


def _log_created(new: NewNotification, result: CreateResult) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    if result.created:
        logger.debug("notification %s stored for %s", new.id, new.receiver_email)
    elif not result.subscribed:
        logger.debug(
            "no notification for message %s: %s is unsubscribed", new.message_id, new.receiver_email
        )
    else:
        logger.debug("notification %s already exists; not created again", new.id)


class NotificationService:
    """The operations of the contract, independent of gRPC and REST.

    ``accounts`` (UserService) confirms that an account is gone before its data is erased."""

    def __init__(self, store: NotificationStore, accounts: AccountLookup | None = None) -> None:
        self._store = store
        self._accounts = accounts

    async def _owner(
        self, principal: Principal, raw_email: str, account_id: str = "", *, valid: bool = True
    ) -> str:
        """The normalised email, if ``principal`` may act on it (services were allowlisted).

        Once the rest of the input is ``valid``, the data stored under the email must belong
        to the caller's account (a user's token names it; an internal caller may name it with
        ``account_id``): data of an earlier, deleted account of the same email is erased
        first; a deleted account is refused."""
        email = normalise_email(raw_email)
        principal.require_self(email)
        account = _claimant(principal, account_id)
        if valid and account and not await self._store.claim(email, account):
            raise Unauthenticated(GONE)
        return email

    async def erase_account(self, principal: Principal, email: str, account_id: str) -> int:
        """Erase the data of a deleted account (UserService's erasure relay); idempotent."""
        if not principal.is_service:  # the edge allows only UserService; belt and braces
            raise PermissionDenied("EraseAccount is internal to Missive's services")
        address = normalise_email(email)
        _account_id(account_id, "account_id")
        if self._accounts is not None:
            current = await self._accounts.account(address)
            if current is not None and current.account_id <= account_id:
                raise FailedPrecondition(
                    f"account {account_id or '(without id)'} of {address} is still registered"
                )
        erased = await self._store.erase_account(address, account_id)
        logger.info(
            "erased %d notifications of deleted account %s of %s", erased, account_id, address
        )
        return erased

    async def create_notification(
        self,
        principal: Principal,
        *,
        message_id: int,
        sender_email: str,
        receiver_email: str,
        timestamp: datetime | None,
        read: bool = False,
        receiver_account_id: str = "",
        preview: str = "",
        sender_name: str = "",
    ) -> CreateResult:
        """Notify the receiver of a stored message once (idempotent per message id)."""
        new = self.new_notification(
            principal,
            message_id=message_id,
            sender_email=sender_email,
            receiver_email=receiver_email,
            timestamp=timestamp,
            read=read,
            receiver_account_id=receiver_account_id,
            preview=preview,
            sender_name=sender_name,
        )
        result = await self._store.create(new)
        _log_created(new, result)
        return result

    def new_notification(
        self,
        principal: Principal,
        *,
        message_id: int,
        sender_email: str,
        receiver_email: str,
        timestamp: datetime | None,
        read: bool = False,
        receiver_account_id: str = "",
        preview: str = "",
        sender_name: str = "",
    ) -> NewNotification:
        """The notification a create request describes, validated (InvalidArgument if not)."""
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
        account = _account_id(receiver_account_id, "receiver_account_id")
        return NewNotification(
            message_id,
            sender,
            receiver,
            timestamp,
            read,
            account,
            preview=_bounded(preview),
            sender_name=_bounded(sender_name),
        )

    async def create_notifications(
        self, principal: Principal, batch: Sequence[NewNotification]
    ) -> list[CreateResult]:
        """:meth:`create_notification` of each validated notification (``new_notification``),
        in order, in one round trip to the store; idempotent per message id."""
        if not principal.is_service:
            raise PermissionDenied("CreateNotifications is internal to Missive's services")
        results = await self._store.create_many(batch)
        for new, result in zip(batch, results, strict=True):
            _log_created(new, result)
        return results

    async def check_subscribed(self, principal: Principal, email: str) -> SubscriptionStatus:
        owner = await self._owner(principal, email)
        return SubscriptionStatus(owner, await self._store.is_subscribed(owner))

    async def subscribe(self, principal: Principal, email: str) -> SubscriptionStatus:
        owner = await self._owner(principal, email)
        await self._store.set_subscribed(owner, True)
        logger.info("%s subscribed to notifications", owner)
        return SubscriptionStatus(owner, True)

    async def unsubscribe(self, principal: Principal, email: str) -> SubscriptionStatus:
        owner = await self._owner(principal, email)
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
        account_id: str = "",
    ) -> NotificationPage:
        """One page of the owner's notifications, newest first, and their unread total."""
        claimed = _account_id(account_id, "account_id")
        owner = await self._owner(principal, email, valid=False)  # 403 before 400
        account = _claimant(principal, claimed)
        page = parse_page(page_size, page_token)
        if account:  # the claim of _owner rides with the page read (one round trip)
            owned = await self._store.owned_page(
                owner, account, unread_only=unread_only, offset=page.offset, size=page.size
            )
            if owned is None:
                raise Unauthenticated(GONE)
            items, listed, unread = owned
        else:
            items, listed, unread = await self._store.list_page(
                owner, unread_only=unread_only, offset=page.offset, size=page.size
            )
        return NotificationPage(items, page.next_token(len(items), listed), unread)

    async def mark_read(
        self, principal: Principal, email: str, notification_id: str
    ) -> Notification:
        await self._owner(principal, email, valid=False)  # 403 before 400
        if not _NOTIFICATION_ID.fullmatch(notification_id):
            raise InvalidArgument("id must be 1 to 19 decimal digits")
        owner = await self._owner(principal, email)
        notification = await self._store.mark_read(owner, notification_id)
        if notification is None:
            raise NotFound(f"no notification {notification_id} for {owner}")
        return notification

    async def mark_all_read(self, principal: Principal, email: str) -> int:
        owner = await self._owner(principal, email)
        marked = await self._store.mark_all_read(owner)
        logger.debug("marked %d notifications of %s read", marked, owner)
        return marked
