"""The service shell: a service declares its parts, the shell builds, serves and closes them.

A service's ``__main__`` declares a :class:`ServiceApp`: its name, its settings class (which
reads the environment and names its port variables), its gRPC ``register``, its REST
``create_rest_app`` and a *wiring* function. The wiring function gets a :class:`Start` (the
settings, this service's keys, and factories for Redis clients, peer channels and outbox relays
whose resources the shell closes) and returns the :class:`Parts` to serve: the domain service,
its sessions, its outbox, the readiness check and other background tasks. The shell does the
rest, the same way for every service:

1. read the settings (a :class:`~services.common.errors.ConfigError` names a bad variable);
2. configure logging; create the missing key pairs when KEYS_CREATE is set; load the keys;
3. wire the service; register its servicers on the gRPC server (edge interceptor, health,
   reflection) and bind it; build the REST app over the service;
4. serve gRPC and REST with health following readiness every second, the background tasks
   running, until SIGTERM/SIGINT or ``stop``; then drain for SHUTDOWN_GRACE seconds (see
   :func:`services.common.runner.serve`) and close every resource in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, Self, TypeVar

import grpc.aio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from starlette.types import ASGIApp

from services.common.auth import ensure_keys
from services.common.bootstrap import Readiness, Security, create_endpoint, redis_ready
from services.common.bucket_dead_letters import BucketDeadLetters
from services.common.dead_letters import DeadLetters
from services.common.delivery import Handler, LaneKey, OutboxConfig, Relay, consumer_name
from services.common.grpc_client import peer_channel
from services.common.logging import configure_logging
from services.common.metrics import instrument_redis
from services.common.metrics.mounting import outbox_collector, with_metrics
from services.common.receivers import RpcReceiver, receiver_lane
from services.common.redis import RedisClient, create_cluster, create_redis
from services.common.rest_adapter import RestFactory
from services.common.runner import BackgroundFactory, run, serve
from services.common.sessions import Sessions, follow_revocations
from services.common.settings import CommonSettings
from services.common.tracing import setup_tracing

__all__ = [
    "Outbox",
    "Parts",
    "PeerRetry",
    "RestFactory",
    "ServiceApp",
    "ServiceSettings",
    "Start",
]

logger = logging.getLogger(__name__)


class ServiceSettings(Protocol):
    """What the shell reads from a service's settings (a frozen dataclass read by ``from_env``).

    The two class attributes name the variables of the gRPC and REST ports (REST's is empty
    for a service without a REST API), for the error that reports a taken port.
    """

    GRPC_PORT_ENV: ClassVar[str]
    REST_PORT_ENV: ClassVar[str]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self: ...
    @property
    def common(self) -> CommonSettings: ...
    @property
    def keys_dir(self) -> Path: ...
    @property
    def keys_create(self) -> bool: ...
    @property
    def host(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...


S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")

PeerRetry = tuple[str, Sequence[str]]
"""A peer service's full name and the read-only methods its channel may retry."""


@dataclass(frozen=True)
class Outbox:
    """An outbox's relays (the shell runs each as a background task: one, or one per bucket of
    an outbox sharded into bucket streams) and its dead letters (for the admin RPCs)."""

    relays: Sequence[Relay]
    dead_letters: DeadLetters


@dataclass(frozen=True)
class Parts(Generic[T]):
    """What a service's wiring hands the shell to serve: the domain ``service`` and what
    surrounds it.

    The shell adds the servicers with the :class:`ServiceApp`'s ``register`` (given
    the outbox's dead letters when there is an ``outbox``) and builds its ``rest`` app over
    ``service`` (with ``max_body_bytes`` when set); the relays of ``outbox`` run as
    background tasks. ``sessions`` checks user tokens against their account at both edges;
    ``follow_revocations`` also evicts its cache on the revocation channel of the service's
    Redis. ``readiness`` defaults to "every Redis opened through :meth:`Start.redis` answers
    PING" (always ready without one). ``on_stop`` callbacks run as shutdown begins, before
    the servers drain (to end calls that never finish by themselves, such as streams).
    """

    service: T
    sessions: Sessions | None = None
    follow_revocations: bool = False
    outbox: Outbox | None = None
    readiness: Readiness | None = None
    background: Sequence[BackgroundFactory] = ()
    on_stop: Sequence[Callable[[], object]] = ()
    max_concurrent_rpcs: int | None = 200
    max_body_bytes: int | None = None


