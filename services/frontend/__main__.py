"""Entry point: `python -m services.frontend` serves FrontendService's gRPC API."""

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import GrpcAccounts, Sessions
from services.frontend.fanout import FANOUT_DB, Bus, ShardedBus
from services.frontend.grpc.app import register
from services.frontend.hub import Hub
from services.frontend.metrics import metrics_background
from services.frontend.peers import NOTIFICATION_RETRY, NotificationReplay
from services.frontend.service import RECHECK_SECONDS, FrontendService
from services.frontend.settings import Settings


def wire(start: Start[Settings]) -> Parts[FrontendService]:
    """No store; with REDIS_URL (or REDIS_CLUSTER_NODES), replicas share pushes (and readiness)
    through its pub/sub (sharded pub/sub on a Valkey Cluster)."""
    s, hub = start.settings, Hub.from_settings(start.settings)
    # No revocation channel: stream tokens are re-checked as often as the account cache expires.
    sessions = Sessions(GrpcAccounts(start.peer(s.user_addr, "user")), ttl_seconds=RECHECK_SECONDS)
    notifications = start.peer(s.notification_addr, "notification", retry=NOTIFICATION_RETRY)
    bus: Bus | None = None
    if s.fanout:
        bus = ShardedBus(start.cluster_redis()) if start.cluster else Bus(start.redis(FANOUT_DB))
    service = FrontendService(NotificationReplay(notifications), hub, sessions=sessions, bus=bus)
    return Parts(
        service,
        sessions,
        readiness=bus.ready if bus else None,
        on_stop=[service.shutdown],
        background=[
            metrics_background(s.host, s.metrics_port, hub, required=s.metrics_port_set),
            *([bus.run] if bus else []),
        ],
        max_concurrent_rpcs=s.max_concurrent_rpcs,
    )


APP = ServiceApp("frontend-service", Settings, wire, register)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
