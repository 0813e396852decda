"""Entry point: `python -m services.frontend` serves FrontendService's gRPC API."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping

from services.common.bootstrap import Security, create_endpoint, run_endpoint
from services.common.grpc_client import peer_channel
from services.common.logging import configure_logging
from services.common.runner import run
from services.common.sessions import GrpcAccounts, Sessions
from services.common.tracing import setup_tracing
from services.frontend.grpc.app import register
from services.frontend.peers import NOTIFICATION_SERVICE_NAME, RETRY_METHODS, NotificationReplay
from services.frontend.service import RECHECK_SECONDS, FrontendService, Hub
from services.frontend.settings import GRPC_PORT_ENV, Settings

logger = logging.getLogger(__name__)

NAME = "frontend-service"
STREAM_HEADROOM = 200
"""Concurrent calls the gRPC server admits beyond the stream limit (pushes, health checks)."""


async def always_ready() -> bool:
    """Readiness: FrontendService has no store, so it is ready as soon as it serves.

    NotificationService being down only makes new streams fail their replay (UNAVAILABLE)
    while pushes and open streams keep working, so it must not take the server out of service.
    """
    return True


async def end_streams_on_shutdown(service: FrontendService) -> None:
    """Runs until cancelled, which is the first step of shutdown; then ends every stream.

    Streams never finish by themselves, so without this the server would wait the whole grace
    period and then cancel them; ending them at once gives clients UNAVAILABLE and they reconnect.
    """
    try:
        await asyncio.Event().wait()
    finally:
        service.shutdown()


async def main(environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None) -> None:
    """Wire FrontendService from the environment and serve until SIGTERM/SIGINT or ``stop``."""
    settings = Settings.from_env(environ)
    common = settings.common
    configure_logging(common.log_level, common.log_format, NAME)
    setup_tracing(NAME, environ)
    security = Security.load(settings.keys_dir, "frontend")
    channel = peer_channel(
        settings.notification_addr,
        security.credentials,
        target="notification",
        retry_service=NOTIFICATION_SERVICE_NAME,
        retry_methods=RETRY_METHODS,
    )
    users_channel = peer_channel(settings.user_addr, security.credentials, target="user")
    try:
        # FrontendService has no Redis, so no revocation channel: open streams are re-checked
        # every RECHECK_SECONDS, which is also the cache's lifetime (5 s staleness at most).
        sessions = Sessions(GrpcAccounts(users_channel), ttl_seconds=RECHECK_SECONDS)
        hub = Hub(
            max_streams=settings.max_streams,
            max_streams_per_user=settings.max_streams_per_user,
            max_streams_per_client=settings.max_streams_per_client,
        )
        service = FrontendService(NotificationReplay(channel), hub, sessions=sessions)
        endpoint = create_endpoint(
            security=security,
            host=settings.host,
            port=settings.grpc_port,
            port_env=GRPC_PORT_ENV,
            register=lambda server: register(server, service),
            sessions=sessions,
            # Every open stream is a call: admit them all, plus room for pushes and health.
            max_concurrent_rpcs=settings.max_streams + STREAM_HEADROOM,
        )
        logger.info(
            "%s: gRPC on %s:%d, replaying from NotificationService at %s",
            NAME,
            settings.host,
            endpoint.port,
            settings.notification_addr,
        )
        await run_endpoint(
            name=NAME,
            endpoint=endpoint,
            readiness=always_ready,
            grace=common.shutdown_grace_seconds,
            background=[lambda: end_streams_on_shutdown(service)],
            stop=stop,
        )
    finally:
        await channel.close()
        await users_channel.close()


if __name__ == "__main__":
    sys.exit(run(main, name=NAME))
