"""Live notifications across FrontendService replicas, through the shared Valkey's pub/sub.

NotificationService's relay pushes each notification to *one* FrontendService replica; the
receiver's live streams may sit on any of them. The replica that receives a push

1. shows it on its own live streams at once (no round trip for the common, single-replica
   case), then
2. publishes it, before answering the push, on the receiver's shard channel
   ``missive:frontend:live:{<shard>}`` (``shard`` = CRC-32 of the email modulo
   :data:`SHARDS`), tagged with its own origin id.

Every replica subscribes to every shard channel when it starts (its health reports SERVING,
and it accepts streams, only once Valkey confirmed all of them), shows what it reads on its
own streams of that receiver (and account), and skips what it published itself. Each stream
still carries an id at most once (its own dedupe), so a relay's redelivery, or one replica's
push reaching another replica's stream both directly and through the bus, is never shown
twice.

**No silent gap.** Redis pub/sub is fire and forget: a message published while a subscriber
is disconnected is lost for it. So when the subscription is lost (Valkey restarted or
unreachable, the connection dropped or was closed for an overflowing output buffer, a
reconnect made by the client library) every live stream of this replica is ended with
``UNAVAILABLE`` (the contract's "reconnect to resume"): its client reconnects and the replay
(:class:`services.frontend.peers.NotificationReplay`) shows the unread notifications it may
have missed. Until every shard channel is confirmed again, new streams are refused with
``UNAVAILABLE`` and health reports NOT_SERVING. A push whose publish fails is refused with
``UNAVAILABLE`` (the relay retries it; the streams that already showed it skip it then).
Each replica also publishes a heartbeat every 2 s and must read it back within 6 s: a
connection that died silently (no reset) counts as lost too.

On a standalone Valkey, :class:`Bus` uses ``PUBLISH`` and ``SUBSCRIBE``; pub/sub channels
belong to the server, not to a logical database.

**Valkey Cluster** (:class:`ShardedBus`, chosen by ``start.cluster``): sharded pub/sub,
``SPUBLISH`` and ``SSUBSCRIBE``, on the channels ``f:live:{<tag>}`` of FrontendService's ``f:``
namespace. A shard channel lives on the master that owns its slot, and a message published on
it goes to that master's subscribers only (classic ``PUBLISH`` on a Cluster is broadcast to
every node, which does not scale). Each shard's hash tag is picked so that the 16 channels fall
in the 16 sixteenths of the slot space (:func:`cluster_tag`): spread evenly over the masters of
any cluster that splits the slots into equal contiguous ranges (as ``valkey-cli --cluster
create`` and the embedded cluster do). The channels each master owned at start are followed on
their own subscription (redis-py's ``ClusterPubSub``), read by one task per master, each
publishing its own heartbeat on one of its master's channels and reading it back. The
guarantees hold shard by shard: a dropped connection to a master, a re-subscription made by
the client library, a ``SUNSUBSCRIBE`` sent by the server (its slot moved: resharding or
failover), a subscription the library moved to another node on its own, or a missing
heartbeat counts as a lost subscription of that master's channels: the live streams of their
receivers end with ``UNAVAILABLE``, new streams of those receivers are refused, and that
subscription starts over (on the slot map read again); the streams of the other shards go on.
Health is SERVING while any shard channel is subscribed. A push whose ``SPUBLISH`` fails (its
master is down) is refused with ``UNAVAILABLE`` and retried by the relay.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from missive.frontend.v1 import frontend_pb2
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError, RedisClusterException, RedisError

from services.common.domain import InvalidArgument, Unavailable
from services.notification.models import Notification
from services.notification.wire import notification_from_proto, notification_to_proto

__all__ = [
    "CLUSTER_CHANNEL_PREFIX",
    "FANOUT_DB",
    "SHARDS",
    "Bus",
    "ShardedBus",
    "channel_of",
    "cluster_channel_of",
    "cluster_tag",
]

logger = logging.getLogger(__name__)

SHARDS: Final = 16
FANOUT_DB: Final = 0
"""The bus connection's logical database: pub/sub channels belong to the server, not to a
database, and FrontendService keeps no keys, so any database works."""
"""Shard channels; every replica subscribes to all of them."""
CHANNEL_PREFIX: Final = "missive:frontend:live:"
CLUSTER_CHANNEL_PREFIX: Final = "f:live:"
"""Cluster mode: FrontendService's ``f:`` namespace; the shard's hash tag follows."""
RETRY_SECONDS: Final = 0.5
"""Pause between attempts to subscribe again after the subscription was lost."""
READ_TIMEOUT_SECONDS: Final = 1.0
HEARTBEAT_SECONDS: Final = 2.0
"""Each replica publishes a heartbeat this often and must read it back (a connection that
died without a reset, which TCP would notice only after minutes, counts as lost)..."""
HEARTBEAT_TIMEOUT_SECONDS: Final = 6.0
"""...within this long; otherwise the subscription is lost and the streams end."""
_BEAT = "beat"
INTERRUPTED = (
    "live notifications to this stream were interrupted; reconnect to receive the unread "
    "notifications again"
)
BUS_DOWN = "FrontendService cannot receive live notifications right now; reconnect to resume"
PUBLISH_FAILED = "FrontendService could not pass the notification to its other replicas; retry"

Show = Callable[[Notification, str], int]
"""Shows a notification on this replica's streams of its receiver (and account); how many."""