class Start(Generic[S]):
    """What a wiring function builds with; the shell closes what it opens, in reverse order."""

    def __init__(
        self, name: str, settings: S, security: Security, resources: contextlib.AsyncExitStack
    ) -> None:
        self.name = name
        self.settings = settings
        self.security = security
        self._resources = resources
        self.redis_clients: list[RedisClient] = []
        self.described: list[str] = []
        self.collectors: list[BackgroundFactory] = []  # one per outbox stream: its backlog gauges

    def redis(self, db: int) -> Redis:
        """A client of REDIS_URL on logical database ``db``."""
        common = self.settings.common
        client = instrument_redis(create_redis(common.redis_url, db, client_name=self.name))
        self._resources.push_async_callback(client.aclose)
        self.redis_clients.append(client)
        self.described.append(f"Redis {common.redis_url_redacted} db {db}")
        return client

    @property
    def cluster(self) -> bool:
        """Whether Redis is a Cluster: the service then uses its cluster key layout on
        :meth:`cluster_redis` rather than its database on :meth:`redis`."""
        return self.settings.common.redis_cluster

    def cluster_redis(self) -> RedisCluster:
        """A client of the Redis Cluster that REDIS_URL / REDIS_CLUSTER_NODES name."""
        common = self.settings.common
        client = instrument_redis(create_cluster(common.redis_url, client_name=self.name))
        self._resources.push_async_callback(client.aclose)
        self.redis_clients.append(client)
        self.described.append(f"Redis Cluster {common.redis_url_redacted}")
        return client

    def peer(
        self, address: str, target: str, *, retry: PeerRetry | None = None
    ) -> grpc.aio.Channel:
        """A channel to the peer service ``target`` at ``address`` presenting our credential;
        the channel itself retries the read-only ``retry`` methods on UNAVAILABLE."""
        return self._channel(address, target, retry=retry)

    def relay_peer(self, address: str, target: str) -> grpc.aio.Channel:
        """A channel for an outbox relay only: the relay retries anyway, so each attempt waits
        (within its deadline) for a restarting peer rather than failing at once."""
        return self._channel(address, target, wait_for_ready=True)

    def _channel(
        self,
        address: str,
        target: str,
        *,
        retry: PeerRetry | None = None,
        wait_for_ready: bool | None = None,
    ) -> grpc.aio.Channel:
        service, methods = retry or (None, ())
        channel = peer_channel(
            address,
            self.security.credentials,
            target=target,
            retry_service=service,
            retry_methods=methods,
            wait_for_ready=wait_for_ready,
        )
        self._resources.push_async_callback(channel.close)
        self.described.append(f"{target} at {address}")
        return channel

    def outbox(
        self,
        redis: RedisClient,
        config: OutboxConfig,
        handler: Handler,
        *,
        lane_key: LaneKey = receiver_lane,
    ) -> Outbox:
        """The relay of the outbox ``config`` delivering through ``handler`` (batched when it is
        an :class:`RpcReceiver`), and its dead letters."""
        batch = handler.deliver_batch if isinstance(handler, RpcReceiver) else None
        relay = Relay(
            redis, config, consumer_name(), handler, lane_key=lane_key, batch_handler=batch
        )
        interval = self.settings.common.metrics_outbox_interval
        self.collectors.append(outbox_collector(redis, config, interval))
        return Outbox((relay,), DeadLetters(redis, config))

    def bucket_outbox(
        self,
        redis: RedisClient,
        configs: Sequence[OutboxConfig],
        handler: Handler,
        *,
        lane_key: LaneKey = receiver_lane,
    ) -> Outbox:
        """An outbox sharded into bucket streams (a cluster layout, see
        :mod:`services.common.buckets`): the relay of each bucket's ``configs`` (one consumer
        group name for all) delivering through ``handler``, each bucket's backlog gauges, and
        the dead letters of every bucket as one list. One config (a standalone layout) is the
        outbox :meth:`outbox` makes."""
        if len(configs) == 1:
            return self.outbox(redis, configs[0], handler, lane_key=lane_key)
        buckets = [self.outbox(redis, c, handler, lane_key=lane_key) for c in configs]
        relays = tuple(relay for bucket in buckets for relay in bucket.relays)
        return Outbox(relays, BucketDeadLetters(redis, configs))


