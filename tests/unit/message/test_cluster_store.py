"""ClusterMessageStore against a real 3-master Valkey Cluster: the documented cluster layout,
single-slot scripts (the cluster refuses CROSSSLOT), the same scenarios as the standalone
store's tests, and the two-slot windows (a send stopped between its conversation and its
indexes, a delete stopped before its indexes) repaired as documented."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from services.common.domain import Unavailable
from services.message import cluster_keys as ck
from services.message import cluster_lua
from services.message.cluster_store import PENDING_TTL_SECONDS, ClusterMessageStore
from services.message.models import Conversation, IdempotencyRecord, Message, content_digest
from services.message.store import IDEMPOTENCY_TTL_SECONDS
from tests.unit.message.conftest import ADA, BOB, CAROL, EVE

T0 = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)
DAN = "dan@example.com"
OLD = "0000000000000001" + "a" * 16
NEW = "0000000000000002" + "b" * 16


@pytest.fixture
def store(cluster: RedisCluster) -> ClusterMessageStore:
    return ClusterMessageStore(cluster)


async def all_keys(cluster: RedisCluster) -> set[str]:
    """Every key on every master (tests only; the service never lists keys)."""
    found: Any = await cluster.keys("*", target_nodes=RedisCluster.PRIMARIES)
    return {str(k) for k in found}


async def send(
    store: ClusterMessageStore,
    sender: str = ADA,
    receiver: str = BOB,
    content: str = "hi",
    seconds: int = 0,
    **options: Any,
) -> Message:
    outcome = await store.send_message(
        sender, receiver, content, T0 + timedelta(seconds=seconds), **options
    )
    assert outcome.message is not None, outcome
    return outcome.message


async def ids(
    store: ClusterMessageStore, email: str, peer: str | None, before: int | None
) -> list[int]:
    page, _ = await store.message_page(email, peer, before, 100)
    return [m.id for m in page]


async def conversation(store: ClusterMessageStore, email: str, peer: str) -> Conversation:
    page, _ = await store.conversation_page(email, None, 100)
    [found] = [c for c in page if c.peer_email == peer]
    return found


async def outbox(cluster: RedisCluster, bucket: int) -> list[dict[str, str]]:
    entries: Any = await cluster.xrange(ck.outbox_stream(bucket))
    return [dict(fields) for _, fields in entries]


def pair_in_another_bucket(*emails: str) -> tuple[str, str]:
    """Two users whose conversation is in a bucket none of ``emails``' conversations use."""
    taken = {ck.bucket_of(a, b) for a in emails for b in emails}
    for n in range(1000):
        first, second = f"u{n}@example.com", f"v{n}@example.com"
        if ck.bucket_of(first, second) not in taken:
            return first, second
    raise AssertionError("no free bucket")


# -- the layout -------------------------------------------------------------------------------


