"""Entry point: `python -m services.user` serves UserService's REST and gRPC APIs."""

from __future__ import annotations

import sys

from services.common.app import Parts, ServiceApp, Start
from services.common.auth import UserTokenIssuer
from services.common.bootstrap import redis_ready
from services.common.sessions import Sessions, publish_revocation
from services.user.api_rest.app import create_rest_app
from services.user.erasure import OUTBOX, EraseAccount, lane_key
from services.user.grpc.app import register
from services.user.passwords import Passwords
from services.user.service import UserService
from services.user.settings import GRPC_PORT_ENV, REST_PORT_ENV, Settings
from services.user.store import RedisUserStore


def wire(start: Start[Settings]) -> Parts:
    """UserService on its Redis; the erasure relay clears deleted accounts' data at the peers."""
    settings = start.settings
    redis = start.redis(settings.redis_db)
    # Only the erasure relay uses these channels: each attempt waits (within its deadline) for
    # a restarting peer rather than failing at once.
    messages = start.peer(settings.message_addr, "message", wait_for_ready=True)
    notifications = start.peer(settings.notification_addr, "notification", wait_for_ready=True)
    service = UserService(
        RedisUserStore(redis),
        Passwords(settings.hashing, settings.hash_concurrency),
        UserTokenIssuer(start.security.keys, settings.token_ttl_seconds),
        settings.login,
        revoked=lambda email: publish_revocation(redis, email),
    )
    # UserService owns the accounts: every token is checked against the store, uncached.
    sessions = Sessions(service, ttl_seconds=0)
    outbox = start.outbox(redis, OUTBOX, EraseAccount(messages, notifications), lane_key=lane_key)
    return Parts(
        register=lambda server: register(server, service, outbox.dead_letters),
        sessions=sessions,
        rest_app=create_rest_app(
            service,
            start.security.verifier,
            redis_ready(redis),
            sessions,
            max_body_bytes=settings.max_body_bytes,
        ),
        rest_port=settings.rest_port,
        background=[outbox.relay.run],
    )


APP = ServiceApp(
    "user-service",
    "user",
    Settings.from_env,
    wire,
    GRPC_PORT_ENV,
    REST_PORT_ENV,
    sign_user_tokens=True,
)
main = APP.main

if __name__ == "__main__":
    sys.exit(APP.run())
