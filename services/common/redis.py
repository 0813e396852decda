"""The one way services create their Redis client: bounded timeouts and no automatic retries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT, ScriptTextT

from services.common.autopipeline import AutoPipeline, PipelinedScript
from services.common.settings import cluster_nodes

__all__ = [
    "CLUSTER_ERRORS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "FIXED_WINDOW_HIT_LUA",
    "RedisClient",
    "auto_pipeline_of",
    "create_cluster",
    "create_redis",
    "pipelined_command",
    "pipelined_script",
    "socket_timeout_of",
    "unavailable_reason",
]

RedisClient = Redis | RedisCluster
"""A client of a standalone Redis or of a Redis Cluster: what code that works on both takes."""

CLUSTER_ERRORS: tuple[type[Exception], ...] = (ClusterDownError, TryAgainError, SlotNotCoveredError)
"""A cluster that cannot serve a slot right now: no master for it, or it is migrating."""

DEFAULT_SOCKET_TIMEOUT = 2.0
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_HEALTH_CHECK_INTERVAL = 30
# Above a gRPC server's 200 concurrent calls plus REST and relays: redis-py's asyncio pool
# fails a command at once, rather than waiting, when every connection is busy.
DEFAULT_MAX_CONNECTIONS = 512

FIXED_WINDOW_HIT_LUA = """
-- One hit on a fixed-window counter: the expiry is set by the first hit and never extended.
-- KEYS: 1 counter. ARGV: 1 window (s). Returns {count, ttl}.
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def create_redis(
    url: str,
    db: int,
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    health_check_interval: int = DEFAULT_HEALTH_CHECK_INTERVAL,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    client_name: str | None = None,
) -> Redis:
    """An asyncio Redis client (str replies) for ``url`` on logical database ``db``.

    ``url`` is redis://, rediss:// or unix://; ``db`` wins over any database in the URL,
    because each service owns a fixed database. The caller closes it with ``aclose()``.
    """
    options: dict[str, Any] = dict(parse_url(url))
    options["max_connections"] = max_connections
    # Our arguments win over query-string options of the same name.
    options.update(
        db=db,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=health_check_interval,
        client_name=client_name,
        # Never retry a timeout: redis-py's default policy re-sends a command after a
        # slow reply without knowing whether Redis already applied it, turning one
        # INCR, LPUSH or whole MULTI/EXEC into two. A ConnectionError is retried once,
        # immediately, on a new connection: it is what a pooled connection left dead by
        # a Redis restart raises, and for it to have applied the command, Redis would
        # have had to run it, die and accept the new connection in between.
        # (``retry_on_timeout`` keeps its default, False; passing it is deprecated.)
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        retry_on_error=[],
    )
    pool = ConnectionPool(**options)
    client = cast(_Redis, _Redis.from_pool(pool))
    client.auto_pipeline = AutoPipeline.of(client)
    return client


class _Redis(Redis):
    """redis-py's client with the auto-pipeline of its server and database
    (services.common.autopipeline), closed with it."""

    auto_pipeline: AutoPipeline | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pipeline, self.auto_pipeline = self.auto_pipeline, None
        if pipeline is not None:
            await pipeline.aclose()
        await super().aclose(close_connection_pool)


def auto_pipeline_of(client: RedisClient) -> AutoPipeline | None:
    """The auto-pipeline of a client create_redis made (None for another client, a Cluster
    client, or a connection it cannot pipeline: TLS, a credential provider)."""
    return getattr(client, "auto_pipeline", None)


def pipelined_script(client: RedisClient, text: str) -> AsyncScript | PipelinedScript:
    """``client.register_script(text)``, run through the client's auto-pipeline when it has
    one (services.common.autopipeline): for the scripts of a hot path, which concurrent calls
    then send together."""
    script: AsyncScript = client.register_script(text)
    pipeline = auto_pipeline_of(client)
    return script if pipeline is None else pipeline.script(text, script.sha)


async def pipelined_command(client: RedisClient, *args: EncodableT) -> Any:
    """``client.execute_command(*args)``, through the client's auto-pipeline when it has one.
    Not for commands that block or for transactions (see services.common.autopipeline)."""
    pipeline = auto_pipeline_of(client)
    if pipeline is None:
        return await client.execute_command(*args)
    return await pipeline.execute_command(*args)


class _NodeScript(AsyncScript):
    """A script that a node missing it runs with EVAL (which caches it there), rather than
    redis-py's SCRIPT LOAD on every master: that fails while any master is down, so it would
    fail scripts whose keys live on the masters that are up."""

    async def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: Redis | RedisCluster | None = None,
    ) -> Any:
        target = self.registered_client if client is None else client
        keys, values = list(keys or ()), list(args or ())
        try:
            return await target.evalsha(self.sha, len(keys), *keys, *values)
        except NoScriptError:
            text = self.script if isinstance(self.script, str) else bytes(self.script).decode()
            return await target.eval(text, len(keys), *keys, *values)


