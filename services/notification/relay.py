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

# Consumer names are hostname-pid, so a restarted process is a new consumer: what a crashed one
# had read but not acknowledged is taken over by XAUTOCLAIM once idle this long. The relay keeps
# the entries it holds from idling, so this only needs to exceed a few heartbeats.
CLAIM_IDLE_MS = 5_000
OUTBOX = OutboxConfig(
    stream=OUTBOX_STREAM,
    group="frontend-relay",
    dead_letter_stream=OUTBOX_DEAD_LETTER_STREAM,
    claim_idle_ms=CLAIM_IDLE_MS,
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
    """The relay's handlers: ReceiveNotification per outbox entry, ReceiveNotifications per batch.

    UNAVAILABLE, DEADLINE_EXCEEDED and the other transient codes are retried until they succeed;
    INVALID_ARGUMENT or an undecodable entry is dead-lettered at once; any other status counts
    toward the relay's ``max_attempts``. Pushing the same notification twice is harmless:
    FrontendService shows each id once per stream. Against a FrontendService without
    ReceiveNotifications (UNIMPLEMENTED), batches fall back to one ReceiveNotification per entry.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float = PUSH_TIMEOUT_SECONDS) -> None:
        self._stub = frontend_pb2_grpc.FrontendServiceStub(channel)
        self._timeout = timeout
        self._batches = True  # the peer implements ReceiveNotifications

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        request, notification_id = _request(entry_id, fields)
        try:
            reply = await self._stub.ReceiveNotification(
                request, timeout=self._timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            refused = f"FrontendService refused notification {notification_id}"
            raise delivery_error(exc, permanent=_PERMANENT, refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"FrontendService unreachable: {exc}") from exc
        logger.debug(
            "notification %s pushed to FrontendService (%d live streams)",
            notification_id,
            reply.delivered_to,
        )

    async def deliver_batch(
        self, entries: list[tuple[str, dict[str, str]]]
    ) -> list[PermanentDeliveryError | None]:
        """One ReceiveNotifications for ``entries`` (consecutive pushes for one receiver)."""
        outcomes: list[PermanentDeliveryError | None] = [None] * len(entries)
        sent: list[tuple[int, str]] = []  # (index in entries, notification id)
        batch = frontend_pb2.ReceiveNotificationsRequest()
        for index, (entry_id, fields) in enumerate(entries):
            try:
                request, notification_id = _request(entry_id, fields)
            except PermanentDeliveryError as exc:
                outcomes[index] = exc
                continue
            batch.items.append(request)
            sent.append((index, notification_id))
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
            reply = await self._stub.ReceiveNotifications(
                batch, timeout=self._timeout + 0.02 * len(sent), wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                logger.warning("FrontendService lacks ReceiveNotifications: one call per push")
                self._batches = False
                return await self.deliver_batch(entries)
            refused = f"FrontendService refused a batch of {len(sent)} notifications"
            raise delivery_error(exc, permanent=frozenset(), refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"FrontendService unreachable: {exc}") from exc
        if len(reply.results) != len(sent):
            raise RuntimeError(f"{len(reply.results)} results for {len(sent)} items")
        for (index, notification_id), result in zip(sent, reply.results, strict=True):
            if result.invalid_argument:
                outcomes[index] = PermanentDeliveryError(
                    f"FrontendService refused notification {notification_id}: "
                    f"INVALID_ARGUMENT: {result.invalid_argument}"
                )
        logger.debug("%d notifications pushed in one batch", len(sent))
        return outcomes


def _request(
    entry_id: str, fields: dict[str, str]
) -> tuple[frontend_pb2.ReceiveNotificationRequest, str]:
    try:
        notification = decode_event(fields)
    except ValueError as exc:
        raise PermanentDeliveryError(f"malformed outbox entry {entry_id}: {exc}") from exc
    request = frontend_pb2.ReceiveNotificationRequest(
        notification=notification_to_proto(notification),
        receiver_account_id=fields.get("receiver_account_id", ""),
    )
    return request, notification.id
