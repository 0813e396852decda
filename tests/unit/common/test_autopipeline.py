"""The auto-pipeline (services.common.autopipeline) against the real Valkey: one request per
loop tick, errors per command, bounded waits without a re-send, lost connections, scripts."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import redis
import redis.exceptions

from services.common.autopipeline import AutoPipeline
from services.common.redis import auto_pipeline_of, create_redis, unavailable_reason
from services.launcher.valkey import EmbeddedValkey
from tests.helpers.aof import AOF_WINDOW_SECONDS
from tests.helpers.tcp_proxy import DelayProxy


@contextmanager
def _direct(url: str, db: int = 0) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, db=db, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def pipeline(redis_url: str) -> AsyncIterator[AutoPipeline]:
    client = create_redis(redis_url, 4, client_name="pipelined")
    found = auto_pipeline_of(client)
    assert found is not None
    yield found
    await client.aclose()


async def test_commands_of_one_tick_are_one_request_answered_in_order(
    pipeline: AutoPipeline, redis_url: str
) -> None:
    assert await pipeline.execute_command("PING") == "PONG"  # connected
    before = pipeline.requests
    replies = await asyncio.gather(*(pipeline.execute_command("INCR", "n") for _ in range(50)))
    assert replies == list(range(1, 51))  # each caller got its own reply, in order
    assert pipeline.requests == before + 1
    # Sequential commands are a request each.
    assert await pipeline.execute_command("INCR", "n") == 51
    assert await pipeline.execute_command("GET", "n") == "51"
    assert pipeline.requests == before + 3


async def test_the_handshake_selects_the_database_and_names_the_connection(
    pipeline: AutoPipeline, redis_url: str
) -> None:
    await pipeline.execute_command("SET", "where", "db4")
    assert await pipeline.execute_command("CLIENT", "GETNAME") == "pipelined"
    with _direct(redis_url, 4) as db4, _direct(redis_url, 0) as db0:
        assert db4.get("where") == "db4"
        assert db0.get("where") is None


async def test_an_error_reply_fails_only_its_own_command(pipeline: AutoPipeline) -> None:
    await pipeline.execute_command("SET", "text", "not a number")
    replies = await asyncio.gather(
        pipeline.execute_command("INCR", "counter"),
        pipeline.execute_command("INCR", "text"),
        pipeline.execute_command("EVALSHA", "0" * 40, 0),
        pipeline.execute_command("NO-SUCH-COMMAND"),
        pipeline.execute_command("INCR", "counter"),
        return_exceptions=True,
    )
    assert replies[0] == 1 and replies[4] == 2
    assert isinstance(replies[1], redis.exceptions.ResponseError)
    assert "not an integer" in str(replies[1])
    assert isinstance(replies[2], redis.exceptions.NoScriptError)
    assert isinstance(replies[3], redis.exceptions.ResponseError)
    assert await pipeline.execute_command("GET", "counter") == "2"  # the connection goes on


async def test_a_script_is_loaded_with_eval_where_it_is_missing(
    pipeline: AutoPipeline, redis_url: str
) -> None:
    text = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
    sha = hashlib.sha1(text.encode()).hexdigest()
    script = pipeline.script(text, sha)
    await pipeline.execute_command("SCRIPT", "FLUSH")
    assert await script(keys=["runs"], args=["a"]) == ["runs", "a", 1]  # EVAL: ran once
    assert await pipeline.execute_command("SCRIPT", "EXISTS", sha) == [1]
    replies = await asyncio.gather(*(script(keys=["runs"], args=[n]) for n in range(3)))
    assert replies == [["runs", "0", 2], ["runs", "1", 3], ["runs", "2", 4]]


async def test_a_reply_later_than_the_timeout_fails_the_batch_and_is_not_resent(
    redis_url: str,
) -> None:
    async with DelayProxy.for_url(redis_url) as proxy:
        pipeline = AutoPipeline(host="127.0.0.1", port=proxy.port, timeout=0.3, connect_timeout=1)
        try:
            assert await pipeline.execute_command("PING") == "PONG"
            proxy.delay_next_reply(1.0)  # Valkey applies the batch at once; its replies are late
            started = time.monotonic()
            results = await asyncio.gather(
                *(pipeline.execute_command("INCR", "slow") for _ in range(3)),
                return_exceptions=True,
            )
            waited = time.monotonic() - started
            assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
            assert 0.25 < waited < 0.9
            # The next command opens a new connection and is answered; nothing was re-sent.
            assert await pipeline.execute_command("GET", "slow") == "3"
            assert proxy.connections == 2
        finally:
            await pipeline.aclose()
    with _direct(redis_url) as direct:
        assert direct.get("slow") == "3"


async def test_a_connection_lost_mid_batch_fails_its_commands_without_a_resend(
    redis_url: str,
) -> None:
    proxy = DelayProxy.for_url(redis_url)
    await proxy.start()
    pipeline = AutoPipeline(host="127.0.0.1", port=proxy.port, timeout=5, connect_timeout=1)
    try:
        assert await pipeline.execute_command("PING") == "PONG"
        proxy.delay_next_reply(5.0)  # applied, but the replies never arrive
        calls = [asyncio.ensure_future(pipeline.execute_command("INCR", "lost")) for _ in range(3)]
        with _direct(redis_url) as direct:
            for _ in range(100):
                if direct.get("lost") == "3":
                    break
                await asyncio.sleep(0.02)
            await proxy.close()  # the connection drops with the batch unanswered
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)
            assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
            assert direct.get("lost") == "3"  # applied once each, never re-sent
        with pytest.raises(redis.exceptions.ConnectionError):  # the proxy is gone
            await pipeline.execute_command("GET", "lost")
    finally:
        await pipeline.aclose()
        await proxy.close()


async def test_a_restarted_server_gets_a_new_connection(fresh_valkey: EmbeddedValkey) -> None:
    client = create_redis(fresh_valkey.url, 0)
    pipeline = auto_pipeline_of(client)
    assert pipeline is not None
    try:
        assert await pipeline.execute_command("INCR", "counter") == 1
        await asyncio.sleep(AOF_WINDOW_SECONDS)  # on the AOF before the kill
        fresh_valkey.kill()
        await asyncio.sleep(0.1)  # the loop sees the connection close
        with pytest.raises(redis.exceptions.ConnectionError):  # nothing listens
            await pipeline.execute_command("INCR", "counter")
        fresh_valkey.restart()
        assert await pipeline.execute_command("INCR", "counter") == 2  # the AOF kept 1
    finally:
        await client.aclose()


async def test_a_caller_that_gives_up_before_the_write_sends_nothing(
    pipeline: AutoPipeline,
) -> None:
    assert await pipeline.execute_command("PING") == "PONG"
    kept = asyncio.ensure_future(pipeline.execute_command("INCR", "kept"))
    dropped = asyncio.ensure_future(pipeline.execute_command("INCR", "dropped"))
    await asyncio.sleep(0)  # both queued for this tick's request
    dropped.cancel()
    assert await kept == 1
    assert await pipeline.execute_command("EXISTS", "dropped") == 0


async def test_a_closed_pipeline_refuses_commands(pipeline: AutoPipeline) -> None:
    assert await pipeline.execute_command("PING") == "PONG"
    await pipeline.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await pipeline.execute_command("PING")


def test_clients_it_cannot_pipeline_keep_redis_py_s_path() -> None:
    assert auto_pipeline_of(create_redis("rediss://127.0.0.1:6380", 0)) is None
    plain = create_redis("redis://127.0.0.1:6380", 0)
    assert auto_pipeline_of(plain) is not None
    assert auto_pipeline_of(redis.asyncio.Redis()) is None  # not made by create_redis


async def test_a_reply_that_is_not_utf8_fails_only_its_command(
    pipeline: AutoPipeline, redis_url: str
) -> None:
    with _direct(redis_url, 4) as db4:
        db4.set("binary", b"\xff\xfe")
    replies = await asyncio.gather(
        pipeline.execute_command("GET", "binary"),
        pipeline.execute_command("INCR", "after"),
        return_exceptions=True,
    )
    assert isinstance(replies[0], UnicodeDecodeError)
    assert replies[1] == 1


async def test_a_caller_giving_up_while_connecting_leaves_the_others_connected(
    pipeline: AutoPipeline,
) -> None:
    first = asyncio.ensure_future(pipeline.execute_command("INCR", "c"))
    second = asyncio.ensure_future(pipeline.execute_command("INCR", "c"))
    await asyncio.sleep(0)  # both wait for the connection being opened
    first.cancel()
    assert await second == 1
    assert first.cancelled()
    assert await pipeline.execute_command("GET", "c") == "1"


async def test_closing_while_connecting_fails_the_waiting_commands(
    pipeline: AutoPipeline,
) -> None:
    waiting = asyncio.ensure_future(pipeline.execute_command("PING"))
    await asyncio.sleep(0)
    await pipeline.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await waiting


async def test_the_handshake_authenticates_with_the_url_s_credentials(
    fresh_valkey: EmbeddedValkey,
) -> None:
    port = fresh_valkey.port
    with _direct(fresh_valkey.url) as admin:
        admin.acl_setuser(
            "missive", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
        )
    good = create_redis(f"redis://missive:s3cret@127.0.0.1:{port}", 2)
    bad = create_redis(f"redis://missive:wrong@127.0.0.1:{port}", 2)
    try:
        pipeline, refused = auto_pipeline_of(good), auto_pipeline_of(bad)
        assert pipeline is not None and refused is not None
        assert await pipeline.execute_command("ACL", "WHOAMI") == "missive"
        with pytest.raises(redis.exceptions.ConnectionError) as denied:
            await refused.execute_command("PING")
        assert isinstance(denied.value, redis.exceptions.AuthenticationError)
        assert unavailable_reason(denied.value) is not None  # UNAVAILABLE, not INTERNAL
    finally:
        await good.aclose()
        await bad.aclose()


async def test_a_connection_the_server_closed_is_replaced_and_nothing_hangs(
    pipeline: AutoPipeline, redis_url: str
) -> None:
    client_id = await pipeline.execute_command("CLIENT", "ID")
    with _direct(redis_url) as admin:
        assert admin.client_kill_filter(_id=client_id) == 1
    # Written before or after the loop sees the close: answered, or refused, never left waiting.
    try:
        first = await asyncio.wait_for(pipeline.execute_command("INCR", "k"), 1)
    except redis.exceptions.ConnectionError:
        first = None
    assert first in (None, 1)
    await asyncio.sleep(0.05)
    assert await pipeline.execute_command("CLIENT", "ID") != client_id  # a new connection
    assert await pipeline.execute_command("GET", "k") in ("1", None)
