"""The relays' handlers over gRPC: one outbox event → one call, several → one batch call.

Both hops (MessageService → NotificationService, NotificationService → FrontendService) deliver
the same way; a hop only says how to build its request from an outbox entry and which RPCs carry
one request and a batch of them (:class:`RpcReceiver`). Outcomes are classified by
:func:`services.common.rpc_outcome.delivery_error`: transient codes are retried by the relay
until they succeed, a permanent code or an undecodable entry is dead-lettered at once, per item
in a batch. A peer without the batch RPC (UNIMPLEMENTED, e.g. during a rolling upgrade) gets one
call per entry from then on.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

import grpc
import grpc.aio

from services.common.delivery import PermanentDeliveryError, TransientDeliveryError
from services.common.rpc_outcome import delivery_error

__all__ = ["RpcReceiver", "receiver_lane"]

logger = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")

# Each item of a batch gets this much more time than a single call's deadline.
_PER_ITEM_SECONDS = 0.02


def receiver_lane(fields: dict[str, str]) -> str:
    """Events for one receiver are delivered in order; different receivers independently."""
    return fields.get("receiver_email", "")


class RpcReceiver(ABC, Generic[RequestT]):
    """A relay handler (``__call__``) and batch handler (:meth:`deliver_batch`) for one peer.

    Redelivery must be harmless: both RPCs are idempotent per business id in the peer.
    """

    peer: ClassVar[str]  # e.g. "NotificationService", for messages and logs
    item: ClassVar[str]  # what one event is to the peer, e.g. "message"
    permanent: ClassVar[frozenset[grpc.StatusCode]] = frozenset({grpc.StatusCode.INVALID_ARGUMENT})

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._batches = True  # until the peer answers the batch RPC with UNIMPLEMENTED

    @abstractmethod
    def request(self, entry_id: str, fields: dict[str, str]) -> tuple[RequestT, str]:
        """The request for one outbox entry and its business id; PermanentDeliveryError if bad."""

    @abstractmethod
    async def send_one(self, request: RequestT, deadline: float) -> None:
        """The single RPC (wait_for_ready); raises AioRpcError or OSError."""

    @abstractmethod
    async def send_batch(self, requests: list[RequestT], deadline: float) -> Sequence[str]:
        """The batch RPC: per item, why the peer refused it as invalid, or "" if it took it."""

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        request, key = self.request(entry_id, fields)
        try:
            await self.send_one(request, self._timeout)
        except grpc.aio.AioRpcError as exc:
            refused = f"{self.peer} refused {self.item} {key}"
            raise delivery_error(exc, permanent=self.permanent, refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"{self.peer} unreachable: {exc}") from exc
        logger.debug("%s %s delivered to %s", self.item, key, self.peer)

    async def deliver_batch(
        self, entries: list[tuple[str, dict[str, str]]]
    ) -> list[PermanentDeliveryError | None]:
        """One batch call for ``entries`` (the next events of one or several receivers).

        Returns, per entry, the permanent failure to dead-letter it with, or None if delivered.
        A transient failure of the call raises, and the relay retries the whole batch.
        """
        outcomes: list[PermanentDeliveryError | None] = [None] * len(entries)
        sent: list[tuple[int, str]] = []  # (index in entries, business id)
        requests: list[RequestT] = []
        for index, (entry_id, fields) in enumerate(entries):
            try:
                request, key = self.request(entry_id, fields)
            except PermanentDeliveryError as exc:
                outcomes[index] = exc
                continue
            requests.append(request)
            sent.append((index, key))
        if not sent:
            return outcomes
        if not self._batches:
            return await self._one_by_one(entries, [index for index, _ in sent], outcomes)
        refusals = await self._send_batch(requests)
        if refusals is None:  # the peer has no batch call
            return await self.deliver_batch(entries)
        if len(refusals) != len(sent):
            raise RuntimeError(f"{len(refusals)} results for {len(sent)} items")
        for (index, key), refusal in zip(sent, refusals, strict=True):
            if refusal:
                outcomes[index] = PermanentDeliveryError(
                    f"{self.peer} refused {self.item} {key}: INVALID_ARGUMENT: {refusal}"
                )
        logger.debug("%d %ss delivered to %s in one batch", len(sent), self.item, self.peer)
        return outcomes

    async def _one_by_one(
        self,
        entries: list[tuple[str, dict[str, str]]],
        indexes: list[int],
        outcomes: list[PermanentDeliveryError | None],
    ) -> list[PermanentDeliveryError | None]:
        """Deliver ``entries[i]`` for each of ``indexes`` with the single call, in order."""
        for index in indexes:
            try:
                await self(*entries[index])
            except PermanentDeliveryError as exc:
                outcomes[index] = exc
        return outcomes

    async def _send_batch(self, requests: list[RequestT]) -> Sequence[str] | None:
        """The batch call's refusals; None if the peer has no batch call (UNIMPLEMENTED)."""
        try:
            deadline = self._timeout + _PER_ITEM_SECONDS * len(requests)
            return await self.send_batch(requests, deadline)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                logger.warning("%s has no batch call: one call per %s", self.peer, self.item)
                self._batches = False
                return None
            refused = f"{self.peer} refused a batch of {len(requests)} {self.item}s"
            raise delivery_error(exc, permanent=frozenset(), refused=refused) from exc
        except OSError as exc:
            raise TransientDeliveryError(f"{self.peer} unreachable: {exc}") from exc
