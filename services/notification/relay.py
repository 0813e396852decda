"""Pushes new notifications from the `outbox:frontend` stream to FrontendService, at least once
(`n:outbox:frontend:{t}`, one stream and relay per receiver bucket, in the cluster layout)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc

from services.common.buckets import bucket_outbox_configs
from services.common.delivery import OutboxConfig, PermanentDeliveryError
from services.common.metrics import HOP_FRONTEND
from services.common.metrics.mounting import observe_timestamp
from services.common.receivers import RpcReceiver, receiver_lane
from services.notification.keys import (
    BUCKETS,
    OUTBOX_DEAD_LETTER_STREAM,
    OUTBOX_STREAM,
    cluster_outbox_stream,
)
from services.notification.records import decode_event
from services.notification.wire import notification_to_proto

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
CLUSTER_OUTBOXES = bucket_outbox_configs(
    OUTBOX, (cluster_outbox_stream(index) for index in range(BUCKETS))
)
"""The cluster layout's outbox: one stream per receiver bucket, each with its relay (one
consumer group name for all); a receiver's notifications are all in its bucket, so still pushed
in order."""
PUSH_TIMEOUT_SECONDS = 2.0


__all__ = ["CLUSTER_OUTBOXES", "OUTBOX", "FrontendPush", "lane_key"]

lane_key = receiver_lane


class FrontendPush(RpcReceiver[frontend_pb2.ReceiveNotificationRequest]):
    """The relay's handlers: ReceiveNotification per outbox entry, ReceiveNotifications per batch.

    Transient codes are retried until they succeed; INVALID_ARGUMENT or an undecodable entry is
    dead-lettered at once; any other status counts toward the relay's ``max_attempts``. Pushing
    the same notification twice is harmless: FrontendService shows each id once per stream.
    """

    peer = "FrontendService"
    item = "notification"

    def __init__(self, channel: grpc.aio.Channel, timeout: float = PUSH_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout)
        self._stub = frontend_pb2_grpc.FrontendServiceStub(channel)

    def request(
        self, entry_id: str, fields: dict[str, str]
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

    async def send_one(
        self, request: frontend_pb2.ReceiveNotificationRequest, deadline: float
    ) -> None:
        await self._stub.ReceiveNotification(request, timeout=deadline, wait_for_ready=True)
        # Since SendMessage: a notification carries its message's timestamp.
        observe_timestamp(HOP_FRONTEND, request.notification.timestamp)

    async def send_batch(
        self, requests: list[frontend_pb2.ReceiveNotificationRequest], deadline: float
    ) -> Sequence[str]:
        reply = await self._stub.ReceiveNotifications(
            frontend_pb2.ReceiveNotificationsRequest(items=requests),
            timeout=deadline,
            wait_for_ready=True,
        )
        refusals = [result.invalid_argument for result in reply.results]
        for request, refusal in zip(requests, refusals, strict=False):
            if not refusal:
                observe_timestamp(HOP_FRONTEND, request.notification.timestamp)
        return refusals
