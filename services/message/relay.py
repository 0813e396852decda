"""Delivers the `outbox:notifications` stream (on a Cluster: the bucket streams
`m:outbox:{t}`, one relay per bucket) to NotificationService, at least once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

import grpc
import grpc.aio
from missive.notification.v1 import notification_pb2, notification_pb2_grpc
from redis.exceptions import RedisError

from services.common.buckets import bucket_outbox_configs
from services.common.delivery import (
    OutboxConfig,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.common.metrics import HOP_NOTIFICATION
from services.common.metrics.mounting import observe_timestamp
from services.common.receivers import RpcReceiver, receiver_lane
from services.common.timestamps import set_proto_timestamp
from services.message import cluster_keys
from services.message.keys import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM
from services.message.records import decode_event

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
CLUSTER_OUTBOXES: Final = bucket_outbox_configs(
    OUTBOX, (cluster_keys.outbox_stream(bucket) for bucket in range(cluster_keys.BUCKETS))
)
"""The cluster layout's outbox: one stream per bucket (services.message.cluster_keys), each
with its dead-letter stream in its slot, all read by the same consumer group."""


__all__ = [
    "CLUSTER_OUTBOXES",
    "OUTBOX",
    "NotifyReceiver",
    "RepairingNotifyReceiver",
    "lane_key",
]

lane_key = receiver_lane


class NotifyReceiver(RpcReceiver[notification_pb2.CreateNotificationRequest]):
    """The relay's handlers: CreateNotification per outbox entry, CreateNotifications per batch.

    Transient codes are retried until they succeed; INVALID_ARGUMENT or an undecodable entry is
    dead-lettered at once; any other status counts toward the relay's ``max_attempts``.
    Redelivery is harmless: both RPCs are idempotent per message_id.
    """

    peer = "NotificationService"
    item = "message"

    def __init__(self, channel: grpc.aio.Channel, timeout: float = NOTIFY_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout)
        self._stub = notification_pb2_grpc.NotificationServiceStub(channel)

    def request(
        self, entry_id: str, fields: dict[str, str]
    ) -> tuple[notification_pb2.CreateNotificationRequest, str]:
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
            preview=event.preview,
            sender_name=event.sender_name,
        )
        set_proto_timestamp(request.timestamp, event.timestamp)
        return request, str(event.message_id)

    async def send_one(
        self, request: notification_pb2.CreateNotificationRequest, deadline: float
    ) -> None:
        await self._stub.CreateNotification(request, timeout=deadline, wait_for_ready=True)
        observe_timestamp(HOP_NOTIFICATION, request.timestamp)  # since SendMessage

    async def send_batch(
        self, requests: list[notification_pb2.CreateNotificationRequest], deadline: float
    ) -> Sequence[str]:
        reply = await self._stub.CreateNotifications(
            notification_pb2.CreateNotificationsRequest(items=requests),
            timeout=deadline,
            wait_for_ready=True,
        )
        refusals = [result.invalid_argument for result in reply.results]
        for request, refusal in zip(requests, refusals, strict=False):
            if not refusal:
                observe_timestamp(HOP_NOTIFICATION, request.timestamp)
        return refusals


class IndexRepair(Protocol):
    """Writes a stored message's index entries again from its event (ClusterMessageStore)."""

    async def repair(self, fields: Mapping[str, str]) -> None: ...


class RepairingNotifyReceiver(NotifyReceiver):
    """NotifyReceiver for the cluster layout: before notifying, each event's message goes into
    both users' indexes again (idempotent), so a send that stopped after storing its message
    and before indexing it is completed here. A Redis failure of that step is transient."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        store: IndexRepair,
        timeout: float = NOTIFY_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(channel, timeout)
        self._store = store

    async def _repair(self, events: Sequence[Mapping[str, str]]) -> None:
        try:
            await asyncio.gather(*(self._store.repair(fields) for fields in events))
        except RedisError as exc:
            raise TransientDeliveryError(f"could not index the messages: {exc}") from exc

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        await self._repair([fields])
        await super().__call__(entry_id, fields)

    async def deliver_batch(
        self, entries: list[tuple[str, dict[str, str]]]
    ) -> list[PermanentDeliveryError | None]:
        await self._repair([fields for _, fields in entries])
        return await super().deliver_batch(entries)
