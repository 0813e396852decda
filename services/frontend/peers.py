"""FrontendService's outbound peer: the unread notifications it replays from NotificationService."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

import grpc
import grpc.aio
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from services.common.domain import InvalidArgument, Unavailable
from services.notification.models import Notification
from services.notification.wire import notification_from_proto

logger = logging.getLogger(__name__)

NOTIFICATION_SERVICE_NAME: Final[str] = notification_pb2.DESCRIPTOR.services_by_name[
    "NotificationService"
].full_name
RETRY_METHODS = ("ListNotifications",)
"""Read-only, hence safe for the channel to retry on UNAVAILABLE."""
NOTIFICATION_RETRY: Final = (NOTIFICATION_SERVICE_NAME, RETRY_METHODS)
"""What the channel to NotificationService may retry (see ``Start.peer``)."""
PAGE_SIZE = 100
PAGE_TIMEOUT_SECONDS = 5.0
MAX_PAGES = 50
"""Far above NotificationService's retention (1000 per user by default); stops a token loop."""


class NotificationReplay:
    """Lists unread notifications through NotificationService.ListNotifications, every page."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        page_timeout: float = PAGE_TIMEOUT_SECONDS,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self._stub = notification_pb2_grpc.NotificationServiceStub(channel)
        self._timeout = page_timeout
        self._page_size = page_size
        self._max_pages = max_pages

    async def list_unread(self, email: str, account_id: str = "") -> list[Notification]:
        """All of ``email``'s unread notifications, newest first (of account ``account_id``
        only, when given); Unavailable on any RPC failure."""
        found: list[Notification] = []
        token = ""
        for _ in range(self._max_pages):
            request = notification_pb2.ListNotificationsRequest(
                email=email,
                unread_only=True,
                page_size=self._page_size,
                page_token=token,
                account_id=account_id,
            )
            try:
                page = await self._stub.ListNotifications(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                logger.warning(
                    "cannot replay unread notifications of %s: NotificationService said %s: %s",
                    email,
                    exc.code().name,
                    exc.details(),
                )
                raise Unavailable(
                    "NotificationService is unreachable, so unread notifications cannot be "
                    "replayed; retry"
                ) from exc
            found.extend(_converted(page.notifications))
            token = page.next_page_token
            if not token:
                return found
        logger.warning("replay for %s stopped after %d pages", email, self._max_pages)
        return found


def _converted(messages: Iterable[notification_pb2.Notification]) -> list[Notification]:
    converted = []
    for message in messages:
        try:
            converted.append(notification_from_proto(message))
        except InvalidArgument as exc:  # one bad record must not block the whole replay
            logger.warning("skipped notification %s in replay: %s", message.id, exc.message)
    return converted
