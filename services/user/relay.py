"""Erasing a deleted account's data in the other services: the `outbox:accounts` relay
(`u:outbox:accounts:{t}`, one stream and relay per bucket, in the cluster layout).

Deleting an account writes, in the same script as the deletion, an event {email, account_id}
to the `outbox:accounts` stream. This relay (the shared delivery component) hands each event to
MessageService and NotificationService `EraseAccount`, at least once. Events of one email are
delivered in order (one lane per email), different emails independently. Transient failures
(UNAVAILABLE, DEADLINE_EXCEEDED, ...: see services.common.rpc_outcome) are retried until they
succeed; INVALID_ARGUMENT or FAILED_PRECONDITION (the account is still registered) dead-letter
the event at once. Both calls are idempotent, so a redelivery is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
import grpc.aio
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from services.common.buckets import bucket_outbox_configs
from services.common.delivery import (
    OutboxConfig,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.common.rpc_outcome import delivery_error
from services.user.keys import (
    ACCOUNTS_DEAD_LETTERS,
    ACCOUNTS_OUTBOX,
    BUCKETS,
    cluster_accounts_outbox,
)

logger = logging.getLogger(__name__)

R = TypeVar("R")

ERASE_TIMEOUT_SECONDS: Final = 10.0
OUTBOX: Final = OutboxConfig(
    stream=ACCOUNTS_OUTBOX,
    group="erasure-relay",
    dead_letter_stream=ACCOUNTS_DEAD_LETTERS,
    claim_idle_ms=30_000,  # well above two erasure deadlines
)
CLUSTER_OUTBOXES: Final = bucket_outbox_configs(
    OUTBOX, (cluster_accounts_outbox(index) for index in range(BUCKETS))
)
"""The cluster layout's outbox: one stream per bucket, each with its relay (one consumer group
name for all); the events of one email are all in its bucket, so still delivered in order."""
# The services refused the event for good (malformed, or the account still exists).
_PERMANENT: Final = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
)


def lane_key(fields: dict[str, str]) -> str:
    """Erasures of one email are delivered in order; different emails independently."""
    return fields.get("email", "")


class EraseAccount:
    """The relay's handler: EraseAccount on MessageService, then on NotificationService."""

    def __init__(
        self,
        message_channel: grpc.aio.Channel,
        notification_channel: grpc.aio.Channel,
        timeout: float = ERASE_TIMEOUT_SECONDS,
    ) -> None:
        self._messages = message_pb2_grpc.MessageServiceStub(message_channel)
        self._notifications = notification_pb2_grpc.NotificationServiceStub(notification_channel)
        self._timeout = timeout

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        email = fields.get("email", "")
        account_id = fields.get("account_id", "")
        if not email:
            raise PermanentDeliveryError(f"outbox entry {entry_id} names no email")
        await self._erase(
            "MessageService",
            self._messages.EraseAccount,
            message_pb2.EraseAccountRequest(email=email, account_id=account_id),
        )
        reply = await self._erase(
            "NotificationService",
            self._notifications.EraseAccount,
            notification_pb2.EraseAccountRequest(email=email, account_id=account_id),
        )
        logger.info(
            "erased the data of deleted account %s of %s (%d notifications)",
            account_id,
            email,
            reply.erased,
        )

    async def _erase(self, service: str, call: Callable[..., Awaitable[R]], request: Any) -> R:
        """One EraseAccount call; a refusal is permanent or transient as its status says."""
        try:
            return await call(request, timeout=self._timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            refused = f"{service} refused the erasure of {request.email} ({request.account_id})"
            raise delivery_error(exc, permanent=_PERMANENT, refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"{service} unreachable: {exc}") from exc
