"""Pushes new notifications from the `outbox:frontend` stream to FrontendService, at least once."""

from __future__ import annotations

import logging
import os
import socket

import grpc
import grpc.aio
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc

from services.common.delivery import (
    OutboxConfig,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.common.rpc_outcome import delivery_error
from services.notification.store import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM, decode_event
from services.notification.wire import notification_to_proto

logger = logging.getLogger(__name__)

OUTBOX = OutboxConfig(
    stream=OUTBOX_STREAM, group="frontend-relay", dead_letter_stream=OUTBOX_DEAD_LETTER_STREAM
)
PUSH_TIMEOUT_SECONDS = 2.0
# Codes that mean the frontend refused this notification for good (dead-lettered at once);
# see services.common.rpc_outcome for the transient ones (retried until they succeed).
_PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT})


def lane_key(fields: dict[str, str]) -> str:
    """Pushes for one receiver are delivered in order; different receivers independently."""
    return fields.get("receiver_email", "")


def consumer_name() -> str:
    """This process's name in the relay's consumer group: hostname-pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class FrontendPush:
    """The relay's handler: one ReceiveNotification per outbox entry.

    UNAVAILABLE, DEADLINE_EXCEEDED and the other transient codes are retried until they succeed;
    INVALID_ARGUMENT or an undecodable entry is dead-lettered at once; any other status counts
    toward the relay's ``max_attempts``. Pushing the same notification twice is harmless:
    FrontendService shows each id once per stream.
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
            notification=notification_to_proto(notification)
        )
        try:
            reply = await self._stub.ReceiveNotification(
                request, timeout=self._timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            refused = f"FrontendService refused notification {notification.id}"
            raise delivery_error(exc, permanent=_PERMANENT, refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"FrontendService unreachable: {exc}") from exc
        logger.debug(
            "notification %s pushed to FrontendService (%d live streams)",
            notification.id,
            reply.delivered_to,
        )
