"""Entry point: `python -m services.notification` serves NotificationService (REST + gRPC)."""

from __future__ import annotations

import sys

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import GrpcAccounts, Sessions
from services.notification.api_rest.app import create_rest_app
from services.notification.grpc.app import register
from services.notification.relay import OUTBOX, FrontendPush
from services.notification.service import NotificationService
from services.notification.settings import GRPC_PORT_ENV, REST_PORT_ENV, Settings
from services.notification.store import RedisNotificationStore


def wire(start: Start[Settings]) -> Parts:
    """NotificationService on its Redis, pushing to FrontendService through its outbox."""
    settings = start.settings
    redis = start.redis(settings.redis_db)
    # Only the relay uses this channel: each attempt waits (within its deadline) for a
    # restarting FrontendService rather than failing at once.
    frontend = start.peer(settings.frontend_addr, "frontend", wait_for_ready=True)
    accounts = GrpcAccounts(start.peer(settings.user_addr, "user"))
    store = RedisNotificationStore(redis, retention=settings.retention)
    service = NotificationService(store, accounts)
    sessions = Sessions(accounts)
    outbox = start.outbox(redis, OUTBOX, FrontendPush(frontend))
    return Parts(
        register=lambda server: register(server, service, outbox.dead_letters),
        sessions=sessions,
        follow_revocations=True,
        rest_app=create_rest_app(service, start.security.verifier, store.ping, sessions),
        rest_port=settings.rest_port,
        background=[outbox.relay.run],
    )


APP = ServiceApp(
    "notification-service", "notification", Settings.from_env, wire, GRPC_PORT_ENV, REST_PORT_ENV
)
main = APP.main

if __name__ == "__main__":
    sys.exit(APP.run())
