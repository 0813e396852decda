"""NotificationService gRPC adapter: protobuf requests to domain calls and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc.aio
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from services.common.dead_letters import AdminRpcs, DeadLetterRpcs, DeadLetters
from services.common.domain import InvalidArgument
from services.common.grpc_edge import Context, caller
from services.notification.models import CreateResult, NewNotification
from services.notification.service import NotificationService
from services.notification.wire import (
    notification_to_proto,
    status_to_proto,
    timestamp_from_proto,
)

MAX_BATCH_ITEMS = 100  # CreateNotifications, as its contract states
SERVICE_NAME: str = notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


class NotificationServicer(DeadLetterRpcs, notification_pb2_grpc.NotificationServiceServicer):
    """Implements missive.notification.v1.NotificationService over :class:`NotificationService`."""

    def __init__(
        self, service: NotificationService, dead_letters: DeadLetters | None = None
    ) -> None:
        self._service = service
        self._admin = AdminRpcs(dead_letters, notification_pb2)

    async def CreateNotification(
        self, request: notification_pb2.CreateNotificationRequest, context: Context
    ) -> notification_pb2.CreateNotificationResponse:
        return await self._create(request)

    async def CreateNotifications(
        self, request: notification_pb2.CreateNotificationsRequest, context: Context
    ) -> notification_pb2.CreateNotificationsResponse:
        if not 1 <= len(request.items) <= MAX_BATCH_ITEMS:
            raise InvalidArgument(f"items must hold 1 to {MAX_BATCH_ITEMS} requests")
        principal = caller()
        valid: list[NewNotification] = []
        refused: dict[int, str] = {}
        for index, item in enumerate(request.items):
            try:
                valid.append(self._service.new_notification(principal, **_create_fields(item)))
            except InvalidArgument as exc:
                refused[index] = exc.message
        created = iter(await self._service.create_notifications(principal, valid) if valid else [])
        reply = notification_pb2.CreateNotificationsResponse()
        for index in range(len(request.items)):
            result = reply.results.add()
            if index in refused:
                result.invalid_argument = refused[index]
            else:
                _fill(result.response, next(created))
        return reply

    async def _create(
        self, request: notification_pb2.CreateNotificationRequest
    ) -> notification_pb2.CreateNotificationResponse:
        result = await self._service.create_notification(caller(), **_create_fields(request))
        reply = notification_pb2.CreateNotificationResponse()
        _fill(reply, result)
        return reply

    async def CheckUserSubscribed(
        self, request: notification_pb2.CheckUserSubscribedRequest, context: Context
    ) -> notification_pb2.SubscriptionStatus:
        return status_to_proto(await self._service.check_subscribed(caller(), request.email))

    async def SubscribeUser(
        self, request: notification_pb2.SubscribeUserRequest, context: Context
    ) -> notification_pb2.SubscriptionStatus:
        return status_to_proto(await self._service.subscribe(caller(), request.email))

    async def UnsubscribeUser(
        self, request: notification_pb2.UnsubscribeUserRequest, context: Context
    ) -> notification_pb2.SubscriptionStatus:
        return status_to_proto(await self._service.unsubscribe(caller(), request.email))

    async def ListNotifications(
        self, request: notification_pb2.ListNotificationsRequest, context: Context
    ) -> notification_pb2.ListNotificationsResponse:
        page = await self._service.list_notifications(
            caller(),
            request.email,
            unread_only=request.unread_only,
            page_size=request.page_size,
            page_token=request.page_token,
            account_id=request.account_id,
        )
        return notification_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(n) for n in page.notifications],
            next_page_token=page.next_page_token,
            unread_count=page.unread_count,
        )

    async def MarkNotificationRead(
        self, request: notification_pb2.MarkNotificationReadRequest, context: Context
    ) -> notification_pb2.Notification:
        notification = await self._service.mark_read(caller(), request.email, request.id)
        return notification_to_proto(notification)

    async def MarkAllNotificationsRead(
        self, request: notification_pb2.MarkAllNotificationsReadRequest, context: Context
    ) -> notification_pb2.MarkAllNotificationsReadResponse:
        marked = await self._service.mark_all_read(caller(), request.email)
        return notification_pb2.MarkAllNotificationsReadResponse(marked=marked)

    async def EraseAccount(
        self, request: notification_pb2.EraseAccountRequest, context: Context
    ) -> notification_pb2.EraseAccountResponse:
        erased = await self._service.erase_account(caller(), request.email, request.account_id)
        return notification_pb2.EraseAccountResponse(erased=erased)


def _create_fields(request: notification_pb2.CreateNotificationRequest) -> dict[str, Any]:
    """The keyword arguments of NotificationService.create_notification in ``request``."""
    return {
        "message_id": request.message_id,
        "sender_email": request.sender_email,
        "receiver_email": request.receiver_email,
        "timestamp": (
            timestamp_from_proto(request.timestamp) if request.HasField("timestamp") else None
        ),
        "read": request.read,
        "receiver_account_id": request.receiver_account_id,
        "preview": request.preview,
        "sender_name": request.sender_name,
    }


def _fill(reply: notification_pb2.CreateNotificationResponse, result: CreateResult) -> None:
    reply.created = result.created
    reply.subscribed = result.subscribed
    if result.notification is not None:
        reply.notification.CopyFrom(notification_to_proto(result.notification))


def register(
    server: grpc.aio.Server, service: NotificationService, dead_letters: DeadLetters | None = None
) -> Sequence[str]:
    """Add the servicer to ``server``; the full service names, for health and reflection."""
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationServicer(service, dead_letters), server
    )
    return [SERVICE_NAME]
