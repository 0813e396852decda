"""The fan-out bus on a standalone Valkey (``PUBLISH``/``SUBSCRIBE``), and its hooks into the hub.

:class:`Bus` is this replica's side of the fan-out; the guarantees it keeps (no silent gap,
heartbeats) are described in :mod:`services.frontend.fanout`. It is also the base of
:class:`~services.frontend.fanout.cluster.ShardedBus`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException, RedisError

from services.common.domain import InvalidArgument, Unavailable
from services.frontend.fanout import protocol
from services.frontend.fanout.protocol import (
    _BEAT,
    BUS_DOWN,
    CHANNEL_PREFIX,
    INTERRUPTED,
    PUBLISH_FAILED,
    SHARDS,
    _decoded,
    _encoded,
    _shard,
)
from services.notification.models import Notification

__all__ = ["Bus", "Interrupt", "Show"]

logger = logging.getLogger(__name__)

Show = Callable[[Notification, str], int]
"""Shows a notification on this replica's streams of its receiver (and account); how many."""


class Interrupt(Protocol):
    """Ends every live stream of this replica (of the receivers ``only`` accepts) with the
    error; how many."""

    def __call__(self, error: Unavailable, only: Callable[[str], bool] | None = None) -> int: ...


class Bus:
    """This replica's side of the fan-out: publishes pushes, shows the others' pushes."""

    _SUBSCRIBED = "subscribe"
    _MESSAGE = "message"
    _UNSUBSCRIBED = "unsubscribe"

    def __init__(self, redis: Redis | RedisCluster, *, shards: int = SHARDS) -> None:
        self._redis = redis
        self._shards = shards
        self._channels = self._channel_names(shards)
        self.origin = os.urandom(8).hex()
        self._show: Show | None = None
        self._interrupt: Interrupt | None = None
        self._confirmed: set[str] = set()
        self._up = asyncio.Event()
        self._reported = False
        """Whether the current outage was logged at WARNING (later attempts: DEBUG)."""
        self._beat_sent = 0.0
        self._beat_unanswered = 0.0
        """When the oldest heartbeat not read back yet was sent (0: none)."""
        self.losses = 0
        """How many times the subscription was lost (and the streams ended)."""

    @staticmethod
    def _channel_names(shards: int) -> list[str]:
        return [f"{CHANNEL_PREFIX}{{{n}}}" for n in range(shards)]

    @property
    def channels(self) -> list[str]:
        """The shard channels, shard by shard."""
        return list(self._channels)

    def channel(self, email: str) -> str:
        """The shard channel of a receiver."""
        return self._channels[_shard(email, self._shards)]

    def attach(self, show: Show, interrupt: Interrupt) -> None:
        """Where the other replicas' pushes go, and how this replica's streams are ended."""
        self._show = show
        self._interrupt = interrupt

    @property
    def up(self) -> bool:
        """Whether every shard channel is subscribed: nothing published now can be missed."""
        return self._up.is_set()

    async def ready(self) -> bool:
        """Readiness (health follows it)."""
        return self.up

    def require_up(self, email: str | None = None) -> None:
        """Unavailable while this replica could miss a live notification (for ``email``)."""
        if not self.up:
            raise Unavailable(BUS_DOWN)

    async def wait_up(self, within: float) -> bool:
        """Wait (at most ``within`` s) until the subscription is complete."""
        try:
            await asyncio.wait_for(self._up.wait(), within)
        except TimeoutError:
            return False
        return True

    async def publish(self, items: Sequence[tuple[Notification, str]]) -> None:
        """Hand ``(notification, receiver_account_id)`` pairs to the other replicas, in one
        round trip; Unavailable when Valkey did not take every one (the push is then retried)."""
        if not items:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for notification, account_id in items:
                    self._publish_on(
                        pipe,
                        self.channel(notification.receiver_email),
                        _encoded(self.origin, notification, account_id),
                    )
                await pipe.execute()
        except (RedisError, RedisClusterException, OSError) as exc:
            logger.warning("cannot publish %d live notification(s): %s", len(items), exc)
            raise Unavailable(PUBLISH_FAILED) from exc

    async def run(self) -> None:
        """Subscribe, show what the other replicas publish, and start over after a loss; until
        cancelled."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await self._follow(pubsub)
            except (RedisError, RedisClusterException, OSError) as exc:
                self._lost(f"{type(exc).__name__}: {exc}")
            finally:
                self._down()
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, RedisClusterException, OSError):
                    pass
            await asyncio.sleep(protocol.RETRY_SECONDS)

    async def _follow(self, pubsub: Any) -> None:
        self._confirmed.clear()
        self._beat_sent = self._beat_unanswered = 0.0
        await pubsub.subscribe(*self._channels)
        while True:
            await self._heartbeat()
            message = await pubsub.get_message(timeout=protocol.READ_TIMEOUT_SECONDS)
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == self._SUBSCRIBED:
            self._subscribed(message["channel"])
        elif kind == self._MESSAGE:
            self._received(message["data"])
        elif kind == self._UNSUBSCRIBED:  # not asked for: treat it as a loss
            self._lost("unsubscribed by the server")
            self._confirmed.discard(message["channel"])

    def _publish_on(self, pipe: Any, channel: str, payload: str) -> None:
        pipe.publish(channel, payload)

    async def _heartbeat(self) -> None:
        """Publish a heartbeat every HEARTBEAT_SECONDS; ConnectionError when the last one did
        not come back in time (the subscription is then started over)."""
        if not self.up:
            return
        now = time.monotonic()
        timeout = protocol.HEARTBEAT_TIMEOUT_SECONDS
        if self._beat_unanswered and now - self._beat_unanswered > timeout:
            raise ConnectionError(f"no heartbeat came back within {timeout:g}s")
        if now - self._beat_sent >= protocol.HEARTBEAT_SECONDS:
            self._beat_sent = now
            if not self._beat_unanswered:
                self._beat_unanswered = now
            await self._redis.publish(self._channels[0], f"{self.origin} {_BEAT}")

    def _subscribed(self, channel: str) -> None:
        if self.up:
            # A confirmation while complete: the client library reconnected and subscribed
            # again on its own. Whatever was published in between is lost for this replica.
            self._lost("the subscription was renewed after a reconnect")
            self._confirmed.clear()
        self._confirmed.add(channel)
        if len(self._confirmed) == len(self._channels):
            self._up.set()
            self._reported = False
            logger.info("live fan-out: subscribed to %d shard channels", len(self._channels))

    def _received(self, payload: str) -> None:
        if payload.endswith(f" {_BEAT}"):
            if payload.partition(" ")[0] == self.origin:
                self._beat_unanswered = 0.0
            return
        if payload.partition(" ")[0] == self.origin or self._show is None:
            return  # our own (not even decoded): already shown on our streams when pushed to us
        try:
            _, notification, account_id = _decoded(payload)
        except (ValueError, InvalidArgument) as exc:
            logger.warning("skipped a malformed live notification on the bus: %s", exc)
            return
        self._show(notification, account_id)

    def _down(self) -> None:
        self._up.clear()
        self._confirmed.clear()

    def _lost(self, why: str) -> None:
        was_up = self.up
        self._down()
        ended = self._interrupt(Unavailable(INTERRUPTED)) if self._interrupt is not None else 0
        self.losses += 1
        if was_up or ended or not self._reported:
            logger.warning("live fan-out interrupted (%s); ended %d live stream(s)", why, ended)
            self._reported = True
        else:  # still down (Valkey unreachable): once per attempt would flood the log
            logger.debug("live fan-out still unavailable (%s)", why)
