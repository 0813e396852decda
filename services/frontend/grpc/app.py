"""FrontendService gRPC adapter: protobuf requests to domain calls and back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import grpc.aio
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.notification.v1 import notification_pb2

from services.common.callers import peer_host
from services.common.domain import InvalidArgument
from services.common.grpc_edge import Context, caller
from services.frontend.service import FrontendService
from services.notification.models import Notification
from services.notification.wire import notification_from_proto, notification_to_proto

MAX_BATCH_ITEMS = 100  # ReceiveNotifications, as its contract states
SERVICE_NAME: str = frontend_pb2.DESCRIPTOR.services_by_name["FrontendService"].full_name


class FrontendServicer(frontend_pb2_grpc.FrontendServiceServicer):
    """Implements missive.frontend.v1.FrontendService over :class:`FrontendService`."""

    def __init__(self, service: FrontendService) -> None:
        self._service = service

    async def ReceiveNotification(
        self, request: frontend_pb2.ReceiveNotificationRequest, context: Context
    ) -> frontend_pb2.ReceiveNotificationResponse:
        notification = (
            notification_from_proto(request.notification)
            if request.HasField("notification")
            else None
        )
        delivered = await self._service.deliver(notification, request.receiver_account_id)
        return frontend_pb2.ReceiveNotificationResponse(delivered_to=delivered)

    async def ReceiveNotifications(
        self, request: frontend_pb2.ReceiveNotificationsRequest, context: Context
    ) -> frontend_pb2.ReceiveNotificationsResponse:
        if not 1 <= len(request.items) <= MAX_BATCH_ITEMS:
            raise InvalidArgument(f"items must hold 1 to {MAX_BATCH_ITEMS} requests")
        reply = frontend_pb2.ReceiveNotificationsResponse()
        items: list[tuple[Notification | None, str]] = []
        unreadable: dict[int, str] = {}  # refused alone, with the conversion's message
        for index, item in enumerate(request.items):
            try:
                notification = (
                    notification_from_proto(item.notification)
                    if item.HasField("notification")
                    else None
                )
            except InvalidArgument as exc:
                unreadable[index] = exc.message
                notification = None
            items.append((notification, item.receiver_account_id))
        outcomes = await self._service.deliver_many(items)
        for index, outcome in enumerate(outcomes):
            result = reply.results.add()
            if index in unreadable:
                result.invalid_argument = unreadable[index]
            elif isinstance(outcome, InvalidArgument):
                result.invalid_argument = outcome.message
            else:
                result.delivered_to = outcome
        return reply

    async def SubscribeNotifications(
        self, request: frontend_pb2.SubscribeNotificationsRequest, context: Context
    ) -> AsyncIterator[notification_pb2.Notification]:
        subscription = self._service.open(caller(), request.email, peer_host(context.peer()))

        def unregister(_: Context) -> None:
            self._service.close(subscription)

        # However the RPC ends (even while a write is pending), the stream is unregistered.
        # The cast: types-grpcio declares the callback type as a class, not a protocol.
        context.add_done_callback(cast("Any", unregister))
        async for notification in self._service.stream(subscription):
            yield notification_to_proto(notification)


def register(server: grpc.aio.Server, service: FrontendService) -> Sequence[str]:
    """Add the servicer to ``server``; the full service names, for health and reflection."""
    frontend_pb2_grpc.add_FrontendServiceServicer_to_server(FrontendServicer(service), server)
    return [SERVICE_NAME]
