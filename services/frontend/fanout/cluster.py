"""The fan-out bus on a Valkey Cluster: sharded pub/sub, one subscription per master's channels.

:class:`ShardedBus` (``SPUBLISH``/``SSUBSCRIBE`` on ``f:live:{<tag>}``) keeps the guarantees of
:class:`~services.frontend.fanout.bus.Bus` shard by shard, as described in
:mod:`services.frontend.fanout`; ``_Group`` and ``_Master`` hold the state of one subscription
and of one master's reader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException, RedisError

from services.common.domain import Unavailable
from services.frontend.fanout import protocol
from services.frontend.fanout.bus import Bus
from services.frontend.fanout.protocol import (
    _BEAT,
    BUS_DOWN,
    CLUSTER_CHANNEL_PREFIX,
    INTERRUPTED,
    SHARDS,
    cluster_tag,
)

__all__ = ["ShardedBus"]

logger = logging.getLogger(__name__)


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

    Same guarantees as :class:`Bus` (see :mod:`services.frontend.fanout`), shard by shard: the
    channels of each master (as the slot map stood at start) are followed on their own
    subscription, so a loss on one master ends only the streams of its shards' receivers, and
    only they are refused while it lasts. Health is SERVING while any shard channel is subscribed.
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
            await asyncio.sleep(protocol.RETRY_SECONDS)

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
            await asyncio.sleep(protocol.RETRY_SECONDS)

    @staticmethod
    async def _close(pubsub: Any) -> None:
        """Close a subscription's connections, to the end even when cancelled meanwhile (the
        replica stopping while a group starts over): then the cancellation goes on."""
        closing = asyncio.ensure_future(pubsub.aclose())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await asyncio.wait([closing], timeout=2 * protocol.READ_TIMEOUT_SECONDS)
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
            await asyncio.wait(readers, timeout=2 * protocol.READ_TIMEOUT_SECONDS + 1)
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
                target_node=node, timeout=protocol.READ_TIMEOUT_SECONDS
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
        timeout = protocol.HEARTBEAT_TIMEOUT_SECONDS
        if master.beat_unanswered and now - master.beat_unanswered > timeout:
            raise ConnectionError(f"no heartbeat came back from {master.name} within {timeout:g}s")
        if now - master.beat_sent >= protocol.HEARTBEAT_SECONDS:
            master.beat_sent = now
            if not master.beat_unanswered:
                master.beat_unanswered = now
            await self._cluster.spublish(master.beat_channel, f"{self.origin} {_BEAT}")
