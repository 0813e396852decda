"""FrontendService's hub: the live subscriptions of this process, each a bounded queue of
notifications for one stream, and the stream limits (per process, account and client host)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from services.common.domain import DomainError, Principal, RateLimited, Unavailable
from services.frontend.errors import StreamReplaced
from services.frontend.metrics import live_pushed, stream_ended_slow
from services.frontend.settings import (
    MAX_STREAMS,
    MAX_STREAMS_PER_CLIENT,
    MAX_STREAMS_PER_USER,
    Settings,
)
from services.notification.models import Notification

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
"""Live notifications waiting for one slow stream; one more ends that stream (UNAVAILABLE)."""
SEEN_LIMIT = 10_000
"""Ids one stream remembers for dedupe: far more than a relay redelivers, yet bounded memory."""
RETRY_AFTER_SECONDS = 5


class Subscription:
    """One live stream of one user: its bounded queue and the ids it has already carried."""

    def __init__(self, email: str, queue_size: int, seen_limit: int, client: str = "") -> None:
        self.email = email
        self.client = client
        self.last_active = time.monotonic()
        """When it was opened or last took a notification: the oldest is evicted first."""
        self._queue: deque[Notification] = deque()
        self._queue_size = queue_size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_limit = seen_limit
        self._wake = asyncio.Event()
        self._error: DomainError | None = None
        # Who opened the stream: only notifications of this account are sent on it, and it
        # ends when the token it was opened with expires or is revoked.
        self.principal: Principal | None = None

    @property
    def account_id(self) -> str:
        return self.principal.account_id if self.principal is not None else ""

    @property
    def closed(self) -> bool:
        """Whether the stream was ended (overflow or shutdown)."""
        return self._error is not None

    def claim(self, notification_id: str) -> bool:
        """Record that this stream carries ``notification_id``; False if it already did."""
        if notification_id in self._seen:
            return False
        self._seen[notification_id] = None
        if len(self._seen) > self._seen_limit:
            self._seen.popitem(last=False)
        return True

    def offer(self, notification: Notification) -> bool:
        """Queue a live notification; False when already carried, ended, or overflowing."""
        if self._error is not None or notification.id in self._seen:
            return False
        if len(self._queue) >= self._queue_size:
            logger.warning("stream of %s fell %d behind; ending it", self.email, self._queue_size)
            stream_ended_slow()
            self.fail(
                Unavailable(
                    "this stream fell too far behind; reconnect to receive the unread "
                    "notifications again"
                )
            )
            return False
        self.claim(notification.id)
        self.last_active = time.monotonic()
        self._queue.append(notification)
        self._wake.set()
        return True

    def fail(self, error: DomainError) -> None:
        """End the stream with ``error``; what was still queued is dropped (it stays stored)."""
        if self._error is None:
            self._error = error
            self._queue.clear()
            self._wake.set()

    async def next(self) -> Notification:
        """The next live notification, waiting for one; raises the error that ended the stream."""
        while True:
            if self._error is not None:
                raise self._error
            if self._queue:
                return live_pushed(self._queue.popleft())
            self._wake.clear()
            await self._wake.wait()


class Hub:
    """The live subscriptions of this process, by receiver email."""

    def __init__(
        self,
        *,
        queue_size: int = QUEUE_SIZE,
        seen_limit: int = SEEN_LIMIT,
        max_streams: int = MAX_STREAMS,
        max_streams_per_user: int = MAX_STREAMS_PER_USER,
        max_streams_per_client: int = MAX_STREAMS_PER_CLIENT,
    ) -> None:
        self._queue_size = queue_size
        self._seen_limit = seen_limit
        self._max_streams = max_streams
        self._max_per_user = max_streams_per_user
        self._max_per_client = max_streams_per_client
        self._streams: dict[str, set[Subscription]] = {}
        self._by_client: dict[str, int] = {}
        self._count = 0
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Hub:
        """A hub with the stream limits of ``settings``."""
        return cls(
            max_streams=settings.max_streams,
            max_streams_per_user=settings.max_streams_per_user,
            max_streams_per_client=settings.max_streams_per_client,
        )

    def open_streams(self, email: str | None = None) -> int:
        """How many streams are registered (for one user, or in all)."""
        if email is None:
            return self._count
        return len(self._streams.get(email, ()))

    def register(self, email: str, client: str = "") -> Subscription:
        """A new subscription for ``email`` from client host ``client``, receiving from now on.

        RateLimited when the process or the client host has no room left. An account at its
        limit keeps its newest streams: the one idle longest ends (ABORTED) to make room.
        """
        if self._closed:
            raise Unavailable("FrontendService is shutting down; reconnect to resume")
        if self._by_client.get(client, 0) >= self._max_per_client:
            raise RateLimited(
                f"at most {self._max_per_client} streams may be open from one client; "
                "close one first",
                RETRY_AFTER_SECONDS,
            )
        mine = self._streams.get(email, set())
        if len(mine) >= self._max_per_user:
            oldest = min(mine, key=lambda subscription: subscription.last_active)
            oldest.fail(
                StreamReplaced(
                    f"this stream was closed because its account opened more than "
                    f"{self._max_per_user} streams and it had been idle the longest"
                )
            )
            self.unregister(oldest)
            logger.info("stream of %s replaced by a newer one (%d per account)", email, len(mine))
        elif self._count >= self._max_streams:
            raise RateLimited(
                "FrontendService has no room for more streams; retry later", RETRY_AFTER_SECONDS
            )
        subscription = Subscription(email, self._queue_size, self._seen_limit, client)
        self._streams.setdefault(email, set()).add(subscription)
        self._by_client[client] = self._by_client.get(client, 0) + 1
        self._count += 1
        return subscription

    def unregister(self, subscription: Subscription) -> bool:
        """Forget ``subscription``; False if it was not registered (any more)."""
        mine = self._streams.get(subscription.email)
        if mine is None or subscription not in mine:
            return False
        mine.remove(subscription)
        self._count -= 1
        if not mine:
            del self._streams[subscription.email]
        left = self._by_client.get(subscription.client, 0) - 1
        if left > 0:
            self._by_client[subscription.client] = left
        else:
            self._by_client.pop(subscription.client, None)
        return True

    def publish(self, notification: Notification, receiver_account_id: str = "") -> int:
        """Queue ``notification`` on its receiver's streams (only those of
        ``receiver_account_id`` when given); how many took it."""
        delivered = 0
        for subscription in list(self._streams.get(notification.receiver_email, ())):
            mine = subscription.account_id
            if receiver_account_id and mine and mine != receiver_account_id:
                continue  # a stream of an earlier, deleted account of the same email
            if subscription.offer(notification):
                delivered += 1
            elif subscription.closed:
                self.unregister(subscription)  # overflowed: free its slot at once
        return delivered

    def interrupt(self, error: DomainError, only: Callable[[str], bool] | None = None) -> int:
        """End every open stream (of the receivers ``only`` accepts) with ``error`` (they may
        have missed a notification; their clients reconnect and replay); how many were open.
        New streams are still accepted."""
        ended = 0
        for email, subscriptions in list(self._streams.items()):
            if only is not None and not only(email):
                continue
            for subscription in list(subscriptions):
                subscription.fail(error)
                self.unregister(subscription)
                ended += 1
        return ended

    def close(self) -> None:
        """End every stream with UNAVAILABLE and refuse new ones: the server is stopping."""
        self._closed = True
        for subscriptions in self._streams.values():
            for subscription in subscriptions:
                subscription.fail(
                    Unavailable("FrontendService is shutting down; reconnect to resume")
                )
