"""create_redis: str replies, the caller's db, bounded timeouts, and no re-sent writes."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.exceptions

from services.common.ports import free_port
from services.common.redis import create_redis, unavailable_reason
from services.launcher.valkey import EmbeddedValkey
from tests.helpers.aof import AOF_WINDOW_SECONDS
from tests.helpers.tcp_proxy import DelayProxy


def _direct(url: str, db: int = 0) -> redis.Redis:
    return redis.Redis.from_url(url, db=db, decode_responses=True)


async def test_decodes_replies_and_uses_bounded_timeouts(redis_url: str) -> None:
    client = create_redis(redis_url, 0)
    try:
        await client.set("greeting", "hola")
        assert await client.get("greeting") == "hola"
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 2.0
        assert kwargs["socket_connect_timeout"] == 2.0
        assert kwargs["health_check_interval"] > 0
    finally:
        await client.aclose()


async def test_retry_policy_never_retries_timeouts(redis_url: str) -> None:
    client = create_redis(redis_url, 1)
    try:
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() == 1
        assert retry._supported_errors == (redis.exceptions.ConnectionError,)
        assert not issubclass(redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)
        await client.ping()
        # Every connection the pool makes carries the same policy.
        pool = client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        assert connection.retry.get_retries() == 1
        assert connection.retry_on_timeout is False
        assert connection.retry_on_error == []
    finally:
        await client.aclose()


async def test_pooled_connections_survive_a_redis_restart(fresh_valkey: EmbeddedValkey) -> None:
    client = create_redis(fresh_valkey.url, 0)
    try:
        await asyncio.gather(*(client.incr("counter") for _ in range(5)))  # several pooled
        await asyncio.sleep(AOF_WINDOW_SECONDS)  # on the AOF before the kill
        fresh_valkey.kill()
        fresh_valkey.restart()
        # Each stale connection is replaced on first use instead of failing the request.
        assert await asyncio.gather(*(client.incr("counter") for _ in range(5)))
        assert int(await client.get("counter") or 0) == 10
    finally:
        await client.aclose()


@pytest.mark.parametrize("suffix", ["/5", "?db=5"])
async def test_db_argument_overrides_the_url(redis_url: str, suffix: str) -> None:
    client = create_redis(redis_url + suffix, 2)
    try:
        await client.set("where", "db2")
    finally:
        await client.aclose()
    with _direct(redis_url, 2) as db2, _direct(redis_url, 5) as db5:
        assert db2.get("where") == "db2"
        assert db5.get("where") is None


async def test_timed_out_write_is_not_resent(redis_url: str) -> None:
    async with DelayProxy.for_url(redis_url) as proxy:
        client = create_redis(proxy.url, 0, socket_timeout=0.3, connect_timeout=1.0)
        try:
            assert await client.ping()
            proxy.delay_next_reply(1.0)  # Valkey applies INCR at once; only the reply is late
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.incr("counter")
        finally:
            await client.aclose()
        assert proxy.connections == 1
    with _direct(redis_url) as direct:
        assert direct.get("counter") == "1"


async def test_redis_py_default_would_apply_the_write_twice(redis_url: str) -> None:
    """The hazard create_redis avoids, shown with the same proxy and redis-py's defaults."""
    async with DelayProxy.for_url(redis_url) as proxy:
        # The constructor path gets redis-py's default policy (10 retries on timeouts);
        # Redis.from_url happens to get none, so the default depends on how you build it.
        client = redis.asyncio.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.3)
        try:
            assert await client.ping()
            proxy.delay_next_reply(1.0)
            assert await client.incr("counter") == 2  # silently re-sent after the timeout
        finally:
            await client.aclose()
        assert proxy.connections == 2
    with _direct(redis_url) as direct:
        assert direct.get("counter") == "2"


async def test_unreachable_server_fails_fast() -> None:
    client = create_redis(f"redis://127.0.0.1:{free_port()}", 0)
    started = time.monotonic()
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()
    assert time.monotonic() - started < 1.0


async def test_unix_socket_url() -> None:
    # A short directory: unix socket paths are limited to ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="vk") as tmp:
        with EmbeddedValkey(Path(tmp), unix_socket=Path(tmp) / "v.sock") as server:
            assert server.unix_url is not None
            client = create_redis(server.unix_url + "?db=9", 3)
            try:
                await client.set("via", "unix")
                assert await client.get("via") == "unix"
            finally:
                await client.aclose()
            with _direct(server.url, 3) as direct:
                assert direct.get("via") == "unix"


def test_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="redis://, rediss://, unix://"):
        create_redis("valkey+unix:///tmp/valkey.sock", 0)


async def test_refusals_that_a_retry_can_outlast_are_told_apart(
    fresh_valkey: EmbeddedValkey,
) -> None:
    client = create_redis(fresh_valkey.url, 0)
    try:
        await client.config_set("maxmemory", "1")
        with pytest.raises(redis.exceptions.RedisError) as direct:
            await client.set("k", "v")
        with pytest.raises(redis.exceptions.RedisError) as scripted:
            await client.eval("return redis.call('SET', KEYS[1], 'v')", 1, "k")
        with pytest.raises(redis.exceptions.RedisError) as wrong_type:
            await client.config_set("maxmemory", "0")
            await client.set("s", "v")
            await client.lpush("s", "x")
    finally:
        await client.aclose()
    assert unavailable_reason(direct.value) == "the data store is full; retry later"
    assert unavailable_reason(scripted.value) == "the data store is full; retry later"
    assert unavailable_reason(wrong_type.value) is None  # a bug, not an outage
    assert unavailable_reason(redis.exceptions.ConnectionError("gone")) is not None
    assert unavailable_reason(ValueError("OOM ")) is None
