"""Entry point: `python -m services.message` serves MessageService (REST + gRPC + relay)."""

from __future__ import annotations

import sys

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import Sessions
from services.message.api_rest.app import create_rest_app
from services.message.grpc.app import register
from services.message.peers import RETRY_METHODS, USER_SERVICE_NAME, GrpcUserDirectory
from services.message.relay import OUTBOX, NotifyReceiver
from services.message.service import MessageService
from services.message.settings import GRPC_PORT_ENV, REST_PORT_ENV, Settings
from services.message.store import RedisMessageStore


def wire(start: Start[Settings]) -> Parts:
    """MessageService on its Redis; UserService resolves recipients and checks tokens."""
    settings = start.settings
    redis = start.redis(settings.redis_db)
    users = start.peer(
        settings.user_addr, "user", retry_service=USER_SERVICE_NAME, retry_methods=RETRY_METHODS
    )
    # Only the relay uses this channel: it retries anyway, so each attempt waits (within its
    # deadline) for a restarting NotificationService rather than failing at once.
    notifications = start.peer(settings.notification_addr, "notification", wait_for_ready=True)
    store = RedisMessageStore(redis, quota_bytes=settings.quota_bytes)
    directory = GrpcUserDirectory(users)
    sessions = Sessions(directory)  # also the cache of a send's sender and receiver checks
    service = MessageService(store, directory, limits=settings.send, known_users=sessions)
    outbox = start.outbox(redis, OUTBOX, NotifyReceiver(notifications))
    return Parts(
        register=lambda server: register(server, service, outbox.dead_letters),
        sessions=sessions,
        follow_revocations=True,
        rest_app=create_rest_app(service, start.security.verifier, store.ping, sessions),
        rest_port=settings.rest_port,
        background=[outbox.relay.run],
    )


APP = ServiceApp(
    "message-service", "message", Settings.from_env, wire, GRPC_PORT_ENV, REST_PORT_ENV
)
main = APP.main

if __name__ == "__main__":
    sys.exit(APP.run())