class Interrupt(Protocol):
    """Ends every live stream of this replica (of the receivers ``only`` accepts) with the
    error; how many."""

    def __call__(self, error: Unavailable, only: Callable[[str], bool] | None = None) -> int: ...


def channel_of(email: str, shards: int = SHARDS) -> str:
    """The shard channel of a receiver (hash tag: one slot per shard on a Cluster)."""
    return f"{CHANNEL_PREFIX}{{{_shard(email, shards)}}}"


def cluster_tag(shard: int, shards: int = SHARDS) -> str:
    """The hash tag of a shard channel on a Cluster: ``<shard>.<k>`` with the smallest ``k``
    whose slot lies in the shard-th of ``shards`` equal parts of the slot space, so that the
    channels spread evenly over masters that own equal contiguous slot ranges."""
    k = 0
    while key_slot(f"{shard}.{k}".encode()) * shards // REDIS_CLUSTER_HASH_SLOTS != shard:
        k += 1
    return f"{shard}.{k}"


def cluster_channel_of(email: str, shards: int = SHARDS) -> str:
    """The shard channel of a receiver on a Cluster (same shard as :func:`channel_of`)."""
    return f"{CLUSTER_CHANNEL_PREFIX}{{{cluster_tag(_shard(email, shards), shards)}}}"


def _shard(email: str, shards: int) -> int:
    return zlib.crc32(email.encode()) % shards


def _encoded(origin: str, notification: Notification, receiver_account_id: str) -> str:
    request = frontend_pb2.ReceiveNotificationRequest(
        notification=notification_to_proto(notification),
        receiver_account_id=receiver_account_id,
    )
    return f"{origin} {base64.b64encode(request.SerializeToString()).decode()}"


def _decoded(payload: str) -> tuple[str, Notification, str]:
    origin, _, body = payload.partition(" ")
    request = frontend_pb2.ReceiveNotificationRequest.FromString(base64.b64decode(body))
    return origin, notification_from_proto(request.notification), request.receiver_account_id


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
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self, pubsub: Any) -> None:
        self._confirmed.clear()
        self._beat_sent = self._beat_unanswered = 0.0
        await pubsub.subscribe(*self._channels)
        while True:
            await self._heartbeat()
            message = await pubsub.get_message(timeout=READ_TIMEOUT_SECONDS)
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
        if self._beat_unanswered and now - self._beat_unanswered > HEARTBEAT_TIMEOUT_SECONDS:
            raise ConnectionError(f"no heartbeat came back within {HEARTBEAT_TIMEOUT_SECONDS:g}s")
        if now - self._beat_sent >= HEARTBEAT_SECONDS:
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


class _Master:
    """One master's side of a cluster subscription: its reader's heartbeat state."""

    def __init__(self, name: str, beat_channel: str) -> None:
        self.name = name
        self.beat_channel = beat_channel
        self.beat_sent = 0.0
        self.beat_unanswered = 0.0