class _Cluster(RedisCluster):
    # redis-py re-sends a command after a TimeoutError by default, without knowing whether the
    # node already applied it (see create_redis): only errors that prove the command did not
    # run are retried, after the client refreshed its map of the slots.
    ERRORS_ALLOW_RETRY = (ConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    _closed = False

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        # A command after the owner's aclose() would load the slot map again and open new
        # connections that nothing closes any more; so would a load that was waiting for the
        # client's lock when it closed: what it opened is closed again.
        if self._closed:
            raise ConnectionError("the Redis Cluster client is closed")
        await super().initialize(*args, **kwargs)
        if self._closed:
            await self._close_nodes()
            raise ConnectionError("the Redis Cluster client is closed")
        return self

    async def aclose(self) -> None:
        # redis-py also calls aclose() itself, within a command, to drop its connections
        # before it reloads the slot map: only a call from outside a command is final. And it
        # closes nothing while a failed command has left the client marked for that reload:
        # the final one closes every node's connections whatever that state.
        await super().aclose()
        if not _IN_COMMAND.get():
            self._closed = True
            await self._close_nodes()

    async def _close_nodes(self) -> None:
        self._initialize = True  # as redis-py's aclose() leaves it: nothing loaded
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py resolves a command's routing before it loads the slot map; commands sent
        # concurrently to a client that has not loaded it yet break each other's connections
        # (and may run twice). Load it first, once, under the client's own lock.
        if self._initialize:
            await self.initialize()
        with _closed_in_use():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            with _closed_in_use():
                return await execute(*args, **kwargs)

        pipe.execute = guarded  # type: ignore[method-assign]
        return pipe

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]
        return _NodeScript(self, script)

    def pubsub(self, *args: Any, **kwargs: Any) -> ClusterPubSub:
        return _ClusterPubSub(self, *args, **kwargs)


class _ClusterPubSub(ClusterPubSub):
    """A Cluster client's pub/sub whose subscribing, reading and reconnecting fail as the
    client's commands do when a connection is closed under them (_closed_in_use): with a
    ConnectionError, which a follower handles as a lost subscription, not with the
    RuntimeError or AttributeError the library raises then. (The per-node pub/subs of sharded
    subscriptions are the library's own; FrontendService's sharded bus treats any error as a
    lost subscription.)"""

    async def _execute(self, *args: Any, **kwargs: Any) -> Any:
        with _closed_in_use():
            return await super()._execute(*args, **kwargs)  # type: ignore[no-untyped-call]


_IN_COMMAND: ContextVar[bool] = ContextVar("_IN_COMMAND", default=False)


@contextmanager
def _closed_in_use() -> Iterator[None]:
    """Marks the code within as running a command of a Cluster client (see _Cluster.aclose).

    When a node fails, redis-py reloads the slot map and closes the old connections, also
    those other commands are still reading or writing on: those commands then fail inside the
    library with AttributeError or RuntimeError. They are what they look like to the caller,
    a connection lost mid-command (whether the node applied it is unknown, so it is not
    retried): UNAVAILABLE, never INTERNAL."""
    token = _IN_COMMAND.set(True)
    try:
        yield
    except (AttributeError, RuntimeError) as exc:
        raise ConnectionError(f"connection closed while in use ({exc})") from exc
    finally:
        _IN_COMMAND.reset(token)


def create_cluster(
    url: str,
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    client_name: str | None = None,
) -> RedisCluster:
    """An asyncio Redis Cluster client (str replies) seeded by a ``redis+cluster://`` URL.

    It follows MOVED/ASK redirections and refreshes its slot map when a node fails; a command
    is retried (twice, with a short back-off) only on an error that proves it did not run, so
    a failover shorter than that answers UNAVAILABLE rather than waiting. The caller closes it
    with ``aclose()``.
    """
    seeds = cluster_nodes("REDIS_URL", url)
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds.nodes],
        username=seeds.username,
        password=seeds.password,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        max_connections=max_connections,
        client_name=client_name,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
        # A node that lost its master keeps answering for the slots it still covers.
        require_full_coverage=False,
    )


def socket_timeout_of(client: RedisClient) -> float | None:
    """How long ``client`` waits for a reply (None: forever)."""
    if isinstance(client, RedisCluster):
        timeout = client.nodes_manager.connection_kwargs.get("socket_timeout")
    else:
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    return None if timeout is None else float(timeout)


def unavailable_reason(exc: BaseException) -> str | None:
    """Why Redis cannot serve a command right now (a retry later may succeed), else None.

    Unreachable or still loading the dataset; out of memory (``maxmemory`` with the
    ``noeviction`` policy refuses writes, so nothing is half-written and nothing is evicted);
    refusing writes because it cannot persist them (MISCONF) or is a replica (READONLY). Both
    edges answer these UNAVAILABLE / 503, never INTERNAL / 500. A script refused part-way by
    one of them reports it inside an ``ERR Error running script`` reply, hence the text checks.
    """
    if isinstance(exc, ConnectionError | RedisTimeoutError):
        return "the data store is unreachable; retry"
    if isinstance(exc, CLUSTER_ERRORS):
        return "part of the data store is unavailable; retry"
    if not isinstance(exc, RedisError):
        return None
    text = str(exc)
    if isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and "OOM " in text):
        return "the data store is full; retry later"
    if isinstance(exc, ReadOnlyError) or (
        isinstance(exc, ResponseError) and ("MISCONF " in text or "READONLY " in text)
    ):
        return "the data store refuses writes for now; retry later"
    return None