async def test_a_send_writes_the_documented_layout_in_its_slots(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    message = await send(store, BOB, ADA, "héllo", seconds=7)
    bucket = ck.bucket_of(ADA, BOB)
    tag = "{" + ck.BUCKET_TAGS[bucket] + "}"
    conversation = f"m:{tag}:conversation:{ADA}:{BOB}"  # sorted, whoever sent
    assert message.id % ck.BUCKETS == bucket and not message.read
    assert await all_keys(cluster) == {
        f"m:{tag}:message:{message.id}",
        conversation,
        f"{conversation}:messages",
        f"m:{tag}:ids",
        f"m:outbox:{tag}",
        f"m:user:{{{ADA}}}:messages",
        f"m:user:{{{BOB}}}:messages",
        f"m:user:{{{ADA}}}:conversations_by_time",
        f"m:user:{{{BOB}}}:conversations_by_time",
        f"m:user:{{{BOB}}}:stored_bytes",
    }
    document = str(await cluster.get(f"m:{tag}:message:{message.id}"))
    assert json.loads(document) == {
        "id": message.id,
        "sender_email": BOB,
        "receiver_email": ADA,
        "content": "héllo",
        "timestamp": "2025-01-14T12:00:07Z",
    }
    # The quota counts the JSON with the id as 16 digits, so RESERVE can charge it exactly.
    charge = len(document.encode()) - len(str(message.id)) + ck.ID_WIDTH
    assert await cluster.get(f"m:user:{{{BOB}}}:stored_bytes") == str(charge)
    assert await cluster.hgetall(conversation) == {
        "participants": json.dumps([ADA, BOB]),
        "last_message_id": str(message.id),
        "last_sent_id": str(message.id),
        "message_count": "1",
        "updated_at": "2025-01-14T12:00:07Z",
        f"unread:{ADA}": "1",
    }
    for email, peer in ((ADA, BOB), (BOB, ADA)):
        assert await cluster.zrange(
            f"m:user:{{{email}}}:conversations_by_time", 0, -1, withscores=True
        ) == [(peer, float(message.id))]
        assert await cluster.zrange(f"m:user:{{{email}}}:messages", 0, -1) == [str(message.id)]
    assert await outbox(cluster, bucket) == [
        {
            "message_id": str(message.id),
            "sender_email": BOB,
            "receiver_email": ADA,
            "timestamp": "2025-01-14T12:00:07Z",
            "preview": "héllo",
        }
    ]


def test_key_names_carry_the_tag_of_their_slot() -> None:
    bucket = ck.bucket_of(ADA, BOB)
    assert bucket == ck.bucket_of(BOB, ADA)
    tag = "{" + ck.BUCKET_TAGS[bucket] + "}"
    assert ck.conversation_key(BOB, ADA) == f"m:{tag}:conversation:{ADA}:{BOB}"
    assert ck.message_key(16 * 1000 + bucket) == f"m:{tag}:message:{16 * 1000 + bucket}"
    assert ck.BUCKET_TAGS[:4] == ("mb0", "mb1.43", "mb2.60", "mb3.63")
    assert ck.outbox_dead_letter_stream(3) == "m:outbox:{mb3.63}:dead"
    assert ck.idempotency_key(ADA, "acc:x-1") == f"m:idempotency:send:{{{ADA}}}:acc:x-1"
    assert len({key_slot(k.encode()) for k in _user_keys(ADA)}) == 1
    for b in range(ck.BUCKETS):
        bucket_keys = [ck.id_sequence_key(b), ck.outbox_stream(b), ck.outbox_dead_letter_stream(b)]
        bucket_keys += [ck.message_prefix(b) + "1", ck.conversation_prefix(b) + "a:b"]
        assert len({key_slot(k.encode()) for k in bucket_keys}) == 1
    with pytest.raises(ValueError, match="normalised"):
        ck.user_tag("a}b@example.com")
    with pytest.raises(ValueError, match="bucket"):
        ck.bucket_tag(ck.BUCKETS)


def test_buckets_spread_evenly_over_the_slots() -> None:
    """The services' bucket scheme (services.common.buckets): bucket k's tag hashes into the
    k-th of BUCKETS equal ranges of slots, so 3 masters owning equal ranges hold 5 or 6
    buckets each (the tags {mb0} ... {mb15} would put 9 of them on the first master)."""
    slots = [key_slot(ck.outbox_stream(b).encode()) for b in range(ck.BUCKETS)]
    width = 16384 // ck.BUCKETS
    assert [slot // width for slot in slots] == list(range(ck.BUCKETS))
    owners = [slot * 3 // 16384 for slot in slots]
    assert sorted(owners.count(m) for m in range(3)) == [5, 5, 6]


def _user_keys(email: str) -> list[str]:
    return [
        ck.user_messages_key(email),
        ck.user_conversations_by_time_key(email),
        ck.account_key(email),
        ck.stored_bytes_key(email),
        ck.send_rate_key(email),
        ck.idempotency_key(email, "r"),
    ]


class SlotRecorder:
    """Records the keys (and tagged arguments) of every script the store runs, then runs it."""

    def __init__(self, store: ClusterMessageStore) -> None:
        self.calls: dict[str, list[list[str]]] = {}
        self.scripts: dict[str, str] = {}  # the Lua text of each script wrapped
        # The store's own scripts, its sends' (cluster_send) and its accounts' (cluster_erasure).
        parts = {
            "": store,
            "sender.": vars(store)["_sender"],
            "accounts.": vars(store)["_accounts"],
        }
        for prefix, part in parts.items():
            for name, value in list(vars(part).items()):
                if isinstance(value, AsyncScript):
                    setattr(part, name, self._wrap(f"{prefix}{name}", value))

    def _wrap(self, name: str, script: AsyncScript) -> Any:
        self.calls[name] = []
        self.scripts[name] = str(script.script)

        async def run(keys: list[str], args: list[Any] | None = None) -> Any:
            # The key prefixes a script builds keys from (ARGV) must share the keys' slot too.
            tagged = [str(a) for a in args or [] if str(a).startswith(ck.PREFIX)]
            self.calls[name].append([*keys, *tagged])
            return await script(keys=keys, args=args)

        return run


async def test_every_script_touches_one_slot(store: ClusterMessageStore) -> None:
    recorder = SlotRecorder(store)
    digest = content_digest("hi")
    first = await send(store, ADA, BOB, request_id="acc:r1", content_sha256=digest)
    await send(store, BOB, ADA, "back", rate_limit=(10, 60))
    await send(store, ADA, CAROL, claim_receiver=True, receiver_account_id="c" * 32)
    note = await send(store, ADA, ADA, "note", request_id="acc:r2", content_sha256=digest)
    await store.message_page(ADA, None, None, 10)
    await store.message_page(ADA, BOB, None, 10)
    await store.conversation_page(ADA, None, 10)
    await store.messages([first.id])
    await store.mark_read(BOB, ADA)
    await store.delete(first)
    await store.delete(note)
    cluster = vars(store)["_redis"]
    [event] = [
        e for e in await outbox(cluster, note.id % ck.BUCKETS) if e["message_id"] == str(note.id)
    ]
    await store.repair(event)  # a late redelivery: stale entries for the erasure to clean
    await take_the_next_ids(cluster, ck.bucket_of(ADA, EVE), 3)
    assert (await store.send_message(ADA, EVE, "refused", T0)).outcome == "taken"  # REFUND
    assert await store.claim(CAROL, "c" * 32)
    for account in ("c" * 32, "d" * 32):  # Carol's account, then a later one taking over
        assert await store.owned_conversation_page(CAROL, account, None, 10) is not None
        assert await store.owned_message_page(CAROL, account, None, None, 10) is not None
        assert await store.owned_message_page(CAROL, account, ADA, None, 10) is not None
    assert await store.owned_conversation_page(CAROL, "c" * 32, None, 10) is None
    assert await store.erase_account(ADA, "") >= 1
    # Every script of the layout is recorded (none left unwrapped where it is registered).
    assert set(recorder.scripts.values()) == {getattr(cluster_lua, n) for n in cluster_lua.__all__}
    for name, calls in recorder.calls.items():
        assert calls, f"{name} never ran"
        for keys in calls:
            assert len({key_slot(k.encode()) for k in keys}) == 1, (name, keys)


# -- ids ----------------------------------------------------------------------------------------


async def test_ids_name_their_bucket_grow_and_follow_time_across_buckets(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    other = pair_in_another_bucket(ADA, BOB)
    sent = [
        await send(store, ADA, BOB, "1"),
        await send(store, *other, content="2"),
        await send(store, BOB, ADA, "3"),
        await send(store, *other, content="4"),
    ]
    assert [m.id % ck.BUCKETS for m in sent] == [
        ck.bucket_of(m.sender_email, m.receiver_email) for m in sent
    ]
    assert sent[0].id < sent[2].id and sent[1].id < sent[3].id  # within a bucket: strictly
    now_ms = int(time.time() * 1000)
    for message in sent:  # across buckets: the send time in ms (one process, one clock here)
        assert abs(message.id // ck.BUCKETS - now_ms) < 5_000
    # A sequence ahead of the clock (a burst, or a master whose clock went back) goes on from it.
    bucket = ck.bucket_of(ADA, BOB)
    ahead = now_ms + 3_600_000
    await cluster.set(ck.id_sequence_key(bucket), ahead)
    assert (await send(store, ADA, BOB)).id == (ahead + 1) * ck.BUCKETS + bucket


async def take_the_next_ids(cluster: RedisCluster, bucket: int, count: int) -> int:
    """Put the bucket's sequence an hour ahead and a value under its next ``count`` ids (as if
    the sequence had gone back); the sequence number set."""
    ahead = int(time.time() * 1000) + 3_600_000
    await cluster.set(ck.id_sequence_key(bucket), ahead)
    for n in range(1, count + 1):
        await cluster.set(ck.message_key((ahead + n) * ck.BUCKETS + bucket), "taken")
    return ahead


async def test_a_new_message_lists_first_for_both_users_whatever_the_buckets_clocks(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    """A bucket whose sequence runs ahead (a master's clock ahead of the others) cannot put a
    later message below an earlier one in a user's list: each new id exceeds the newest id in
    the sender's and the receiver's indexes."""
    other = pair_in_another_bucket(ADA, BOB)
    ahead = await take_the_next_ids(cluster, ck.bucket_of(ADA, BOB), 0)
    first = await send(store, ADA, BOB)  # an hour "ahead"
    assert first.id // ck.BUCKETS == ahead + 1
    # The next messages of Ada and of Bob, in buckets whose clocks are an hour behind.
    to_other = await send(store, ADA, other[0])
    from_other = await send(store, other[1], BOB)
    assert to_other.id > first.id and from_other.id > first.id
    assert await ids(store, ADA, None, None) == [to_other.id, first.id]
    assert await ids(store, BOB, None, None) == [from_other.id, first.id]
    page, _ = await store.conversation_page(BOB, None, 10)
    assert [c.peer_email for c in page] == [other[1], ADA]


async def test_an_id_that_holds_a_message_is_skipped_and_three_refuse_with_a_refund(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    bucket = ck.bucket_of(ADA, BOB)
    ahead = await take_the_next_ids(cluster, bucket, 1)
    message = await send(store, ADA, BOB)
    assert message.id == (ahead + 2) * ck.BUCKETS + bucket
    used = await cluster.get(ck.stored_bytes_key(ADA))

    await take_the_next_ids(cluster, bucket, 3)
    outcome = await store.send_message(
        ADA, BOB, "x", T0, request_id="acc:r", content_sha256=content_digest("x")
    )
    assert outcome.outcome == "taken" and outcome.message is None
    assert await cluster.get(ck.stored_bytes_key(ADA)) == used  # the reservation given back
    assert not await cluster.exists(ck.idempotency_key(ADA, "acc:r"))  # and the key freed
    assert await ids(store, ADA, None, None) == [message.id]


# -- idempotency --------------------------------------------------------------------------------


async def test_the_idempotency_record_is_written_with_the_indexes_and_a_24h_ttl(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    digest = content_digest("hi")
    message = await send(store, request_id="acc:req-1", content_sha256=digest)
    key = ck.idempotency_key(ADA, "acc:req-1")
    assert json.loads(str(await cluster.get(key))) == {
        "message_id": message.id,
        "receiver": BOB,
        "content_sha256": digest,
    }
    assert IDEMPOTENCY_TTL_SECONDS - 5 < await cluster.ttl(key) <= IDEMPOTENCY_TTL_SECONDS
    assert await store.idempotency_record(ADA, "acc:req-1") == IdempotencyRecord(
        message.id, BOB, digest
    )
    assert await store.idempotency_record(BOB, "acc:req-1") is None  # scoped to the sender
    [event] = await outbox(cluster, ck.bucket_of(ADA, BOB))
    assert (event["client_request_id"], event["content_sha256"]) == ("acc:req-1", digest)

    keys_before = await all_keys(cluster)
    repeat = await store.send_message(
        ADA, BOB, "hi", T0, request_id="acc:req-1", content_sha256=digest
    )
    assert repeat.outcome == "duplicate" and repeat.existing == IdempotencyRecord(
        message.id, BOB, digest
    )
    assert await all_keys(cluster) == keys_before
    assert len(await outbox(cluster, ck.bucket_of(ADA, BOB))) == 1


async def test_concurrent_repeats_store_one_message(store: ClusterMessageStore) -> None:
    digest = content_digest("hi")
    outcomes = await asyncio.gather(
        *(
            store.send_message(ADA, BOB, "hi", T0, request_id="acc:c", content_sha256=digest)
            for _ in range(10)
        )
    )
    stored = [o.message.id for o in outcomes if o.message is not None]
    repeats = {o.existing.message_id for o in outcomes if o.existing is not None}
    assert len(stored) == 1 and repeats <= set(stored)
    assert len(stored) + len([o for o in outcomes if o.existing]) == 10
    assert await ids(store, ADA, None, None) == stored


async def test_a_repeat_of_a_send_in_flight_waits_for_its_record_or_is_unavailable(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    key = ck.idempotency_key(ADA, "acc:p")
    await cluster.set(key, ck.PENDING, ex=PENDING_TTL_SECONDS)  # RESERVE done, nothing more
    assert await store.idempotency_record(ADA, "acc:p") is None
    with pytest.raises(Unavailable, match="still being stored"):
        await store.send_message(ADA, BOB, "hi", T0, request_id="acc:p")

    async def finish_later() -> None:
        await asyncio.sleep(0.2)
        await cluster.set(key, '{"message_id":42,"receiver":"bob@example.com","content_sha256":""}')

    finishing = asyncio.create_task(finish_later())
    outcome = await store.send_message(ADA, BOB, "hi", T0, request_id="acc:p")
    await finishing
    assert outcome.outcome == "duplicate" and outcome.existing == IdempotencyRecord(42, BOB, "")


# -- reading and changing ------------------------------------------------------------------------


async def test_message_pages_are_newest_first_below_a_cursor_across_buckets(
    store: ClusterMessageStore,
) -> None:
    m1 = await send(store, ADA, BOB)
    m2 = await send(store, BOB, ADA)
    m3 = await send(store, ADA, CAROL)
    m4 = await send(store, ADA, BOB)
    assert await ids(store, ADA, None, None) == [m4.id, m3.id, m2.id, m1.id]
    assert await ids(store, ADA, BOB, None) == [m4.id, m2.id, m1.id]
    assert await ids(store, ADA, BOB, m4.id) == [m2.id, m1.id]
    assert await store.message_page(ADA, BOB, m4.id, 1) == ([m2], m2.id)
    assert await store.message_page(ADA, None, None, 2) == ([m4, m3], m3.id)
    assert await store.message_page(ADA, None, m3.id, 2) == ([m2, m1], None)
    assert await ids(store, CAROL, None, None) == [m3.id]
    assert await ids(store, CAROL, BOB, None) == []


async def test_messages_carry_the_receivers_read_flag_and_skip_missing_ids(
    store: ClusterMessageStore,
) -> None:
    m1 = await send(store, ADA, BOB)
    m2 = await send(store, BOB, ADA)
    m3 = await send(store, ADA, CAROL)
    await store.mark_read(BOB, ADA)  # Bob has read 1; Ada has not read 2; Carol not 3
    missing = m3.id + ck.BUCKETS  # the same bucket, a later id
    found = await store.messages([m3.id, missing, m2.id, m1.id, 7])
    assert [(m.id, m.read) for m in found] == [(m3.id, False), (m2.id, False), (m1.id, True)]
    assert await store.get(missing) is None


async def test_mark_read_and_the_conversations_seen_from_each_side(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    await send(store, ADA, BOB)
    await send(store, ADA, BOB)
    last = await send(store, BOB, ADA, seconds=3)
    ada_view, bob_view = await conversation(store, ADA, BOB), await conversation(store, BOB, ADA)
    assert (ada_view.unread_count, bob_view.unread_count) == (1, 2)
    assert ada_view.last_message == bob_view.last_message == last
    assert ada_view.updated_at == last.timestamp
    marked = await store.mark_read(BOB, ADA)
    assert marked is not None and (marked.unread_count, marked.message_count) == (0, 3)
    fields = await cluster.hgetall(ck.conversation_key(ADA, BOB))
    assert fields[f"read_upto:{BOB}"] == str(last.id) and fields[f"unread:{ADA}"] == "1"
    assert await store.mark_read(BOB, CAROL) is None
    assert not await cluster.exists(ck.conversation_key(BOB, CAROL))


async def test_conversation_pages_are_most_recent_first_below_a_cursor(
    store: ClusterMessageStore,
) -> None:
    await send(store, ADA, BOB)
    await send(store, CAROL, ADA)
    latest = await send(store, BOB, ADA)

    async def peers(before: int | None, size: int) -> tuple[list[str], int | None]:
        page, after = await store.conversation_page(ADA, before, size)
        return [c.peer_email for c in page], after

    assert await peers(None, 10) == ([BOB, CAROL], None)
    assert await peers(latest.id, 10) == ([CAROL], None)
    assert await peers(None, 1) == ([BOB], latest.id)


async def test_delete_updates_the_conversation_and_gives_the_bytes_back(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    m1 = await send(store, ADA, BOB)
    await send(store, BOB, ADA)
    await store.mark_read(BOB, ADA)
    m3 = await send(store, ADA, BOB, seconds=5)
    used = int(await cluster.get(ck.stored_bytes_key(ADA)) or 0)
    assert await store.delete(m3)  # unread by Bob: his count goes down
    assert int(await cluster.get(ck.stored_bytes_key(ADA)) or 0) < used
    seen_by_bob = await conversation(store, BOB, ADA)
    assert (seen_by_bob.message_count, seen_by_bob.unread_count) == (2, 0)
    assert seen_by_bob.updated_at == m3.timestamp  # deleting does not change it
    assert not await store.delete(m3)  # already gone
    assert await cluster.zscore(ck.user_conversations_by_time_key(ADA), BOB) == m3.id
    assert await store.delete(m1)
    assert not await cluster.exists(ck.stored_bytes_key(ADA))  # nothing of Ada's left


async def test_deleting_the_last_message_removes_the_conversation_everywhere(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    m1 = await send(store, ADA, BOB)
    await send(store, ADA, CAROL)
    assert await store.delete(m1)
    conversations, after = await store.conversation_page(ADA, None, 10)
    assert [c.peer_email for c in conversations] == [CAROL] and after is None
    assert await store.conversation_page(BOB, None, 10) == ([], None)
    assert not await cluster.exists(ck.conversation_key(ADA, BOB))
    assert not await cluster.exists(ck.user_conversations_by_time_key(BOB))
    assert await store.mark_read(BOB, ADA) is None


async def test_a_conversation_started_again_stays_listed_when_a_late_unindex_arrives(
    store: ClusterMessageStore,
) -> None:
    first = await send(store, ADA, BOB)
    # The delete's bucket step ran; its user-slot step comes after the next send.
    gone: Any = await vars(store)["_delete"](
        keys=[
            ck.message_key(first.id),
            ck.conversation_key(ADA, BOB),
            ck.conversation_messages_key(ADA, BOB),
        ],
        args=[str(first.id), BOB],
    )
    again = await send(store, BOB, ADA)
    await store._unindex_user(BOB, ADA, first.id, str(gone[1]), None)
    [seen] = (await store.conversation_page(BOB, None, 10))[0]
    assert seen.last_message == again
    assert await ids(store, BOB, None, None) == [again.id]


# -- the two-slot windows ------------------------------------------------------------------------


async def test_a_send_stopped_before_its_indexes_is_completed_by_the_repair(
    store: ClusterMessageStore, cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = content_digest("hi")

    async def unreachable(**_: Any) -> None:
        raise RedisConnectionError("the users' slots are unreachable")

    monkeypatch.setattr(vars(store)["_sender"], "_index", unreachable)
    message = await send(store, ADA, BOB, request_id="acc:w", content_sha256=digest)
    assert await ids(store, ADA, None, None) == [] and await ids(store, BOB, None, None) == []
    assert await store.conversation_page(BOB, None, 10) == ([], None)
    # The conversation itself is complete: a page with the peer reads the bucket only.
    assert await ids(store, BOB, ADA, None) == [message.id]
    assert await cluster.get(ck.idempotency_key(ADA, "acc:w")) == ck.PENDING

    monkeypatch.undo()  # the users' slots are back
    [event] = await outbox(cluster, ck.bucket_of(ADA, BOB))
    for _ in range(2):  # the relay may deliver twice: the repair is idempotent
        await store.repair(event)
        assert await ids(store, ADA, None, None) == [message.id]
        assert await ids(store, BOB, None, None) == [message.id]
        assert [c.peer_email for c in (await store.conversation_page(BOB, None, 10))[0]] == [ADA]
        assert await store.idempotency_record(ADA, "acc:w") == IdempotencyRecord(
            message.id, BOB, digest
        )


@pytest.mark.parametrize("erased", ["receiver", "sender"])
async def test_a_lagging_message_of_an_account_erased_meanwhile_goes_when_indexed(
    store: ClusterMessageStore,
    cluster: RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
    erased: str,
) -> None:
    """Erasure finds messages through the indexes: one stored but not yet indexed when the
    account's erasure ran is deleted when the relay indexes it, not handed to a later one."""
    assert await store.claim(ADA, OLD) and await store.claim(BOB, NEW)
    kept = await send(store, ADA, BOB, "before", sender_account_id=OLD)

    async def unreachable(**_: Any) -> None:
        raise RedisConnectionError("the users' slots are unreachable")

    monkeypatch.setattr(vars(store)["_sender"], "_index", unreachable)
    lagging = await send(store, ADA, BOB, "lagging", sender_account_id=OLD, receiver_account_id=NEW)
    monkeypatch.undo()
    email, account = (BOB, NEW) if erased == "receiver" else (ADA, OLD)
    assert await store.erase_account(email, account) == 1  # the indexed message only
    assert await store.get(lagging.id) == lagging  # missed: not in the index yet
    [event] = [
        fields
        for fields in await outbox(cluster, ck.bucket_of(ADA, BOB))
        if fields["message_id"] == str(lagging.id)
    ]
    assert event["sender_account_id"] == OLD and event["receiver_account_id"] == NEW
    await store.repair(event)
    assert await store.get(lagging.id) is None and await store.get(kept.id) is None
    for user in (ADA, BOB):
        assert await store.message_page(user, None, None, 10) == ([], None)
        assert await store.conversation_page(user, None, 10) == ([], None)
    assert not await cluster.exists(ck.conversation_key(ADA, BOB))


async def test_index_entries_whose_message_is_gone_are_skipped_and_removed(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    m1 = await send(store, ADA, BOB)
    m2 = await send(store, ADA, CAROL)
    [event] = [
        fields
        for fields in await outbox(cluster, ck.bucket_of(ADA, BOB))
        if fields["message_id"] == str(m1.id)
    ]
    assert await store.delete(m1)
    await store.repair(event)  # a late redelivery puts the deleted message back in the indexes
    assert await cluster.zscore(ck.user_messages_key(BOB), str(m1.id)) == m1.id
    assert await store.message_page(ADA, None, None, 10) == ([m2], None)
    assert await store.message_page(BOB, None, None, 10) == ([], None)
    assert await store.conversation_page(BOB, None, 10) == ([], None)
    for email in (ADA, BOB):
        assert await cluster.zscore(ck.user_messages_key(email), str(m1.id)) is None
    assert not await cluster.exists(ck.user_conversations_by_time_key(BOB))
    assert [c.peer_email for c in (await store.conversation_page(ADA, None, 10))[0]] == [CAROL]


# -- limits ---------------------------------------------------------------------------------------


async def test_the_quota_is_reserved_in_the_senders_slot_and_refused_beyond_it(
    cluster: RedisCluster,
) -> None:
    store = ClusterMessageStore(cluster, quota_bytes=500)  # two of these messages fit
    kept = [await send(store, ADA, BOB, "x" * 100) for _ in range(2)]
    refused = await store.send_message(ADA, CAROL, "x" * 100, T0)
    assert refused.outcome == "quota" and refused.quota_used == int(
        await cluster.get(ck.stored_bytes_key(ADA)) or 0
    )
    assert await ids(store, ADA, None, None) == [m.id for m in reversed(kept)]
    assert await store.delete(kept[0])
    assert (await store.send_message(ADA, CAROL, "x" * 100, T0)).outcome == "stored"


async def test_the_rate_limit_counts_in_the_senders_slot(store: ClusterMessageStore) -> None:
    for _ in range(2):
        await send(store, ADA, BOB, rate_limit=(2, 60))
    refused = await store.send_message(ADA, CAROL, "hi", T0, rate_limit=(2, 60))
    assert refused.outcome == "rate" and 0 < refused.retry_after <= 60
    assert len(await ids(store, ADA, None, None)) == 2


# -- accounts ------------------------------------------------------------------------------------


async def test_erasure_deletes_a_users_messages_for_both_sides_and_keeps_the_rest(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    assert await store.claim(ADA, OLD)
    await send(store, ADA, BOB, sender_account_id=OLD)
    await send(store, BOB, ADA)
    await send(store, ADA, ADA, "note", sender_account_id=OLD)
    kept = await send(store, BOB, CAROL)
    assert await store.erase_account(ADA, OLD) == 3
    assert await store.message_page(BOB, None, None, 10) == ([kept], None)
    assert [c.peer_email for c in (await store.conversation_page(BOB, None, 10))[0]] == [CAROL]
    assert await store.message_page(ADA, None, None, 10) == ([], None)
    assert await cluster.get(ck.account_key(ADA)) == f"{OLD}:erased"
    assert not await cluster.exists(ck.conversation_key(ADA, BOB), ck.conversation_key(ADA, ADA))
    assert not await cluster.exists(ck.stored_bytes_key(ADA))
    assert await store.erase_account(ADA, OLD) == 0  # idempotent
    outcome = await store.send_message(ADA, BOB, "again", T0, sender_account_id=OLD)
    assert outcome.outcome == "stale"


async def test_a_later_account_erases_the_earlier_ones_data_before_it_sees_any(
    store: ClusterMessageStore, cluster: RedisCluster
) -> None:
    assert await store.claim(ADA, OLD)
    await send(store, BOB, ADA)
    await send(store, ADA, EVE, sender_account_id=OLD, rate_limit=(5, 60))
    outcome = await store.send_message(
        BOB, ADA, "to the new one", T0, receiver_account_id=NEW, claim_receiver=True
    )
    assert outcome.outcome == "erase" and outcome.erase_email == ADA
    outcome = await store.send_message(ADA, BOB, "new", T0, sender_account_id=NEW)
    assert outcome.outcome == "erase" and outcome.erase_email == ADA
    assert await store.claim(ADA, NEW)
    assert await cluster.get(ck.account_key(ADA)) == NEW
    assert not await cluster.exists(ck.send_rate_key(ADA), ck.stored_bytes_key(ADA))
    assert await store.message_page(ADA, None, None, 10) == ([], None)
    assert await store.message_page(EVE, None, None, 10) == ([], None)
    assert not await store.claim(ADA, OLD)
    fresh = await send(store, BOB, ADA, receiver_account_id=NEW, claim_receiver=True)
    assert await ids(store, ADA, None, None) == [fresh.id]


async def test_ping_asks_every_master(store: ClusterMessageStore) -> None:
    assert await store.ping() is True


async def test_every_bucket_is_served(store: ClusterMessageStore, cluster: RedisCluster) -> None:
    """Conversations spread over every bucket, each written and read in its slot."""
    buckets: set[int] = set()
    n = 0
    while len(buckets) < ck.BUCKETS:
        peer = f"p{n}@example.com"
        n += 1
        if ck.bucket_of(DAN, peer) in buckets:
            continue
        buckets.add(ck.bucket_of(DAN, peer))
        await send(store, DAN, peer)
    page, after = await store.conversation_page(DAN, None, 100)
    assert len(page) == ck.BUCKETS and after is None
    assert len(await ids(store, DAN, None, None)) == ck.BUCKETS
