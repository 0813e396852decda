"""The service shell: a service declares its parts, the shell builds, serves and closes them.

A service's ``__main__`` declares a :class:`ServiceApp`: its name, how its settings are read,
which ports its servers listen on, and a *wiring* function. The wiring function gets a
:class:`Start` (the settings, this service's keys, and factories for Redis clients, peer
channels and outbox relays whose resources the shell closes) and returns the :class:`Parts`
to serve: the gRPC registration, the optional REST app, the readiness check and the
background tasks. The shell does the rest, the same way for every service:

1. read the settings (a :class:`~services.common.errors.ConfigError` names a bad variable);
2. configure logging; create the missing key pairs when KEYS_CREATE is set; load the keys;
3. wire the service; build the gRPC server (edge interceptor, health, reflection) and bind it;
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
from typing import Generic, Protocol, TypeVar

import grpc.aio
from redis.asyncio import Redis
from starlette.types import ASGIApp

from services.common.auth import ensure_keys
from services.common.bootstrap import Readiness, Security, create_endpoint, redis_ready
from services.common.dead_letters import DeadLetters
from services.common.delivery import Handler, LaneKey, OutboxConfig, Relay, consumer_name
from services.common.grpc_client import peer_channel
from services.common.logging import configure_logging
from services.common.metrics import instrument_redis
from services.common.metrics.mounting import outbox_collector, with_metrics
from services.common.receivers import RpcReceiver, receiver_lane
from services.common.redis import create_redis
from services.common.runner import BackgroundFactory, run, serve
from services.common.sessions import Sessions, follow_revocations
from services.common.settings import CommonSettings

__all__ = ["Outbox", "Parts", "ServiceApp", "ServiceSettings", "Start"]

logger = logging.getLogger(__name__)


class ServiceSettings(Protocol):
    """What the shell reads from a service's settings."""

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


@dataclass(frozen=True)
class Outbox:
    """An outbox's relay (run it as a background task) and its dead letters (for the admin RPCs)."""

    relay: Relay
    dead_letters: DeadLetters


@dataclass(frozen=True)
class Parts:
    """What a service's wiring hands the shell to serve.

    ``register`` adds the servicers to the gRPC server and returns their full names.
    ``sessions`` checks user tokens against their account at the gRPC edge;
    ``follow_revocations`` also evicts its cache on the revocation channel of the service's
    Redis. ``readiness`` defaults to "every Redis opened through :meth:`Start.redis` answers
    PING" (always ready without one). ``on_stop`` callbacks run as shutdown begins, before
    the servers drain (to end calls that never finish by themselves, such as streams).
    """

    register: Callable[[grpc.aio.Server], Sequence[str]]
    sessions: Sessions | None = None
    follow_revocations: bool = False
    rest_app: ASGIApp | None = None
    rest_port: int = 0
    readiness: Readiness | None = None
    background: Sequence[BackgroundFactory] = ()
    on_stop: Sequence[Callable[[], object]] = ()
    max_concurrent_rpcs: int | None = 200


class Start(Generic[S]):
    """What a wiring function builds with; the shell closes what it opens, in reverse order."""

    def __init__(
        self, name: str, settings: S, security: Security, resources: contextlib.AsyncExitStack
    ) -> None:
        self.name = name
        self.settings = settings
        self.security = security
        self._resources = resources
        self.redis_clients: list[Redis] = []
        self.described: list[str] = []
        self.collectors: list[BackgroundFactory] = []  # one per outbox: its backlog gauges

    def redis(self, db: int) -> Redis:
        """A client of REDIS_URL on logical database ``db``."""
        common = self.settings.common
        client = instrument_redis(create_redis(common.redis_url, db, client_name=self.name))
        self._resources.push_async_callback(client.aclose)
        self.redis_clients.append(client)
        self.described.append(f"Redis {common.redis_url_redacted} db {db}")
        return client

    def peer(
        self,
        address: str,
        target: str,
        *,
        retry_service: str | None = None,
        retry_methods: Sequence[str] = (),
        wait_for_ready: bool | None = None,
    ) -> grpc.aio.Channel:
        """A channel to the peer service ``target`` at ``address`` presenting our credential."""
        channel = peer_channel(
            address,
            self.security.credentials,
            target=target,
            retry_service=retry_service,
            retry_methods=retry_methods,
            wait_for_ready=wait_for_ready,
        )
        self._resources.push_async_callback(channel.close)
        self.described.append(f"{target} at {address}")
        return channel

    def outbox(
        self,
        redis: Redis,
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
        return Outbox(relay, DeadLetters(redis, config))


@dataclass(frozen=True)
class ServiceApp(Generic[S]):
    """A service as its ``__main__`` declares it; :meth:`main` serves it, :meth:`run` is the
    process entry point (exit code 2 with one line on stderr when it cannot start)."""

    name: str
    keys: str
    """Whose keys this service loads from KEYS_DIR (``user``, ``message``, ...)."""
    settings: Callable[[Mapping[str, str]], S]
    wire: Callable[[Start[S]], Parts]
    grpc_port_env: str
    rest_port_env: str = ""
    sign_user_tokens: bool = False

    async def main(
        self, environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None
    ) -> None:
        """Serve from ``environ`` until SIGTERM/SIGINT or ``stop``."""
        settings = self.settings(environ)
        common = settings.common
        configure_logging(common.log_level, common.log_format, self.name)
        if settings.keys_create:
            ensure_keys(settings.keys_dir)
        security = Security.load(
            settings.keys_dir, self.keys, sign_user_tokens=self.sign_user_tokens
        )
        async with contextlib.AsyncExitStack() as resources:
            start = Start(self.name, settings, security, resources)
            parts = self.wire(start)
            await self._serve(start, parts, resources, stop)

    async def _serve(
        self,
        start: Start[S],
        parts: Parts,
        resources: contextlib.AsyncExitStack,
        stop: asyncio.Event | None,
    ) -> None:
        settings = start.settings
        endpoint = create_endpoint(
            security=start.security,
            host=settings.host,
            port=settings.grpc_port,
            port_env=self.grpc_port_env,
            register=parts.register,
            sessions=parts.sessions,
            max_concurrent_rpcs=parts.max_concurrent_rpcs,
        )
        readiness = parts.readiness or _all_ready([redis_ready(r) for r in start.redis_clients])
        background: list[BackgroundFactory] = [
            lambda: endpoint.health.run_checks(readiness, interval=1.0),
            *parts.background,
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
            rest_app=with_metrics(parts.rest_app),
            rest_host=settings.host,
            rest_port=parts.rest_port,
            rest_port_env=self.rest_port_env,
            rest_edge=settings.common.rest,
            grace=settings.common.shutdown_grace_seconds,
            background=background,
            # Closed after both servers have drained, within the shutdown budget.
            on_shutdown=[resources.aclose],
            stop=stop,
        )

    def run(self) -> int:
        """``python -m services.<name>``: serve from os.environ; the exit code."""
        return run(self.main, name=self.name)


def _all_ready(checks: Sequence[Readiness]) -> Readiness:
    async def check() -> bool:
        for ready in checks:
            if not await ready():
                return False
        return True

    return check


def _revocations(start: Start[S], parts: Parts) -> list[BackgroundFactory]:
    if not parts.follow_revocations:
        return []
    if parts.sessions is None or len(start.redis_clients) != 1:
        raise ValueError("follow_revocations needs the sessions and exactly one Redis client")
    redis, sessions = start.redis_clients[0], parts.sessions
    return [lambda: follow_revocations(redis, sessions)]


def _stoppers(parts: Parts) -> list[BackgroundFactory]:
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