@dataclass(frozen=True)
class ServiceApp(Generic[S, T]):
    """A service as its ``__main__`` declares it; :meth:`main` serves it, :meth:`run` is the
    process entry point (exit code 2 with one line on stderr when it cannot start).

    ``register`` is the service's ``register(server, service[, dead_letters])``, returning the full
    names of the servicers it added; ``rest`` its ``create_rest_app``, served on the settings'
    ``rest_port``.
    """

    name: str
    settings: type[S]
    wire: Callable[[Start[S]], Parts[T]]
    register: Callable[..., Sequence[str]]
    rest: RestFactory[T] | None = None
    keys: str = ""
    """Whose keys this service loads from KEYS_DIR (default: the name without ``-service``)."""
    sign_user_tokens: bool = False

    async def main(
        self, environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None
    ) -> None:
        """Serve from ``environ`` until SIGTERM/SIGINT or ``stop``."""
        settings = self.settings.from_env(environ)
        common = settings.common
        configure_logging(common.log_level, common.log_format, self.name)
        setup_tracing(self.name, environ)  # before any gRPC server, channel or REST app exists
        if settings.keys_create:
            ensure_keys(settings.keys_dir)
        security = Security.load(
            settings.keys_dir,
            self.keys or self.name.removesuffix("-service"),
            sign_user_tokens=self.sign_user_tokens,
        )
        async with contextlib.AsyncExitStack() as resources:
            start = Start(self.name, settings, security, resources)
            parts = self.wire(start)
            await self._serve(start, parts, resources, stop)

    async def _serve(
        self,
        start: Start[S],
        parts: Parts[T],
        resources: contextlib.AsyncExitStack,
        stop: asyncio.Event | None,
    ) -> None:
        settings = start.settings
        rest_port = _rest_port(settings) if self.rest is not None else 0
        endpoint = create_endpoint(
            security=start.security,
            host=settings.host,
            port=settings.grpc_port,
            port_env=settings.GRPC_PORT_ENV,
            register=lambda server: self._add_servicers(server, parts),
            sessions=parts.sessions,
            max_concurrent_rpcs=parts.max_concurrent_rpcs,
        )
        readiness = parts.readiness or _all_ready([redis_ready(r) for r in start.redis_clients])
        rest_app = self._rest_app(start, parts, readiness)
        background: list[BackgroundFactory] = [
            lambda: endpoint.health.run_checks(readiness, interval=1.0),
            *parts.background,
            *(relay.run for relay in (parts.outbox.relays if parts.outbox else ())),
            *start.collectors,
            *_revocations(start, parts),
            *_stoppers(parts),
        ]
        logger.info(
            "%s: gRPC on %s:%d%s",
            self.name,
            settings.host,
            endpoint.port,
            "".join(f", {line}" for line in start.described),
        )
        await serve(
            name=self.name,
            grpc_server=endpoint.server,
            health=endpoint.health,
            rest_app=with_metrics(rest_app),
            rest_host=settings.host,
            rest_port=rest_port,
            rest_port_env=settings.REST_PORT_ENV,
            rest_edge=settings.common.rest,
            grace=settings.common.shutdown_grace_seconds,
            background=background,
            # Closed after both servers have drained, within the shutdown budget.
            on_shutdown=[resources.aclose],
            stop=stop,
        )

    def _add_servicers(self, server: grpc.aio.Server, parts: Parts[T]) -> Sequence[str]:
        if parts.outbox is None:
            return self.register(server, parts.service)
        return self.register(server, parts.service, parts.outbox.dead_letters)

    def _rest_app(self, start: Start[S], parts: Parts[T], ready: Readiness) -> ASGIApp | None:
        if self.rest is None:
            return None
        verifier = start.security.verifier
        app: ASGIApp
        if parts.max_body_bytes is None:
            app = self.rest(parts.service, verifier, ready, parts.sessions)
        else:
            app = self.rest(
                parts.service, verifier, ready, parts.sessions, max_body_bytes=parts.max_body_bytes
            )
        return app

    def run(self) -> int:
        """``python -m services.<name>``: serve from os.environ; the exit code."""
        return run(self.main, name=self.name)


def _rest_port(settings: ServiceSettings) -> int:
    port = getattr(settings, "rest_port", None)
    if not isinstance(port, int):
        raise TypeError(f"{type(settings).__name__} has no rest_port to serve the REST app on")
    return port


def _all_ready(checks: Sequence[Readiness]) -> Readiness:
    async def check() -> bool:
        for ready in checks:
            if not await ready():
                return False
        return True

    return check


def _revocations(start: Start[S], parts: Parts[T]) -> list[BackgroundFactory]:
    if not parts.follow_revocations:
        return []
    if parts.sessions is None or len(start.redis_clients) != 1:
        raise ValueError("follow_revocations needs the sessions and exactly one Redis client")
    redis, sessions = start.redis_clients[0], parts.sessions
    return [lambda: follow_revocations(redis, sessions)]


def _stoppers(parts: Parts[T]) -> list[BackgroundFactory]:
    if not parts.on_stop:
        return []

    async def wait_then_stop() -> None:
        # Background tasks are cancelled first thing at shutdown, before the servers drain.
        try:
            await asyncio.Event().wait()
        finally:
            for callback in parts.on_stop:
                callback()

    return [wait_then_stop]
