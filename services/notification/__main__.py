"""Entry point: `python -m services.notification` serves NotificationService (REST + gRPC)."""

from services.common.app import Parts, ServiceApp, Start
from services.common.sessions import GrpcAccounts, Sessions
from services.notification.api_rest.app import create_rest_app
from services.notification.grpc.app import register
from services.notification.relay import OUTBOX, FrontendPush
from services.notification.service import NotificationService
from services.notification.settings import Settings
from services.notification.store import RedisNotificationStore


def wire(start: Start[Settings]) -> Parts[NotificationService]:
    """NotificationService on its Redis, pushing to FrontendService through its outbox."""
    s, redis = start.settings, start.redis(start.settings.redis_db)
    accounts = GrpcAccounts(start.peer(s.user_addr, "user"))
    push = FrontendPush(start.relay_peer(s.frontend_addr, "frontend"))
    return Parts(
        NotificationService(RedisNotificationStore(redis, retention=s.retention), accounts),
        sessions=Sessions(accounts),
        follow_revocations=True,
        outbox=start.outbox(redis, OUTBOX, push),
    )


APP = ServiceApp("notification-service", Settings, wire, register, create_rest_app)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
