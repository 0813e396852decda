"""Entry point: `python -m services.message` serves MessageService (REST + gRPC + relay)."""

from services.common.app import Parts, ServiceApp, Start
from services.common.bootstrap import Readiness
from services.common.delivery import Handler
from services.common.redis import RedisClient
from services.common.sessions import Sessions
from services.message.api_rest.app import create_rest_app
from services.message.cluster_store import ClusterMessageStore
from services.message.grpc.app import register
from services.message.peers import RETRY_METHODS, USER_SERVICE_NAME, GrpcUserDirectory
from services.message.relay import (
    CLUSTER_OUTBOXES,
    OUTBOX,
    NotifyReceiver,
    RepairingNotifyReceiver,
    lane_key,
)
from services.message.service import MessageService, MessageStore
from services.message.settings import Settings
from services.message.store import RedisMessageStore


def wire(start: Start[Settings]) -> Parts[MessageService]:
    """MessageService on its Redis (its database, or the cluster layout on a Valkey Cluster);
    UserService resolves recipients and checks tokens; the notification relay (one per bucket
    on a Cluster, each writing its events' index entries again before notifying) feeds
    NotificationService."""
    s = start.settings
    users = GrpcUserDirectory(
        start.peer(s.user_addr, "user", retry=(USER_SERVICE_NAME, RETRY_METHODS))
    )
    channel = start.relay_peer(s.notification_addr, "notification")
    sessions = Sessions(users)  # also the cache of a send's sender and receiver checks
    redis: RedisClient
    store: MessageStore
    notify: Handler
    readiness: Readiness | None = None  # standalone: Redis answers PING
    if start.cluster:
        redis = start.cluster_redis()
        cluster = ClusterMessageStore(redis, quota_bytes=s.quota_bytes)
        store, outboxes, notify = (
            cluster,
            CLUSTER_OUTBOXES,
            RepairingNotifyReceiver(channel, cluster),
        )
        readiness = cluster.ready  # some master answers: the others' slots answer UNAVAILABLE
    else:
        redis = start.redis(s.redis_db)
        store = RedisMessageStore(redis, quota_bytes=s.quota_bytes)
        outboxes, notify = (OUTBOX,), NotifyReceiver(channel)
    return Parts(
        MessageService(store, users, limits=s.send, known_users=sessions),
        sessions=sessions,
        follow_revocations=True,
        outbox=start.bucket_outbox(redis, outboxes, notify, lane_key=lane_key),
        readiness=readiness,
    )


APP = ServiceApp("message-service", Settings, wire, register, create_rest_app)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
