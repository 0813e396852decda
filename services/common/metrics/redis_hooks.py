"""Redis command latency and errors, by command name, for a redis.asyncio client.

:func:`instrument_redis` wraps the client's ``execute_command`` (every command, script and
``EVALSHA`` goes through it), its auto-pipeline's (services.common.autopipeline: each command
counted on its own) and the ``execute`` of the pipelines it creates (counted once, as
``PIPELINE`` or ``MULTI``). Commands outside :data:`KNOWN_COMMANDS` are labelled ``OTHER``, so
the label set stays bounded whatever is sent. redis-py 8 has no metrics hook of its own for
asyncio clients (its observability module targets OpenTelemetry), hence the thin wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any, Final, TypeVar

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.metrics import families as f

__all__ = ["KNOWN_COMMANDS", "instrument_redis"]

KNOWN_COMMANDS: Final = frozenset(
    """
    GET SET DEL EXISTS EXPIRE PEXPIRE TTL PTTL INCR INCRBY DECR MGET MSET SETNX GETDEL
    HGET HSET HDEL HGETALL HMGET HINCRBY HEXISTS HLEN SADD SREM SMEMBERS SISMEMBER SCARD
    ZADD ZREM ZRANGE ZREVRANGE ZRANGEBYSCORE ZREVRANGEBYSCORE ZCARD ZSCORE ZCOUNT ZREMRANGEBYSCORE
    ZRANGESTORE LPUSH RPUSH LRANGE LTRIM LLEN XADD XREADGROUP XREAD XACK XAUTOCLAIM XCLAIM XPENDING
    XINFO XLEN XDEL XTRIM XRANGE XREVRANGE XGROUP EVAL EVALSHA SCRIPT SCAN PING INFO PUBLISH
    WATCH UNWATCH TIME FLUSHALL FLUSHDB DBSIZE CLIENT
    """.split()
)
_R = TypeVar("_R", redis.asyncio.Redis, redis.asyncio.RedisCluster)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, RedisTimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError):
        return "connection"
    if isinstance(exc, ResponseError):
        return "response"
    return "other"


def _command_name(args: tuple[Any, ...]) -> str:
    first = args[0] if args else ""
    name = (first.decode() if isinstance(first, bytes) else str(first)).split(" ", 1)[0].upper()
    return name if name in KNOWN_COMMANDS else "OTHER"


class _Observed:
    """Children of the histogram per command, created on first use (bounded by the list)."""

    def __init__(self) -> None:
        self._observe: dict[str, Callable[[float], None]] = {}

    def observe(self, command: str, seconds: float) -> None:
        observe = self._observe.get(command)
        if observe is None:
            observe = f.REDIS_DURATION.labels(command).observe
            self._observe[command] = observe
        observe(seconds)


_OBSERVED: Final = _Observed()


def _timed(name_of: Callable[..., str], call: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(*args: Any, **options: Any) -> Any:
        command = name_of(*args)
        start = perf_counter()
        try:
            return await call(*args, **options)
        except BaseException as exc:
            if isinstance(exc, Exception):
                f.REDIS_ERRORS.labels(command, _error_kind(exc)).inc()
            raise
        finally:
            _OBSERVED.observe(command, perf_counter() - start)

    return timed


def instrument_redis(client: _R) -> _R:
    """Observe every command of ``client`` (idempotent); returns the same client."""
    if getattr(client, "_missive_metrics", False):
        return client
    client.execute_command = _timed(  # type: ignore[method-assign]
        lambda *args: _command_name(args), client.execute_command
    )
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        transaction = getattr(pipe, "is_transaction", getattr(pipe, "_transaction", False))
        name = "MULTI" if transaction else "PIPELINE"
        pipe.execute = _timed(lambda *_: name, pipe.execute)  # type: ignore[method-assign]
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    auto_pipeline = getattr(client, "auto_pipeline", None)  # services.common.autopipeline
    if auto_pipeline is not None:
        auto_pipeline.execute_command = _timed(
            lambda *args: _command_name(args), auto_pipeline.execute_command
        )
    client._missive_metrics = True  # type: ignore[attr-defined]
    return client
