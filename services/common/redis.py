"""The one way services create their Redis client: bounded timeouts and no automatic retries."""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "FIXED_WINDOW_HIT_LUA",
    "create_redis",
    "unavailable_reason",
]

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
    return Redis.from_pool(pool)


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
