"""Entry point: `python -m services.message` serves MessageService (REST + gRPC + relay)."""

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
from services.common.sessions import Sessions, follow_revocations
from services.common.tracing import setup_tracing
from services.message.api_rest.app import create_rest_app
from services.message.grpc.app import register
from services.message.peers import RETRY_METHODS, USER_SERVICE_NAME, GrpcUserDirectory
from services.message.relay import OUTBOX, NotifyReceiver, lane_key
from services.message.service import MessageService
from services.message.settings import (
    GRPC_PORT_ENV,
    REST_PORT_ENV,
    Settings,
)
from services.message.store import RedisMessageStore

logger = logging.getLogger(__name__)

NAME = "message-service"


class _Closer:
    """Closes each resource once, whether serving ended normally or start-up failed."""

    def __init__(self, *closers: Callable[[], Awaitable[object]]) -> None:
        self._closers = list(closers)

    async def close(self) -> None:
        while self._closers:
            await self._closers.pop(0)()


async def main(environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None) -> None:
    """Wire MessageService from the environment and serve until SIGTERM/SIGINT or ``stop``."""
    settings = Settings.from_env(environ)
    common = settings.common
    configure_logging(common.log_level, common.log_format, NAME)
    setup_tracing(NAME, environ)
    security = Security.load(settings.keys_dir, "message")
    redis = create_redis(common.redis_url, settings.redis_db, client_name=NAME)
    users_channel = peer_channel(
        settings.user_service_addr,
        security.credentials,
        target="user",
        retry_service=USER_SERVICE_NAME,
        retry_methods=RETRY_METHODS,
    )
    # Only the relay uses this channel: it retries anyway, so each attempt waits (within its
    # deadline) for a restarting NotificationService rather than failing at once.
    notification_channel = peer_channel(
        settings.notification_service_addr,
        security.credentials,
        target="notification",
        wait_for_ready=True,
    )
    resources = _Closer(users_channel.close, notification_channel.close, redis.aclose)
    try:
        store = RedisMessageStore(redis, quota_bytes=settings.quota_bytes)
        directory = GrpcUserDirectory(users_channel)
        service = MessageService(store, directory, limits=settings.send)
        sessions = Sessions(directory)
        endpoint = create_endpoint(
            security=security,
            host=settings.host,
            port=settings.grpc_port,
            port_env=GRPC_PORT_ENV,
            register=lambda server: register(server, service, DeadLetters(redis, OUTBOX)),
            sessions=sessions,
        )
        rest_app = create_rest_app(service, security.verifier, store.ping, sessions)
        receiver = NotifyReceiver(notification_channel)
        relay = Relay(
            redis,
            OUTBOX,
            consumer_name(),
            receiver,
            lane_key=lane_key,
            batch_handler=receiver.deliver_batch,
        )
        logger.info(
            "%s: gRPC on %s:%d, Redis %s db %d, UserService at %s, NotificationService at %s",
            NAME,
            settings.host,
            endpoint.port,
            common.redis_url_redacted,
            settings.redis_db,
            settings.user_service_addr,
            settings.notification_service_addr,
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
