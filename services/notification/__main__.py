"""Entry point: `python -m services.notification` serves NotificationService (REST + gRPC)."""

from services.common.app import Parts, ServiceApp, Start
from services.common.redis import RedisClient
from services.common.sessions import GrpcAccounts, Sessions
from services.notification import keys
from services.notification.api_rest.app import create_rest_app
from services.notification.grpc.app import register
from services.notification.relay import CLUSTER_OUTBOXES, OUTBOX, FrontendPush, lane_key
from services.notification.service import NotificationService
from services.notification.settings import Settings
from services.notification.store import RedisNotificationStore


def wire(start: Start[Settings]) -> Parts[NotificationService]:
    """NotificationService on its Redis (its database, or the cluster layout on a Valkey
    Cluster), pushing to FrontendService through its outbox (a relay per bucket on a Cluster)."""
    s = start.settings
    redis: RedisClient
    layout: keys.Layout
    if start.cluster:
        redis = start.cluster_redis()
        layout, outboxes = keys.CLUSTER, CLUSTER_OUTBOXES
    else:
        redis = start.redis(s.redis_db)
        layout, outboxes = keys.STANDALONE, (OUTBOX,)
    store = RedisNotificationStore(redis, retention=s.retention, layout=layout)
    accounts = GrpcAccounts(start.peer(s.user_addr, "user"))
    push = FrontendPush(start.relay_peer(s.frontend_addr, "frontend"))
    return Parts(
        NotificationService(store, accounts),
        sessions=Sessions(accounts),
        follow_revocations=True,
        outbox=start.bucket_outbox(redis, outboxes, push, lane_key=lane_key),
    )


APP = ServiceApp("notification-service", Settings, wire, register, create_rest_app)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
