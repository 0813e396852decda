"""Cluster mode's plumbing on a real 3-master Valkey Cluster: settings, the client, the outbox
relay on a hash-tagged stream, and what a lost master looks like to a service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import uvloop
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisClusterException

from services.common.delivery import OutboxConfig, Relay
from services.common.outbox import OUTBOX_LUA, outbox_lua_args
from services.common.redis import create_cluster, socket_timeout_of, unavailable_reason
from services.common.settings import CommonSettings, ConfigError, cluster_nodes
from services.launcher.valkey import EmbeddedValkey
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from tests.helpers.aof import AOF_WINDOW_SECONDS


def test_cluster_nodes_from_either_variable() -> None:
    nodes = "127.0.0.1:7000, 127.0.0.1:7001,[::1]:7002"
    settings = CommonSettings.from_env({"REDIS_CLUSTER_NODES": nodes})
    assert settings.redis_cluster
    assert cluster_nodes("X", settings.redis_url).nodes == (
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
        ("::1", 7002),
    )
    secured = cluster_nodes("X", "redis+cluster://:s%40cret@10.0.0.1:6379,10.0.0.2:6379")
    assert secured.password == "s@cret"
    assert secured.username is None
    assert len(secured.nodes) == 2
    assert "s@cret" not in repr(secured)
    from_url = CommonSettings.from_env({"REDIS_URL": "redis+cluster://10.0.0.1:6379"})
    assert from_url.redis_cluster
    assert not CommonSettings.from_env({"REDIS_URL": "redis://10.0.0.1:6379"}).redis_cluster
    # REDIS_CLUSTER_NODES wins over a REDIS_URL left in the environment.
    both = CommonSettings.from_env({"REDIS_URL": "redis://x:1", "REDIS_CLUSTER_NODES": nodes})
    assert both.redis_cluster


@pytest.mark.parametrize(
    "environ",
    [
        {"REDIS_CLUSTER_NODES": "127.0.0.1"},
        {"REDIS_CLUSTER_NODES": "127.0.0.1:70000"},
        {"REDIS_CLUSTER_NODES": "127.0.0.1:7000,,127.0.0.1:7001"},
        {"REDIS_URL": "redis+cluster://"},
        {"REDIS_URL": "redis+cluster://:secret@127.0.0.1:7000,:secret@127.0.0.1"},
    ],
)
def test_bad_cluster_nodes_are_refused_by_name(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as error:
        CommonSettings.from_env(environ)
    assert next(iter(environ)) in str(error.value)
    assert "secret" not in str(error.value)


async def test_client_spreads_keys_and_refuses_cross_slot_scripts(cluster_url: str) -> None:
    client = create_cluster(cluster_url, client_name="test")
    try:
        assert socket_timeout_of(client) == 2.0
        for index in range(30):
            await client.set(f"k{index}", index)
        masters = {
            client.get_node_from_key(f"k{index}").name  # type: ignore[union-attr]
            for index in range(30)
        }
        assert len(masters) == 3
        assert await client.get("k17") == "17"
        with pytest.raises(RedisClusterException):
            await client.eval("return 1", 2, "a", "b")
        # Keys sharing a hash tag go to one slot, so one script may touch both.
        assert key_slot(b"m:outbox:{b1}") == key_slot(b"m:outbox:{b1}:dead")
        await client.eval(
            "redis.call('SET', KEYS[1], 1); return redis.call('SET', KEYS[2], 2)",
            2,
            "x:{t}",
            "y:{t}",
        )
    finally:
        await client.aclose()


async def test_a_new_client_serves_concurrent_first_commands(cluster_url: str) -> None:
    # As a service starts: relays, collectors and requests all send their first commands at
    # once, before the client has loaded the cluster's slot map.
    client = create_cluster(cluster_url, client_name="test")
    errors: list[BaseException] = []

    async def first_use(index: int) -> None:
        stream = f"t:s:{{b{index}}}"
        try:
            await client.xgroup_create(stream, "g", id="0", mkstream=True)
            for _ in range(3):
                await client.xreadgroup("g", "c", {stream: ">"}, count=10, block=50)
        except Exception as exc:
            errors.append(exc)

    try:
        await asyncio.gather(*(first_use(index) for index in range(16)))
        assert errors == []
        assert sum([await client.exists(f"t:s:{{b{index}}}") for index in range(16)]) == 16
    finally:
        await client.aclose()


async def test_relay_delivers_a_hash_tagged_stream_on_the_cluster(cluster_url: str) -> None:
    client = create_cluster(cluster_url, client_name="test")
    config = OutboxConfig(
        stream="t:outbox:{b3}", group="test-relay", dead_letter_stream="t:outbox:{b3}:dead"
    )
    delivered: list[str] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        delivered.append(fields["n"])

    # A business write and its event in one script: one slot through the shared tag.
    write = OUTBOX_LUA + "redis.call('SET', KEYS[1], ARGV[1]); outbox_xadd(KEYS[2], ARGV, 2)"
    try:
        for index in range(5):
            args = outbox_lua_args({"n": str(index)})
            await client.eval(write, 2, f"t:item:{{b3}}:{index}", config.stream, "v", *args)
        relay = Relay(client, config, "c1", handler)
        task = asyncio.create_task(relay.run())
        for _ in range(250):
            if len(delivered) == 5:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sorted(delivered) == [str(index) for index in range(5)]
        pending = await client.xpending(config.stream, config.group)
        assert pending["pending"] == 0
    finally:
        await client.aclose()


async def test_a_lost_master_is_unavailable_then_recovers(tmp_path: Path) -> None:
    cluster = EmbeddedValkeyCluster(tmp_path / "cluster", masters=3, node_timeout_ms=500)
    cluster.start()
    client = create_cluster(cluster.url, client_name="test")
    try:
        await client.initialize()
        victim = cluster.masters[1]

        def on_victim(key: str) -> bool:
            return client.get_node_from_key(key).port == victim.port  # type: ignore[union-attr]

        key = next(f"k{index}" for index in range(1000) if on_victim(f"k{index}"))
        other = next(f"o{index}" for index in range(1000) if not on_victim(f"o{index}"))
        await client.set(key, "before")
        await asyncio.sleep(AOF_WINDOW_SECONDS)  # on the AOF before the kill
        victim.kill()
        with pytest.raises(Exception) as error:
            await client.get(key)
        assert unavailable_reason(error.value) is not None, repr(error.value)
        # Keys on the other masters are still served, scripts too (never loaded before: the
        # node that serves the keys caches the script, whatever the other masters' state).
        await client.set(other, "still")
        script = client.register_script("return redis.call('GET', KEYS[1])")
        assert await script(keys=[other]) == "still"
        assert await script(keys=[other]) == "still"  # now by its sha
        victim.start()
        cluster.wait_ok()
        for _ in range(100):
            try:
                assert await client.get(key) == "before"  # AOF kept it
                break
            except Exception as exc:
                assert unavailable_reason(exc) is not None, repr(exc)
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the restarted master never served its key again")
    finally:
        await client.aclose()
        cluster.stop()


async def test_a_connection_closed_under_a_command_is_unavailable(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a command in flight meets when the client's slot-map reload closes its connection.
    client = create_cluster(cluster_url, client_name="test")
    try:
        await client.set("k", "v")

        async def closed_under_it(self: object, *args: object, **kwargs: object) -> None:
            raise AttributeError("'NoneType' object has no attribute 'writelines'")

        monkeypatch.setattr(RedisCluster, "execute_command", closed_under_it)
        with pytest.raises(ConnectionError) as error:
            await client.get("k")
        assert unavailable_reason(error.value) is not None
        monkeypatch.undo()
        monkeypatch.setattr(ClusterPipeline, "execute", closed_under_it)
        async with client.pipeline() as pipe:
            pipe.get("k")
            with pytest.raises(ConnectionError):
                await pipe.execute()
    finally:
        monkeypatch.undo()
        await client.aclose()


async def test_with_replicas_a_lost_master_fails_over_without_losing_acknowledged_writes(
    tmp_path: Path,
) -> None:
    cluster = EmbeddedValkeyCluster(
        tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=500
    )
    cluster.start()
    client = create_cluster(cluster.url, client_name="test")
    try:
        await client.initialize()
        victim = cluster.masters[0]

        def on_victim(key: str) -> bool:
            return client.get_node_from_key(key).port == victim.port  # type: ignore[union-attr]

        keys = [f"k{index}" for index in range(200) if on_victim(f"k{index}")][:20]
        for key in keys:
            await client.set(key, key)
        # A write is acknowledged by the master before its replica has it (asynchronous
        # replication): the test waits for the copy, so what it checks after the failover is
        # the promotion and the client following it.
        replica = cluster.nodes[3]  # the replica of master 0
        await asyncio.to_thread(_wait_replicated, victim, replica)
        victim.kill()
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                assert [await client.get(key) for key in keys] == keys
                await client.set(keys[0], "after")
                break
            except Exception as exc:
                assert unavailable_reason(exc) is not None, repr(exc)
                assert asyncio.get_running_loop().time() < deadline, "no failover"
                await asyncio.sleep(0.1)
        promoted = client.get_node_from_key(keys[0])
        assert promoted is not None and promoted.port != victim.port
        assert await client.get(keys[0]) == "after"
    finally:
        await client.aclose()
        cluster.stop()


def _wait_replicated(master: EmbeddedValkey, replica: EmbeddedValkey) -> None:
    with (
        redis.Redis(port=master.port, decode_responses=True) as primary,
        redis.Redis(port=replica.port, decode_responses=True) as secondary,
    ):
        for _ in range(200):
            offset = primary.info("replication")["master_repl_offset"]
            if secondary.info("replication").get("slave_repl_offset", -1) >= offset:
                return
            time.sleep(0.02)
    pytest.fail("the replica never caught up")


async def test_closing_after_a_failed_command_closes_every_connection(tmp_path: Path) -> None:
    # A failed command leaves redis-py's client marked for a reload of its slot map, and its
    # aclose() then closed nothing: the connections stayed open until the garbage collector.
    cluster = EmbeddedValkeyCluster(tmp_path / "cluster", masters=3, node_timeout_ms=500)
    cluster.start()
    client = create_cluster(cluster.url, client_name="closing")
    try:
        await client.initialize()
        victim = cluster.masters[2]
        keys = [f"k{index}" for index in range(100)]
        for key in keys:  # a connection to every master
            await client.set(key, "v")
        key = next(k for k in keys if client.get_node_from_key(k).port == victim.port)  # type: ignore[union-attr]
        victim.kill()
        with pytest.raises(ConnectionError):
            await client.get(key)
        await client.aclose()
        for master in cluster.masters[:2]:
            with redis.Redis(port=master.port, decode_responses=True) as node:
                assert "closing" not in {c["name"] for c in node.client_list()}
        # Nor does a command after aclose() open new ones.
        with pytest.raises(ConnectionError, match="closed"):
            await client.get(keys[0])
        for master in cluster.masters[:2]:
            with redis.Redis(port=master.port, decode_responses=True) as node:
                assert "closing" not in {c["name"] for c in node.client_list()}
    finally:
        await client.aclose()
        cluster.stop()


async def test_a_slot_map_load_waiting_when_the_client_closes_leaves_nothing_open(
    valkey_cluster: EmbeddedValkeyCluster,
) -> None:
    # Two first commands: one loads the slot map, the other waits for the client's lock; the
    # owner closes the client meanwhile. Neither load may leave connections behind.
    valkey_cluster.wait_ok()
    client = create_cluster(valkey_cluster.url, client_name="closing-race")
    loads = [asyncio.create_task(client.initialize()) for _ in range(2)]
    await asyncio.sleep(0)
    await client.aclose()
    outcomes = await asyncio.gather(*loads, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes), outcomes
    for master in valkey_cluster.masters:
        with redis.Redis(port=master.port, decode_responses=True) as node:
            assert "closing-race" not in {c["name"] for c in node.client_list()}


def test_a_pubsub_connection_closed_under_it_fails_as_a_connection_error(tmp_path: Path) -> None:
    # On uvloop (the services' loop), writing to a connection that the client's slot-map
    # reload closed under a pub/sub raises RuntimeError inside redis-py; a follower of the
    # revocation channel handles only Redis errors, and NotificationService exited on it.
    cluster = EmbeddedValkeyCluster(tmp_path / "cluster", masters=3)
    cluster.start()

    async def scenario() -> None:
        client = create_cluster(cluster.url, client_name="pubsub")
        try:
            await client.initialize()
            pubsub = client.pubsub()
            await pubsub.subscribe("revocations")
            connection = pubsub.connection
            assert connection is not None
            connection._writer.transport.close()
            await asyncio.sleep(0.05)  # the transport's handle is closed now
            with pytest.raises(ConnectionError, match="closed while in use"):
                await pubsub.ping()
            await pubsub.aclose()
        finally:
            await client.aclose()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(scenario())
    finally:
        cluster.stop()
