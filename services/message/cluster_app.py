"""MessageService's wiring in cluster mode (``start.cluster``): the cluster store, one relay
per bucket outbox (each writing its events' index entries again before notifying), their
backlog collectors, their dead letters as one list and the revocation channel.

redis-py's asyncio cluster client breaks connections when many coroutines send their first
commands before it has loaded the slot map (observed with redis 8.1: "Connection closed by
server", a command applied twice). So every task that uses the client here, and the readiness
check, first waits for :meth:`ClusterMessageStore.connect`; the service reports SERVING only
once the map is loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc.aio

from services.common.app import Outbox, Parts, Start
from services.common.delivery import OutboxConfig, Relay, consumer_name
from services.common.metrics.mounting import outbox_collector
from services.common.redis import RedisClient
from services.common.runner import BackgroundFactory
from services.common.sessions import Sessions, follow_revocations
from services.message.bucket_dead_letters import BucketDeadLetters
from services.message.cluster_store import ClusterMessageStore
from services.message.peers import GrpcUserDirectory
from services.message.relay import RepairingNotifyReceiver, cluster_outboxes, lane_key
from services.message.service import MessageService
from services.message.settings import Settings

__all__ = ["cluster_parts"]


class _ConnectedRelay(Relay):
    """A relay that starts once the cluster client is connected."""

    def __init__(
        self,
        redis: RedisClient,
        config: OutboxConfig,
        handler: RepairingNotifyReceiver,
        connected: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(
            redis,
            config,
            consumer_name(),
            handler,
            lane_key=lane_key,
            batch_handler=handler.deliver_batch,
        )
        self._connected = connected

    async def run(self) -> None:
        await self._connected()
        await super().run()


def _after(connected: Callable[[], Awaitable[None]], task: BackgroundFactory) -> BackgroundFactory:
    async def run() -> object:
        await connected()
        return await task()

    return run


def cluster_parts(
    start: Start[Settings],
    users: GrpcUserDirectory,
    sessions: Sessions,
    channel: grpc.aio.Channel,
) -> Parts[MessageService]:
    s, redis = start.settings, start.cluster_redis()
    store = ClusterMessageStore(redis, quota_bytes=s.quota_bytes)
    notify = RepairingNotifyReceiver(channel, store)
    configs = cluster_outboxes()
    relays = [_ConnectedRelay(redis, config, notify, store.connect) for config in configs]
    interval = s.common.metrics_outbox_interval
    collectors = [outbox_collector(redis, config, interval) for config in configs]
    return Parts(
        MessageService(store, users, limits=s.send, known_users=sessions),
        sessions=sessions,
        outbox=Outbox(relays[0], BucketDeadLetters(redis, configs)),
        readiness=store.ready,
        background=[
            *(relay.run for relay in relays[1:]),
            *(_after(store.connect, collector) for collector in collectors),
            _after(store.connect, lambda: follow_revocations(redis, sessions)),
        ],
    )
