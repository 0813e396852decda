"""Entry point: `python -m services.message` serves MessageService (REST + gRPC + relay)."""

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import Sessions
from services.message.api_rest.app import create_rest_app
from services.message.cluster_app import cluster_parts
from services.message.grpc.app import register
from services.message.peers import RETRY_METHODS, USER_SERVICE_NAME, GrpcUserDirectory
from services.message.relay import OUTBOX, NotifyReceiver
from services.message.service import MessageService
from services.message.settings import Settings
from services.message.store import RedisMessageStore


def wire(start: Start[Settings]) -> Parts[MessageService]:
    """MessageService on its Redis (or Redis Cluster); UserService resolves recipients and
    checks tokens."""
    s = start.settings
    users = GrpcUserDirectory(
        start.peer(s.user_addr, "user", retry=(USER_SERVICE_NAME, RETRY_METHODS))
    )
    channel = start.relay_peer(s.notification_addr, "notification")
    sessions = Sessions(users)  # also the cache of a send's sender and receiver checks
    if start.cluster:
        return cluster_parts(start, users, sessions, channel)
    redis = start.redis(s.redis_db)
    store = RedisMessageStore(redis, quota_bytes=s.quota_bytes)
    return Parts(
        MessageService(store, users, limits=s.send, known_users=sessions),
        sessions=sessions,
        follow_revocations=True,
        outbox=start.outbox(redis, OUTBOX, NotifyReceiver(channel)),
    )


APP = ServiceApp("message-service", Settings, wire, register, create_rest_app)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
