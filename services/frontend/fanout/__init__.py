"""Live notifications across FrontendService replicas, through the shared Valkey's pub/sub.

NotificationService's relay pushes each notification to *one* FrontendService replica; the
receiver's live streams may sit on any of them. The replica that receives a push

1. shows it on its own live streams at once (no round trip for the common, single-replica
   case), then
2. publishes it, before answering the push, on the receiver's shard channel
   ``missive:frontend:live:{<shard>}`` (``shard`` = CRC-32 of the email modulo
   :data:`SHARDS`), tagged with its own origin id.

Every replica subscribes to every shard channel when it starts (its health reports SERVING,
and it accepts streams, only once Valkey confirmed all of them), shows what it reads on its
own streams of that receiver (and account), and skips what it published itself. Each stream
still carries an id at most once (its own dedupe), so a relay's redelivery, or one replica's
push reaching another replica's stream both directly and through the bus, is never shown
twice.

**No silent gap.** Redis pub/sub is fire and forget: a message published while a subscriber
is disconnected is lost for it. So when the subscription is lost (Valkey restarted or
unreachable, the connection dropped or was closed for an overflowing output buffer, a
reconnect made by the client library) every live stream of this replica is ended with
``UNAVAILABLE`` (the contract's "reconnect to resume"): its client reconnects and the replay
(:class:`services.frontend.peers.NotificationReplay`) shows the unread notifications it may
have missed. Until every shard channel is confirmed again, new streams are refused with
``UNAVAILABLE`` and health reports NOT_SERVING. A push whose publish fails is refused with
``UNAVAILABLE`` (the relay retries it; the streams that already showed it skip it then).
Each replica also publishes a heartbeat every 2 s and must read it back within 6 s: a
connection that died silently (no reset) counts as lost too.

On a standalone Valkey, :class:`Bus` uses ``PUBLISH`` and ``SUBSCRIBE``; pub/sub channels
belong to the server, not to a logical database.

**Valkey Cluster** (:class:`ShardedBus`, chosen by ``start.cluster``): sharded pub/sub,
``SPUBLISH`` and ``SSUBSCRIBE``, on the channels ``f:live:{<tag>}`` of FrontendService's ``f:``
namespace. A shard channel lives on the master that owns its slot, and a message published on
it goes to that master's subscribers only (classic ``PUBLISH`` on a Cluster is broadcast to
every node, which does not scale). Each shard's hash tag is picked so that the 16 channels fall
in the 16 sixteenths of the slot space (:func:`cluster_tag`): spread evenly over the masters of
any cluster that splits the slots into equal contiguous ranges (as ``valkey-cli --cluster
create`` and the embedded cluster do). The channels each master owned at start are followed on
their own subscription (redis-py's ``ClusterPubSub``), read by one task per master, each
publishing its own heartbeat on one of its master's channels and reading it back. The
guarantees hold shard by shard: a dropped connection to a master, a re-subscription made by
the client library, a ``SUNSUBSCRIBE`` sent by the server (its slot moved: resharding or
failover), a subscription the library moved to another node on its own, or a missing
heartbeat counts as a lost subscription of that master's channels: the live streams of their
receivers end with ``UNAVAILABLE``, new streams of those receivers are refused, and that
subscription starts over (on the slot map read again); the streams of the other shards go on.
Health is SERVING while any shard channel is subscribed. A push whose ``SPUBLISH`` fails (its
master is down) is refused with ``UNAVAILABLE`` and retried by the relay.

The package holds :mod:`~services.frontend.fanout.protocol` (shard channels, payload
encoding, heartbeat timing and messages, shared by both buses),
:mod:`~services.frontend.fanout.bus` (:class:`Bus`, standalone Valkey) and
:mod:`~services.frontend.fanout.cluster` (:class:`ShardedBus`, Valkey Cluster); the names below
are re-exported here. To change a timing constant (a test's ``monkeypatch.setattr``), set it on
:mod:`~services.frontend.fanout.protocol`: both buses read it there when they use it.
"""

# __all__ is the public API. The names imported ``as`` themselves are the others this module
# held before it became a package: still importable from here (tests and tools use some).
from services.frontend.fanout.bus import Bus
from services.frontend.fanout.bus import Interrupt as Interrupt
from services.frontend.fanout.bus import Show as Show
from services.frontend.fanout.cluster import ShardedBus
from services.frontend.fanout.cluster import _Group as _Group
from services.frontend.fanout.cluster import _Master as _Master
from services.frontend.fanout.protocol import _BEAT as _BEAT
from services.frontend.fanout.protocol import BUS_DOWN as BUS_DOWN
from services.frontend.fanout.protocol import CHANNEL_PREFIX as CHANNEL_PREFIX
from services.frontend.fanout.protocol import (
    CLUSTER_CHANNEL_PREFIX,
    FANOUT_DB,
    SHARDS,
    channel_of,
    cluster_channel_of,
    cluster_tag,
)
from services.frontend.fanout.protocol import HEARTBEAT_SECONDS as HEARTBEAT_SECONDS
from services.frontend.fanout.protocol import HEARTBEAT_TIMEOUT_SECONDS as HEARTBEAT_TIMEOUT_SECONDS
from services.frontend.fanout.protocol import INTERRUPTED as INTERRUPTED
from services.frontend.fanout.protocol import PUBLISH_FAILED as PUBLISH_FAILED
from services.frontend.fanout.protocol import READ_TIMEOUT_SECONDS as READ_TIMEOUT_SECONDS
from services.frontend.fanout.protocol import RETRY_SECONDS as RETRY_SECONDS
from services.frontend.fanout.protocol import _decoded as _decoded
from services.frontend.fanout.protocol import _encoded as _encoded
from services.frontend.fanout.protocol import _shard as _shard

__all__ = [
    "CLUSTER_CHANNEL_PREFIX",
    "FANOUT_DB",
    "SHARDS",
    "Bus",
    "ShardedBus",
    "channel_of",
    "cluster_channel_of",
    "cluster_tag",
]