class _Group:
    """The shard channels one master owned when the bus started, followed on a subscription of
    their own: a loss there ends only the streams of those shards."""

    def __init__(self, channels: list[str]) -> None:
        self.channels = channels
        self.losses = 0
        self.reported = False
        """Whether the current outage was logged at WARNING (later attempts: DEBUG)."""


class ShardedBus(Bus):
    """The fan-out on a Valkey Cluster: ``SPUBLISH``/``SSUBSCRIBE`` on ``f:live:{<tag>}``.

    Same guarantees as :class:`Bus` (see the module docstring), shard by shard: the channels of
    each master (as the slot map stood at start) are followed on their own subscription, so a
    loss on one master ends only the streams of its shards' receivers, and only they are
    refused while it lasts. Health is SERVING while any shard channel is subscribed.
    """

    def __init__(self, redis: RedisCluster, *, shards: int = SHARDS) -> None:
        super().__init__(redis, shards=shards)
        self._cluster = redis

    @staticmethod
    def _channel_names(shards: int) -> list[str]:
        return [f"{CLUSTER_CHANNEL_PREFIX}{{{cluster_tag(n, shards)}}}" for n in range(shards)]

    def _publish_on(self, pipe: Any, channel: str, payload: str) -> None:
        pipe.spublish(channel, payload)

    async def ready(self) -> bool:
        """Serving while some shard channel is subscribed: the receivers of the others are
        refused (:meth:`require_up`) until theirs is back."""
        return bool(self._confirmed)

    def require_up(self, email: str | None = None) -> None:
        """Unavailable while this replica could miss a live notification for ``email`` (its
        shard channel is not subscribed); without an email, while any shard's could."""
        if email is None:
            super().require_up()
        elif self.channel(email) not in self._confirmed:
            raise Unavailable(BUS_DOWN)

    async def run(self) -> None:
        """Follow each master's shard channels on their own subscription, until cancelled."""
        groups = await self._groups()
        await asyncio.gather(*(self._run_group(group) for group in groups))

    async def _groups(self) -> list[_Group]:
        """The shard channels grouped by the master that owns them (retried until the cluster
        answers)."""
        reported = False
        while True:
            try:
                await self._cluster.initialize()
                owners: dict[str, list[str]] = {}
                for channel in self._channels:
                    node = self._cluster.get_node_from_key(channel)
                    if node is None:
                        raise ConnectionError(f"no master owns the slot of {channel}")
                    owners.setdefault(node.name, []).append(channel)
                return [_Group(channels) for channels in owners.values()]
            except (RedisError, RedisClusterException, OSError) as exc:
                (logger.debug if reported else logger.warning)(
                    "live fan-out cannot read the cluster's slot map (%s); retrying", exc
                )
                reported = True
            await asyncio.sleep(RETRY_SECONDS)

    async def _run_group(self, group: _Group) -> None:
        while True:
            pubsub = self._cluster.pubsub()
            try:
                await self._follow_group(pubsub, group)
            except Exception as exc:
                self._lost_group(group, f"{type(exc).__name__}: {exc}")
            finally:
                self._confirmed.difference_update(group.channels)
                self._up.clear()
                await self._close(pubsub)
            await asyncio.sleep(RETRY_SECONDS)

    @staticmethod
    async def _close(pubsub: Any) -> None:
        """Close a subscription's connections, to the end even when cancelled meanwhile (the
        replica stopping while a group starts over): then the cancellation goes on."""
        closing = asyncio.ensure_future(pubsub.aclose())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await asyncio.wait([closing], timeout=2 * READ_TIMEOUT_SECONDS)
            raise
        except (RedisError, RedisClusterException, OSError):
            pass
        finally:
            if closing.done() and not closing.cancelled():
                closing.exception()  # retrieved (a failed close is not worth a warning)

    async def _follow_group(self, pubsub: Any, group: _Group) -> None:
        if group.losses:  # where its slots live now (after a failover), not where they were
            await self._cluster.nodes_manager.initialize()
        await pubsub.ssubscribe(*group.channels)
        masters: dict[str, _Master] = {}
        for channel in group.channels:  # each master's first channel carries its heartbeats
            node = self._cluster.get_node_from_key(channel)
            if node is None:
                raise ConnectionError(f"no master owns the slot of {channel}")
            masters.setdefault(node.name, _Master(node.name, channel))
        stop = asyncio.Event()
        readers = [
            asyncio.create_task(self._read(pubsub, group, master, len(masters), stop))
            for master in masters.values()
        ]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()  # raises why it stopped
            raise ConnectionError("a shard reader stopped")
        finally:
            stop.set()
            for reader in readers:
                reader.cancel()
            # A cancellation can be lost inside the client library (a read timeout expiring at
            # the same moment): such a reader sees ``stop`` and returns after its current read.
            await asyncio.wait(readers, timeout=2 * READ_TIMEOUT_SECONDS + 1)
            for reader in readers:
                if reader.done() and not reader.cancelled():
                    reader.exception()  # retrieved: the first one was already reported

    async def _read(
        self, pubsub: Any, group: _Group, master: _Master, nodes: int, stop: asyncio.Event
    ) -> None:
        node = self._cluster.get_node(node_name=master.name)
        if node is None:
            raise ConnectionError(f"master {master.name} left the cluster")
        while not stop.is_set():
            if master.name not in pubsub.node_pubsub_mapping:
                raise ConnectionError(f"the subscription on {master.name} was dropped")
            if len(pubsub.node_pubsub_mapping) != nodes:
                raise ConnectionError("the client library moved shard channels to another node")
            await self._master_heartbeat(group, master)
            message = await pubsub.get_sharded_message(
                target_node=node, timeout=READ_TIMEOUT_SECONDS
            )
            if message is None or stop.is_set():
                continue
            self._take(group, master, message)

    def _take(self, group: _Group, master: _Master, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "smessage":
            payload = message["data"]
            if not payload.endswith(f" {_BEAT}"):
                self._received(payload)
            elif payload.partition(" ")[0] == self.origin:
                master.beat_unanswered = 0.0
        elif kind == "ssubscribe":
            self._confirm(group, message["channel"])
        elif kind == "sunsubscribe":  # not asked for: its slot moved (resharding, failover)
            raise ConnectionError("unsubscribed by the server")

    def _confirm(self, group: _Group, channel: str) -> None:
        if channel in self._confirmed:
            # Confirmed again: the client library reconnected and subscribed again on its own.
            # Whatever was published in between is lost for this replica.
            raise ConnectionError("the subscription was renewed after a reconnect")
        self._confirmed.add(channel)
        if self._confirmed.issuperset(group.channels):
            group.reported = False
            logger.info(
                "live fan-out: subscribed to %d shard channel(s) (%d of %d)",
                len(group.channels),
                len(self._confirmed),
                len(self._channels),
            )
        if len(self._confirmed) == len(self._channels):
            self._up.set()

    def _lost_group(self, group: _Group, why: str) -> None:
        lost = set(group.channels)
        was_up = self._confirmed.issuperset(lost)
        self._confirmed.difference_update(lost)
        self._up.clear()
        ended = 0
        if self._interrupt is not None:
            ended = self._interrupt(
                Unavailable(INTERRUPTED), only=lambda email: self.channel(email) in lost
            )
        self.losses += 1
        group.losses += 1
        if was_up or ended or not group.reported:
            logger.warning(
                "live fan-out interrupted on %d shard channel(s) (%s); ended %d live stream(s)",
                len(lost),
                why,
                ended,
            )
            group.reported = True
        else:  # still down (its master unreachable): once per attempt would flood the log
            logger.debug(
                "live fan-out still unavailable on %d shard channel(s) (%s)", len(lost), why
            )

    async def _master_heartbeat(self, group: _Group, master: _Master) -> None:
        """:meth:`Bus._heartbeat` for one master, on one of its channels."""
        if not self._confirmed.issuperset(group.channels):
            return
        now = time.monotonic()
        if master.beat_unanswered and now - master.beat_unanswered > HEARTBEAT_TIMEOUT_SECONDS:
            raise ConnectionError(
                f"no heartbeat came back from {master.name} within {HEARTBEAT_TIMEOUT_SECONDS:g}s"
            )
        if now - master.beat_sent >= HEARTBEAT_SECONDS:
            master.beat_sent = now
            if not master.beat_unanswered:
                master.beat_unanswered = now
            await self._cluster.spublish(master.beat_channel, f"{self.origin} {_BEAT}")
