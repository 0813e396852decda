"""Entry point: `python -m services.frontend` serves FrontendService's gRPC API."""

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import GrpcAccounts, Sessions
from services.frontend.fanout import FANOUT_DB, Bus
from services.frontend.grpc.app import register
from services.frontend.metrics import metrics_background
from services.frontend.peers import NOTIFICATION_RETRY, NotificationReplay
from services.frontend.service import RECHECK_SECONDS, FrontendService, Hub
from services.frontend.settings import Settings


def wire(start: Start[Settings]) -> Parts[FrontendService]:
    """FrontendService: no store, so always ready (NotificationService down only fails replays)."""
    s = start.settings
    notifications = start.peer(s.notification_addr, "notification", retry=NOTIFICATION_RETRY)
    # No revocation channel: open streams are re-checked every RECHECK_SECONDS, which is also
    # the cache's lifetime (5 s staleness at most).
    sessions = Sessions(GrpcAccounts(start.peer(s.user_addr, "user")), ttl_seconds=RECHECK_SECONDS)
    hub = Hub(
        max_streams=s.max_streams,
        max_streams_per_user=s.max_streams_per_user,
        max_streams_per_client=s.max_streams_per_client,
    )
    # With REDIS_URL, replicas pass live notifications to each other through its pub/sub;
    # health then follows the subscription (streams are refused while it is incomplete).
    bus = Bus(start.redis(FANOUT_DB)) if s.fanout else None
    service = FrontendService(NotificationReplay(notifications), hub, sessions=sessions, bus=bus)
    return Parts(
        service,
        sessions,
        readiness=bus.ready if bus is not None else None,
        on_stop=[service.shutdown],
        background=[
            metrics_background(s.host, s.metrics_port, hub),
            *([bus.run] if bus is not None else []),
        ],
        max_concurrent_rpcs=s.max_concurrent_rpcs,
    )


APP = ServiceApp("frontend-service", Settings, wire, register)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
