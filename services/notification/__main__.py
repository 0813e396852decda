"""Entry point: `python -m services.notification` serves NotificationService (REST + gRPC)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping

from services.common.bootstrap import Security, create_endpoint, redis_ready, run_endpoint
from services.common.dead_letters import DeadLetters
from services.common.delivery import Relay, consumer_name
from services.common.grpc_client import peer_channel
from services.common.logging import configure_logging
from services.common.redis import create_redis
from services.common.runner import run
from services.common.sessions import GrpcAccounts, Sessions, follow_revocations
from services.common.tracing import setup_tracing
from services.notification.api_rest.app import create_rest_app
from services.notification.grpc.app import register
from services.notification.relay import OUTBOX, FrontendPush, lane_key
from services.notification.service import NotificationService
from services.notification.settings import (
    GRPC_PORT_ENV,
    REST_PORT_ENV,
    Settings,
)
from services.notification.store import RedisNotificationStore

logger = logging.getLogger(__name__)

NAME = "notification-service"


class _Closer:
    """Closes each resource once, whether serving ended normally or start-up failed."""

    def __init__(self, *closers: Callable[[], Awaitable[object]]) -> None:
        self._closers = list(closers)

    async def close(self) -> None:
        while self._closers:
            await self._closers.pop(0)()


async def main(environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None) -> None:
    """Wire NotificationService from the environment and serve until SIGTERM/SIGINT or ``stop``."""
    settings = Settings.from_env(environ)
    common = settings.common
    configure_logging(common.log_level, common.log_format, NAME)
    setup_tracing(NAME, environ)
    security = Security.load(settings.keys_dir, "notification")
    redis = create_redis(
        common.redis_url,
        settings.redis_db,
        client_name=NAME,
    )
    # Only the relay uses this channel: each attempt waits (within its deadline) for a
    # restarting FrontendService rather than failing at once.
    channel = peer_channel(
        settings.frontend_addr, security.credentials, target="frontend", wait_for_ready=True
    )
    users_channel = peer_channel(settings.user_addr, security.credentials, target="user")
    resources = _Closer(channel.close, users_channel.close, redis.aclose)
    try:
        store = RedisNotificationStore(redis, retention=settings.retention)
        accounts = GrpcAccounts(users_channel)
        service = NotificationService(store, accounts)
        sessions = Sessions(accounts)
        endpoint = create_endpoint(
            security=security,
            host=settings.host,
            port=settings.grpc_port,
            port_env=GRPC_PORT_ENV,
            register=lambda server: register(server, service, DeadLetters(redis, OUTBOX)),
            sessions=sessions,
        )
        rest_app = create_rest_app(service, security.verifier, store.ping, sessions)
        push = FrontendPush(channel)
        relay = Relay(
            redis,
            OUTBOX,
            consumer_name(),
            push,
            lane_key=lane_key,
            batch_handler=push.deliver_batch,
        )
        logger.info(
            "%s: gRPC on %s:%d, Redis %s db %d, pushing to FrontendService at %s",
            NAME,
            settings.host,
            endpoint.port,
            common.redis_url_redacted,
            settings.redis_db,
            settings.frontend_addr,
        )
        await run_endpoint(
            name=NAME,
            endpoint=endpoint,
            readiness=redis_ready(redis),
            grace=common.shutdown_grace_seconds,
            rest_app=rest_app,
            rest_host=settings.host,
            rest_port=settings.rest_port,
            rest_port_env=REST_PORT_ENV,
            rest_edge=common.rest,
            background=[relay.run, lambda: follow_revocations(redis, sessions)],
            on_shutdown=[resources.close],
            stop=stop,
        )
    finally:
        await resources.close()


if __name__ == "__main__":
    sys.exit(run(main, name=NAME))
