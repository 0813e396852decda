"""Entry point: `python -m services.user` serves UserService's REST and gRPC APIs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping

from services.common.auth import UserTokenIssuer
from services.common.bootstrap import Security, create_endpoint, redis_ready, run_endpoint
from services.common.dead_letters import DeadLetters
from services.common.delivery import Relay, consumer_name
from services.common.grpc_client import peer_channel
from services.common.logging import configure_logging
from services.common.redis import create_redis
from services.common.runner import run
from services.common.sessions import Sessions, publish_revocation
from services.common.tracing import setup_tracing
from services.user.api_rest.app import create_rest_app
from services.user.erasure import OUTBOX, EraseAccount, lane_key
from services.user.grpc.app import register
from services.user.passwords import Passwords
from services.user.service import UserService
from services.user.settings import GRPC_PORT_ENV, REST_PORT_ENV, Settings
from services.user.store import RedisUserStore

logger = logging.getLogger(__name__)

NAME = "user-service"


async def main(environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None) -> None:
    """Wire UserService from the environment and serve until SIGTERM/SIGINT or ``stop``."""
    settings = Settings.from_env(environ)
    common = settings.common
    configure_logging(common.log_level, common.log_format, NAME)
    setup_tracing(NAME, environ)
    security = Security.load(settings.keys_dir, "user", sign_user_tokens=True)
    issuer = UserTokenIssuer(security.keys, settings.token_ttl_seconds)
    redis = create_redis(common.redis_url, settings.redis_db, client_name=NAME)
    # Only the erasure relay uses these channels: each attempt waits (within its deadline) for
    # a restarting peer rather than failing at once.
    message_channel = peer_channel(
        settings.message_service_addr,
        security.credentials,
        target="message",
        wait_for_ready=True,
    )
    notification_channel = peer_channel(
        settings.notification_service_addr,
        security.credentials,
        target="notification",
        wait_for_ready=True,
    )
    try:

        async def revoked(email: str) -> None:
            await publish_revocation(redis, email)

        service = UserService(
            RedisUserStore(redis),
            Passwords(settings.hashing, settings.hash_concurrency),
            issuer,
            settings.login,
            revoked=revoked,
        )
        # UserService owns the accounts: every token is checked against the store, uncached.
        sessions = Sessions(service, ttl_seconds=0)
        endpoint = create_endpoint(
            security=security,
            host=settings.host,
            port=settings.grpc_port,
            port_env=GRPC_PORT_ENV,
            register=lambda server: register(server, service, DeadLetters(redis, OUTBOX)),
            sessions=sessions,
        )
        relay = Relay(
            redis,
            OUTBOX,
            consumer_name(),
            EraseAccount(message_channel, notification_channel),
            lane_key=lane_key,
        )
        logger.info(
            "%s: gRPC on %s:%d, Redis %s db %d",
            NAME,
            settings.host,
            endpoint.port,
            common.redis_url_redacted,
            settings.redis_db,
        )
        await run_endpoint(
            name=NAME,
            endpoint=endpoint,
            readiness=redis_ready(redis),
            grace=common.shutdown_grace_seconds,
            rest_app=create_rest_app(
                service,
                security.verifier,
                redis_ready(redis),
                sessions,
                max_body_bytes=settings.max_body_bytes,
            ),
            rest_host=settings.host,
            rest_port=settings.rest_port,
            rest_port_env=REST_PORT_ENV,
            rest_edge=common.rest,
            background=[relay.run],
            stop=stop,
        )
    finally:
        # After both servers have drained (run_endpoint returns only then), or on a failed start.
        await message_channel.close()
        await notification_channel.close()
        await redis.aclose()


if __name__ == "__main__":
    sys.exit(run(main, name=NAME))
