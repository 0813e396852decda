"""NotificationService REST adapter: Connexion operations to domain calls and back."""

from __future__ import annotations

from missive.rest._runtime import TokenInfo
from missive.rest.notification import NotificationApi, create_app
from missive.rest.notification.models import (
    MarkAllReadResponse,
    MarkReadRequest,
    NotificationList,
    SubscriptionStatus,
)
from missive.rest.notification.models import Notification as NotificationBody

from services.common.rest_adapter import RestAdapter, rest_app_factory
from services.common.rest_edge import (
    own_email,
    principal,
)
from services.common.timestamps import format_timestamp
from services.notification.models import Notification
from services.notification.models import SubscriptionStatus as Status
from services.notification.service import NotificationService


def notification_body(notification: Notification) -> NotificationBody:
    return {
        "id": notification.id,
        "message_id": notification.message_id,
        "sender_email": notification.sender_email,
        "receiver_email": notification.receiver_email,
        "timestamp": format_timestamp(notification.timestamp),
        "read": notification.read,
        "preview": notification.preview,
        "sender_name": notification.sender_name,
    }


def status_body(status: Status) -> SubscriptionStatus:
    return {"email": status.email, "subscribed": status.subscribed}


class NotificationRestApi(RestAdapter[NotificationService], NotificationApi):
    """Implements every operation of openapi/notification.yaml over :class:`NotificationService`."""

    async def list_notifications(
        self,
        *,
        token_info: TokenInfo,
        email: str | None = None,
        unread_only: bool = False,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> NotificationList:
        page = await self._service.list_notifications(
            principal(token_info),
            own_email(token_info, email),
            unread_only=unread_only,
            page_size=page_size,
            page_token=page_token,
        )
        return {
            "notifications": [notification_body(n) for n in page.notifications],
            "next_page_token": page.next_page_token,
            "unread_count": page.unread_count,
        }

    async def mark_notification_read(
        self, *, token_info: TokenInfo, body: MarkReadRequest, id: str
    ) -> NotificationBody:
        notification = await self._service.mark_read(principal(token_info), body["email"], id)
        return notification_body(notification)

    async def mark_all_notifications_read(
        self, *, token_info: TokenInfo, body: MarkReadRequest
    ) -> MarkAllReadResponse:
        return {"marked": await self._service.mark_all_read(principal(token_info), body["email"])}

    async def get_subscription(self, *, token_info: TokenInfo, email: str) -> SubscriptionStatus:
        return status_body(await self._service.check_subscribed(principal(token_info), email))

    async def subscribe_user(self, *, token_info: TokenInfo, email: str) -> SubscriptionStatus:
        return status_body(await self._service.subscribe(principal(token_info), email))

    async def unsubscribe_user(self, *, token_info: TokenInfo, email: str) -> SubscriptionStatus:
        return status_body(await self._service.unsubscribe(principal(token_info), email))


create_rest_app = rest_app_factory(NotificationRestApi, create_app)
"""The Connexion app serving openapi/notification.yaml, with the shared edge."""
