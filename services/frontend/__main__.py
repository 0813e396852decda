"""Entry point: `python -m services.frontend` serves FrontendService's gRPC API."""

from __future__ import annotations

import sys

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import GrpcAccounts, Sessions
from services.frontend.fanout import Bus
from services.frontend.grpc.app import register
from services.frontend.peers import NOTIFICATION_SERVICE_NAME, RETRY_METHODS, NotificationReplay
from services.frontend.service import RECHECK_SECONDS, FrontendService, Hub
from services.frontend.settings import GRPC_PORT_ENV, Settings

FANOUT_DB = 0
"""The connection's logical database: pub/sub channels belong to the server, not to a database,
and FrontendService has no keys, so any database works."""
STREAM_HEADROOM = 200
"""Concurrent calls the gRPC server admits beyond the stream limit (pushes, health checks)."""


def wire(start: Start[Settings]) -> Parts:
    """FrontendService: no store, so always ready (NotificationService down only fails replays)."""
    s = start.settings
    replay = start.peer(
        s.notification_addr,
        "notification",
        retry_service=NOTIFICATION_SERVICE_NAME,
        retry_methods=RETRY_METHODS,
    )
    # No Redis, so no revocation channel: open streams are re-checked every RECHECK_SECONDS,
    # which is also the cache's lifetime (5 s staleness at most).
    sessions = Sessions(GrpcAccounts(start.peer(s.user_addr, "user")), ttl_seconds=RECHECK_SECONDS)
    hub = Hub(
        max_streams=s.max_streams,
        max_streams_per_user=s.max_streams_per_user,
        max_streams_per_client=s.max_streams_per_client,
    )
    # With REDIS_URL, replicas pass live notifications to each other through its pub/sub;
    # health then follows the subscription (streams are refused while it is incomplete).
    bus = Bus(start.redis(FANOUT_DB)) if s.fanout else None
    service = FrontendService(NotificationReplay(replay), hub, sessions=sessions, bus=bus)
    return Parts(
        register=lambda server: register(server, service),
        sessions=sessions,
        readiness=bus.ready if bus is not None else _always,
        background=[bus.run] if bus is not None else [],
        # Streams never end by themselves: end them at once (clients reconnect elsewhere).
        on_stop=[service.shutdown],
        # Every open stream is a call: admit them all, plus room for pushes and health.
        max_concurrent_rpcs=s.max_streams + STREAM_HEADROOM,
    )


async def _always() -> bool:
    return True


APP = ServiceApp("frontend-service", "frontend", Settings.from_env, wire, GRPC_PORT_ENV)
main = APP.main

if __name__ == "__main__":
    sys.exit(APP.run())
