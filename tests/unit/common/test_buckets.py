"""The bucket scheme of the cluster layouts (services.common.buckets), the dead letters of a
sharded outbox as one list (services.common.bucket_dead_letters), and the shell's wiring of a
sharded outbox (Start.bucket_outbox), against the real 3-master Valkey Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from services.common.app import Start
from services.common.auth import ensure_keys
from services.common.bootstrap import Security
from services.common.bucket_dead_letters import BucketDeadLetters
from services.common.buckets import BUCKETS, bucket_outbox_configs, email_bucket, spread_tags
from services.common.dead_letters import DeadLetters
from services.common.delivery import OutboxConfig
from services.common.domain import InvalidArgument
from services.common.paging import encode_offset
from tests.unit.common.test_app import GRPC_PORT_ENV, Settings

OUTBOX = OutboxConfig(stream="t:outbox", group="test-relay", dead_letter_stream="t:outbox:dead")
TAGS = spread_tags("t")
CONFIGS = bucket_outbox_configs(
    dataclasses.replace(OUTBOX, claim_idle_ms=7_000, max_attempts=3),
    ("t:outbox:{" + tag + "}" for tag in TAGS),
)


# -- the scheme --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["t", "u", "n", "mb"])
def test_spread_tags_put_bucket_k_in_the_kth_range_of_slots(prefix: str) -> None:
    tags = spread_tags(prefix)
    assert len(tags) == BUCKETS == 16 and all(t.startswith(prefix) for t in tags)
    slots = [key_slot(tag.encode()) for tag in tags]
    assert [slot * BUCKETS // REDIS_CLUSTER_HASH_SLOTS for slot in slots] == list(range(BUCKETS))
    # 3 masters owning equal ranges of slots hold 5 or 6 buckets each.
    owners = [slot * 3 // REDIS_CLUSTER_HASH_SLOTS for slot in slots]
    assert sorted(owners.count(m) for m in range(3)) == [5, 5, 6]
    for bad in (0, REDIS_CLUSTER_HASH_SLOTS + 1):
        with pytest.raises(ValueError, match="count"):
            spread_tags(prefix, bad)


def test_email_buckets_are_stable_and_well_mixed() -> None:
    # Pinned: a bucket names where existing data lives, so it never changes.
    assert email_bucket("alice@example.com") == 10
    assert {email_bucket(f"user{n:02d}@example.com") for n in range(1, 41)} == set(range(BUCKETS))


def test_bucket_outbox_configs_keep_the_group_and_tuning_and_pair_each_stream() -> None:
    assert len(CONFIGS) == BUCKETS
    assert {(c.group, c.claim_idle_ms, c.max_attempts) for c in CONFIGS} == {
        ("test-relay", 7_000, 3)
    }
    for config, tag in zip(CONFIGS, TAGS, strict=True):
        assert config.stream == f"t:outbox:{{{tag}}}"
        assert config.dead_letter_stream == config.stream + ":dead"
        assert key_slot(config.stream.encode()) == key_slot(config.dead_letter_stream.encode())


# -- the dead letters of every bucket as one list ----------------------------------------------


async def test_dead_letters_of_every_bucket_behind_one_api(cluster: RedisCluster) -> None:
    configs = CONFIGS[:3]
    dead = BucketDeadLetters(cluster, configs)
    # Ids are per stream: several buckets hold 1000-0.
    layout = {0: ["1000-0", "1001-0"], 1: ["1000-0", "1000-1"], 2: ["1000-0"]}
    for index, ids in layout.items():
        for entry_id in ids:
            fields: dict[Any, Any] = {"item": f"{index}/{entry_id}", "dead_letter.reason": "x"}
            await cluster.xadd(configs[index].dead_letter_stream, fields, id=entry_id)
    pages = []
    token = ""
    while True:
        page = await dead.page(2, token)
        assert page.total == 5
        pages.append([d.fields["item"] for d in page.dead_letters])
        token = page.next_page_token
        if not token:
            break
    # Entry-id order, then bucket order: nothing skipped or listed twice across pages.
    assert pages == [["0/1000-0", "1/1000-0"], ["2/1000-0", "1/1000-1"], ["0/1001-0"]]
    # The last two: a token of another list, and one naming bucket 3 of 3.
    for bad in ("garbage!", encode_offset(3), "YjE6MTAwMC0wOjM"):
        with pytest.raises(InvalidArgument, match="page_token"):
            await dead.page(2, bad)
    with pytest.raises(InvalidArgument, match="page_size"):
        await dead.page(101, "")
    outcome = await dead.replay(["1000-1", "1-1"])
    assert (outcome.count, outcome.not_found) == (1, ["1-1"])
    replayed: Any = await cluster.xrange(configs[1].stream)  # back to its own bucket
    assert [fields for _, fields in replayed] == [{"item": "1/1000-1"}]
    outcome = await dead.drop(["1000-0"])  # held by three buckets: all three go
    assert (outcome.count, outcome.not_found) == (3, [])
    assert (await dead.replay([], everything=True)).count == 1
    assert (await dead.page(10, "")).total == 0
    with pytest.raises(InvalidArgument):
        await dead.drop([])
    with pytest.raises(ValueError, match="bucket"):
        BucketDeadLetters(cluster, [])


# -- the shell's wiring of a sharded outbox ----------------------------------------------------


async def test_start_wires_a_relay_and_a_collector_per_bucket(
    tmp_path: Path, cluster_url: str, cluster: RedisCluster
) -> None:
    ensure_keys(tmp_path)
    environ = {"KEYS_DIR": str(tmp_path), "REDIS_URL": cluster_url, GRPC_PORT_ENV: "0"}
    delivered: list[tuple[str, str]] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        delivered.append((fields["bucket"], fields["n"]))

    async with contextlib.AsyncExitStack() as resources:
        security = Security.load(tmp_path, "message")
        start = Start("test-service", Settings.from_env(environ), security, resources)
        assert start.cluster
        redis = start.cluster_redis()
        outbox = start.bucket_outbox(redis, CONFIGS, handler)
        assert len(outbox.relays) == len(start.collectors) == BUCKETS
        assert isinstance(outbox.dead_letters, BucketDeadLetters)
        assert [b.dead_letter_stream for b in outbox.dead_letters.buckets] == [
            c.dead_letter_stream for c in CONFIGS
        ]
        for bucket in (0, 7, 15):
            for n in range(2):
                await cluster.xadd(CONFIGS[bucket].stream, {"bucket": str(bucket), "n": str(n)})
        drained = await asyncio.gather(*(relay.drain_once() for relay in outbox.relays))
        assert sum(drained) == 6
        assert sorted(delivered) == [(b, n) for b in ("0", "15", "7") for n in ("0", "1")]

        # One config (a standalone layout) is the outbox Start.outbox makes.
        single = start.bucket_outbox(redis, CONFIGS[:1], handler)
        assert len(single.relays) == 1 and len(start.collectors) == BUCKETS + 1
        assert type(single.dead_letters) is DeadLetters
        assert single.dead_letters.dead_letter_stream == CONFIGS[0].dead_letter_stream
