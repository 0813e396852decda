"""Delivers the `outbox:notifications` stream to NotificationService, at least once."""

from __future__ import annotations

import logging
import os
import socket
from typing import Final

import grpc
import grpc.aio
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from services.common.delivery import (
    OutboxConfig,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.common.rpc_outcome import delivery_error
from services.message.keys import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM
from services.message.store import decode_event

logger = logging.getLogger(__name__)

NOTIFY_TIMEOUT_SECONDS: Final = 2.0
# Consumer names are hostname-pid, so a restarted process is a new consumer: what a crashed one
# had read but not acknowledged is taken over by XAUTOCLAIM once idle this long. 5 s (not the
# default 15 s) keeps notifications of a crash-restart prompt; it stays well above the 2 s
# deadline of one delivery (the relay re-reads a batch after claim_idle_ms / 2).
CLAIM_IDLE_MS: Final = 5_000
OUTBOX: Final = OutboxConfig(
    stream=OUTBOX_STREAM,
    group="notification-relay",
    dead_letter_stream=OUTBOX_DEAD_LETTER_STREAM,
    claim_idle_ms=CLAIM_IDLE_MS,
)
# Codes that mean NotificationService refused this event for good (dead-lettered at once);
# see services.common.rpc_outcome for the transient ones (retried until they succeed).
_PERMANENT: Final = frozenset({grpc.StatusCode.INVALID_ARGUMENT})


def lane_key(fields: dict[str, str]) -> str:
    """Events for one receiver are delivered in order; different receivers independently."""
    return fields.get("receiver_email", "")


def consumer_name() -> str:
    """This process's name in the relay's consumer group: hostname-pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class NotifyReceiver:
    """The relay's handlers: CreateNotification per outbox entry, CreateNotifications per batch.

    UNAVAILABLE, DEADLINE_EXCEEDED and the other transient codes are retried until they succeed;
    INVALID_ARGUMENT or an undecodable entry is dead-lettered at once; any other status counts
    toward the relay's ``max_attempts``. Redelivery is harmless: both RPCs are idempotent per
    message_id. Against a NotificationService without CreateNotifications (UNIMPLEMENTED, e.g.
    during a rolling upgrade), batches fall back to one CreateNotification per entry.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float = NOTIFY_TIMEOUT_SECONDS) -> None:
        self._stub = notification_pb2_grpc.NotificationServiceStub(channel)
        self._timeout = timeout
        self._batches = True  # the peer implements CreateNotifications

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        request, message_id = _request(entry_id, fields)
        try:
            reply = await self._stub.CreateNotification(
                request, timeout=self._timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            refused = f"NotificationService refused message {message_id}"
            raise delivery_error(exc, permanent=_PERMANENT, refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"NotificationService unreachable: {exc}") from exc
        logger.debug(
            "message %d notified (created=%s, subscribed=%s)",
            message_id,
            reply.created,
            reply.subscribed,
        )

    async def deliver_batch(
        self, entries: list[tuple[str, dict[str, str]]]
    ) -> list[PermanentDeliveryError | None]:
        """One CreateNotifications for ``entries`` (consecutive events of one receiver)."""
        outcomes: list[PermanentDeliveryError | None] = [None] * len(entries)
        sent: list[tuple[int, int]] = []  # (index in entries, message id)
        batch = notification_pb2.CreateNotificationsRequest()
        for index, (entry_id, fields) in enumerate(entries):
            try:
                request, message_id = _request(entry_id, fields)
            except PermanentDeliveryError as exc:
                outcomes[index] = exc
                continue
            batch.items.append(request)
            sent.append((index, message_id))
        if not sent:
            return outcomes
        if not self._batches:
            for index, _ in sent:
                try:
                    await self(*entries[index])
                except PermanentDeliveryError as exc:
                    outcomes[index] = exc
            return outcomes
        try:
            reply = await self._stub.CreateNotifications(
                batch, timeout=self._timeout + 0.02 * len(sent), wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                logger.warning("NotificationService lacks CreateNotifications: one call per event")
                self._batches = False
                return await self.deliver_batch(entries)
            refused = f"NotificationService refused a batch of {len(sent)} messages"
            raise delivery_error(exc, permanent=frozenset(), refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"NotificationService unreachable: {exc}") from exc
        if len(reply.results) != len(sent):
            raise RuntimeError(f"{len(reply.results)} results for {len(sent)} items")
        for (index, message_id), result in zip(sent, reply.results, strict=True):
            if result.invalid_argument:
                outcomes[index] = PermanentDeliveryError(
                    f"NotificationService refused message {message_id}: INVALID_ARGUMENT: "
                    f"{result.invalid_argument}"
                )
        logger.debug("%d messages notified in one batch", len(sent))
        return outcomes


def _request(
    entry_id: str, fields: dict[str, str]
) -> tuple[notification_pb2.CreateNotificationRequest, int]:
    try:
        event = decode_event(fields)
    except ValueError as exc:
        raise PermanentDeliveryError(f"malformed outbox entry {entry_id}: {exc}") from exc
    request = notification_pb2.CreateNotificationRequest(
        message_id=event.message_id,
        sender_email=event.sender_email,
        receiver_email=event.receiver_email,
        read=False,
        receiver_account_id=event.receiver_account_id,
    )
    request.timestamp.FromDatetime(event.timestamp)
    return request, event.message_id
