"""Pushes new notifications from the `outbox:frontend` stream to FrontendService, at least once."""

from __future__ import annotations

import logging
import os
import socket

import grpc
import grpc.aio
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc

from services.common.delivery import OutboxConfig, PermanentDeliveryError
from services.notification.store import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM, decode_event
from services.notification.wire import notification_to_proto

logger = logging.getLogger(__name__)

OUTBOX = OutboxConfig(
    stream=OUTBOX_STREAM, group="frontend-relay", dead_letter_stream=OUTBOX_DEAD_LETTER_STREAM
)
PUSH_TIMEOUT_SECONDS = 2.0
# Codes that mean the frontend refused this notification for good; anything else is retried.
_PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT})


def consumer_name() -> str:
    """This process's name in the relay's consumer group: hostname-pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class FrontendPush:
    """The relay's handler: one ReceiveNotification per outbox entry.

    UNAVAILABLE, DEADLINE_EXCEEDED (and any other failure) propagate, so the relay retries
    with backoff; INVALID_ARGUMENT or an undecodable entry is dead-lettered at once. Pushing the
    same notification twice is harmless: FrontendService shows each id once per stream.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float = PUSH_TIMEOUT_SECONDS) -> None:
        self._stub = frontend_pb2_grpc.FrontendServiceStub(channel)
        self._timeout = timeout

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            notification = decode_event(fields)
        except ValueError as exc:
            raise PermanentDeliveryError(f"malformed outbox entry {entry_id}: {exc}") from exc
        request = frontend_pb2.ReceiveNotificationRequest(
            notification=notification_to_proto(notification),
            receiver_account_id=fields.get("receiver_account_id", ""),
        )
        try:
            reply = await self._stub.ReceiveNotification(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _PERMANENT:
                raise PermanentDeliveryError(
                    f"FrontendService refused notification {notification.id}: {exc.details()}"
                ) from exc
            raise
        logger.debug(
            "notification %s pushed to FrontendService (%d live streams)",
            notification.id,
            reply.delivered_to,
        )
