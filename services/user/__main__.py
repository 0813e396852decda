"""Entry point: `python -m services.user` serves UserService's REST and gRPC APIs."""

from functools import partial

from services.common.app import Parts, ServiceApp, Start
from services.common.auth import UserTokenIssuer
from services.common.redis import RedisClient
from services.common.sessions import Sessions, publish_revocation
from services.user.api_rest.app import create_rest_app
from services.user.checked import CheckedAccounts
from services.user.cluster_store import ClusterUserStore
from services.user.grpc.app import register
from services.user.passwords import Passwords
from services.user.relay import CLUSTER_OUTBOXES, OUTBOX, EraseAccount, lane_key
from services.user.service import UserService, UserStore
from services.user.settings import Settings
from services.user.store import RedisUserStore


def wire(start: Start[Settings]) -> Parts[UserService]:
    """UserService on its Redis (its database, or the cluster layout on a Valkey Cluster); the
    erasure relay (one per bucket on a Cluster) clears deleted accounts' data at the peers."""
    s = start.settings
    redis: RedisClient
    store: UserStore
    if start.cluster:
        redis = start.cluster_redis()
        store, outboxes = ClusterUserStore(redis), CLUSTER_OUTBOXES
    else:
        redis = start.redis(s.redis_db)
        store, outboxes = RedisUserStore(redis), (OUTBOX,)
    tokens = UserTokenIssuer(start.security.keys, s.token_ttl_seconds)
    passwords = Passwords(s.hashing, s.hash_concurrency)
    revoked = partial(publish_revocation, redis)
    service = UserService(store, passwords, tokens, s.login, revoked=revoked)
    messages = start.relay_peer(s.message_addr, "message")
    erase = EraseAccount(messages, start.relay_peer(s.notification_addr, "notification"))
    outbox = start.bucket_outbox(redis, outboxes, erase, lane_key=lane_key)
    # The accounts are here: checked uncached; the document read for the check answers
    # GET /users/{email} of the same request (services.user.checked).
    sessions = Sessions(CheckedAccounts(service), ttl_seconds=0)
    return Parts(service, sessions, outbox=outbox, max_body_bytes=s.max_body_bytes)


APP = ServiceApp("user-service", Settings, wire, register, create_rest_app, sign_user_tokens=True)
main = APP.main

if __name__ == "__main__":
    raise SystemExit(APP.run())
