"""The fan-out's protocol, shared by both buses: shard channels, payload format, timing, messages.

A message on a shard channel is ``<origin> <payload>``: ``origin`` names the publishing replica
(:attr:`~services.frontend.fanout.bus.Bus.origin`), and ``payload`` is a
``ReceiveNotificationRequest`` in base64 or, for a heartbeat, ``beat``.

The timing constants (``RETRY_SECONDS``, ``READ_TIMEOUT_SECONDS``, ``HEARTBEAT_SECONDS``,
``HEARTBEAT_TIMEOUT_SECONDS``) are read from this module when used (``protocol.X``), not
copied into the bus modules: setting one here (a test's ``monkeypatch.setattr``) reaches
:class:`~services.frontend.fanout.bus.Bus` and
:class:`~services.frontend.fanout.cluster.ShardedBus` alike.
"""

from __future__ import annotations

import base64
import zlib
from typing import Final

from missive.frontend.v1 import frontend_pb2
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from services.notification.models import Notification
from services.notification.wire import notification_from_proto, notification_to_proto

__all__ = [
    "BUS_DOWN",
    "CHANNEL_PREFIX",
    "CLUSTER_CHANNEL_PREFIX",
    "FANOUT_DB",
    "HEARTBEAT_SECONDS",
    "HEARTBEAT_TIMEOUT_SECONDS",
    "INTERRUPTED",
    "PUBLISH_FAILED",
    "READ_TIMEOUT_SECONDS",
    "RETRY_SECONDS",
    "SHARDS",
    "channel_of",
    "cluster_channel_of",
    "cluster_tag",
]

SHARDS: Final = 16
"""Shard channels; every replica subscribes to all of them."""
FANOUT_DB: Final = 0
"""The bus connection's logical database: pub/sub channels belong to the server, not to a
database, and FrontendService keeps no keys, so any database works."""
CHANNEL_PREFIX: Final = "missive:frontend:live:"
CLUSTER_CHANNEL_PREFIX: Final = "f:live:"
"""Cluster mode: FrontendService's ``f:`` namespace; the shard's hash tag follows."""
RETRY_SECONDS: Final = 0.5
"""Pause between attempts to subscribe again after the subscription was lost."""
READ_TIMEOUT_SECONDS: Final = 1.0
HEARTBEAT_SECONDS: Final = 2.0
"""Each replica publishes a heartbeat this often and must read it back (a connection that
died without a reset, which TCP would notice only after minutes, counts as lost)..."""
HEARTBEAT_TIMEOUT_SECONDS: Final = 6.0
"""...within this long; otherwise the subscription is lost and the streams end."""
_BEAT = "beat"
INTERRUPTED = (
    "live notifications to this stream were interrupted; reconnect to receive the unread "
    "notifications again"
)
BUS_DOWN = "FrontendService cannot receive live notifications right now; reconnect to resume"
PUBLISH_FAILED = "FrontendService could not pass the notification to its other replicas; retry"


def channel_of(email: str, shards: int = SHARDS) -> str:
    """The shard channel of a receiver (hash tag: one slot per shard on a Cluster)."""
    return f"{CHANNEL_PREFIX}{{{_shard(email, shards)}}}"


def cluster_tag(shard: int, shards: int = SHARDS) -> str:
    """The hash tag of a shard channel on a Cluster: ``<shard>.<k>`` with the smallest ``k``
    whose slot lies in the shard-th of ``shards`` equal parts of the slot space, so that the
    channels spread evenly over masters that own equal contiguous slot ranges."""
    k = 0
    while key_slot(f"{shard}.{k}".encode()) * shards // REDIS_CLUSTER_HASH_SLOTS != shard:
        k += 1
    return f"{shard}.{k}"


def cluster_channel_of(email: str, shards: int = SHARDS) -> str:
    """The shard channel of a receiver on a Cluster (same shard as :func:`channel_of`)."""
    return f"{CLUSTER_CHANNEL_PREFIX}{{{cluster_tag(_shard(email, shards), shards)}}}"


def _shard(email: str, shards: int) -> int:
    return zlib.crc32(email.encode()) % shards


def _encoded(origin: str, notification: Notification, receiver_account_id: str) -> str:
    request = frontend_pb2.ReceiveNotificationRequest(
        notification=notification_to_proto(notification),
        receiver_account_id=receiver_account_id,
    )
    return f"{origin} {base64.b64encode(request.SerializeToString()).decode()}"


def _decoded(payload: str) -> tuple[str, Notification, str]:
    origin, _, body = payload.partition(" ")
    request = frontend_pb2.ReceiveNotificationRequest.FromString(base64.b64decode(body))
    return origin, notification_from_proto(request.notification), request.receiver_account_id
