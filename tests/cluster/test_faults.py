"""One master of the cluster killed (SIGKILL) under load: a clear UNAVAILABLE (gRPC) or 503
problem+json (REST) for what needs it, nothing corrupted, and once it is back every message
accepted before the AOF's window (tests.helpers.aof) is listed, stored and on a live stream, and
nothing is listed, stored or shown twice."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2
from redis.crc import key_slot

from services.frontend.fanout import cluster_channel_of
from services.launcher.valkey import EmbeddedValkey
from tests.helpers.aof import AOF_WINDOW_SECONDS
from tests.helpers.clients import Stubs, User, register_and_login
from tests.helpers.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PAIRS = 6
"""Sender/receiver pairs with fixed addresses: their keys fall on every master."""


@dataclass
class Outcomes:
    """What the load saw, per pair: accepted message ids and their contents, and failures."""

    accepted: dict[int, dict[int, str]] = field(default_factory=dict)
    accepted_at: dict[int, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    during_outage: Counter[str] = field(default_factory=Counter)

    def accept(self, pair: int, message_id: int, content: str) -> None:
        self.accepted.setdefault(pair, {})[message_id] = content
        self.accepted_at[message_id] = time.monotonic()

    def durable(self, pair: int, killed_at: float) -> dict[int, str]:
        """The messages of ``pair`` accepted outside the AOF window before the kill, or after."""
        return {
            message_id: content
            for message_id, content in self.accepted.get(pair, {}).items()
            if not killed_at - AOF_WINDOW_SECONDS < self.accepted_at[message_id] <= killed_at
        }


async def _send_rest(
    http: httpx.AsyncClient, system: System, sender: User, receiver: User, content: str
) -> tuple[int | None, str | None]:
    """(message id, None) when stored, (None, why) when refused as it must be."""
    reply = await http.post(
        system.rest_url("message") + "/messages",
        json={"sender_email": sender.email, "receiver_email": receiver.email, "content": content},
        headers=sender.headers,
    )
    if reply.status_code == 201:
        return int(reply.json()["id"]), None
    assert reply.status_code == 503, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.headers
    problem = reply.json()
    assert problem["status"] == 503 and problem["detail"], problem
    return None, f"REST 503: {problem['detail']}"


async def _send_grpc(
    stubs: Stubs, sender: User, receiver: User, content: str
) -> tuple[int | None, str | None]:
    try:
        return (await stubs.send(sender, receiver, content)).id, None
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
        assert exc.details(), "UNAVAILABLE says why"
        return None, f"gRPC UNAVAILABLE: {exc.details()}"


async def _load(
    system: System,
    stubs: Stubs,
    pairs: list[tuple[User, User]],
    outcomes: Outcomes,
    stop: asyncio.Event,
    outage: asyncio.Event,
) -> None:
    """Sends from every pair in turn, alternating REST and gRPC, until ``stop``."""
    counter = itertools.count()
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:

        async def worker(pair: int) -> None:
            sender, receiver = pairs[pair]
            while not stop.is_set():
                n = next(counter)
                content = f"message {n} of pair {pair}"
                if n % 2:
                    message_id, why = await _send_rest(http, system, sender, receiver, content)
                else:
                    message_id, why = await _send_grpc(stubs, sender, receiver, content)
                if message_id is not None:
                    outcomes.accept(pair, message_id, content)
                    if outage.is_set():
                        outcomes.during_outage["accepted"] += 1
                else:
                    assert why is not None
                    outcomes.refused.append(why)
                    if outage.is_set():
                        outcomes.during_outage["refused"] += 1
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker(pair) for pair in range(len(pairs))))


async def _all_pages(stubs: Stubs, receiver: User, sender: User) -> list[message_pb2.Message]:
    messages: list[message_pb2.Message] = []
    token = ""
    while True:
        page = await stubs.message.GetMessages(
            message_pb2.GetMessagesRequest(
                user_email=receiver.email, peer_email=sender.email, page_size=100, page_token=token
            ),
            metadata=receiver.metadata,
            timeout=10,
        )
        messages += page.messages
        token = page.next_page_token
        if not token:
            return messages


async def _stored_notifications(stubs: Stubs, user: User) -> list[int]:
    ids: list[int] = []
    token = ""
    while True:
        page = await stubs.notification.ListNotifications(
            notification_pb2.ListNotificationsRequest(
                email=user.email, page_size=100, page_token=token
            ),
            metadata=user.metadata,
            timeout=10,
        )
        ids += [n.message_id for n in page.notifications]
        token = page.next_page_token
        if not token:
            return ids


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if await check():
                return
        except grpc.aio.AioRpcError:
            pass
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.2)


def _master_of(system: System, channel: str) -> EmbeddedValkey:
    """The master that owns ``channel``'s slot (equal contiguous ranges, masters in order)."""
    assert system.cluster is not None
    masters = system.cluster.masters
    return masters[key_slot(channel.encode()) * len(masters) // 16384]


async def test_a_master_killed_under_load_is_unavailable_then_keeps_what_its_aof_holds(
    fresh_system: System,
) -> None:
    system = fresh_system
    assert system.cluster is not None
    system.start()
    await system.wait_healthy()
    stubs = Stubs.connect(system)
    try:
        pairs = [
            (
                await register_and_login(system, f"S{n}", f"sender{n}@example.com"),
                await register_and_login(system, f"R{n}", f"receiver{n}@example.com"),
            )
            for n in range(PAIRS)
        ]
        outcomes, stop, outage = Outcomes(), asyncio.Event(), asyncio.Event()
        load = asyncio.create_task(_load(system, stubs, pairs, outcomes, stop, outage))
        try:
            while sum(map(len, outcomes.accepted.values())) < 30:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            # The victim is the master of the first receiver's live shard channel; some other
            # receiver's channel is on another master.
            receiver = pairs[0][1]
            victim = _master_of(system, cluster_channel_of(receiver.email))
            spared = next(r for _, r in pairs if _master_of(system, cluster_channel_of(r.email))
                          is not victim)  # fmt: skip
            live, kept = [
                stubs.frontend.SubscribeNotifications(
                    frontend_pb2.SubscribeNotificationsRequest(email=user.email),
                    metadata=user.metadata,
                )
                for user in (receiver, spared)
            ]
            await asyncio.wait_for(live.read(), 10)  # open (the replay's first item)
            await asyncio.wait_for(kept.read(), 10)
            killed_at = time.monotonic()
            victim.kill()  # SIGKILL: no shutdown, no final AOF flush
            outage.set()
            started = time.monotonic()
            # The fan-out lost the shard channels of that master: their streams end so that
            # their clients reconnect and replay what they may have missed...
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    item = await asyncio.wait_for(live.read(), 10)
                    assert item is not grpc.aio.EOF, "the stream ended without a status"
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()
            assert "reconnect" in (ended.value.details() or "")
            await asyncio.sleep(1.0)
            assert not kept.done(), "...the streams of the other masters' shards stay open"
            kept.cancel()
            await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - started)))  # > detection (2 s)
            victim.start()
            outage.clear()
            system.cluster.wait_ok(30)
            await system.wait_healthy(within=30)
            await asyncio.sleep(1.0)  # the load runs on the recovered cluster
        finally:
            stop.set()
            await load
        print(
            f"accepted {sum(map(len, outcomes.accepted.values()))}, refused "
            f"{len(outcomes.refused)}; during the outage {dict(outcomes.during_outage)}"
        )
        assert outcomes.during_outage["refused"] > 0, "the dead master's data was needed"
        assert outcomes.refused, "a refusal says why"

        # Recovered: every pair sends again.
        for pair, (sender, receiver) in enumerate(pairs):
            content = f"after the recovery, pair {pair}"
            outcomes.accept(pair, (await stubs.send(sender, receiver, content)).id, content)

        # Nothing corrupted: each accepted message listed once with its content (those accepted
        # in the AOF window before the kill may be lost with the master), nothing listed that
        # was not sent, the conversation's counts agree with its messages.
        all_ids: list[int] = []
        for pair, (sender, receiver) in enumerate(pairs):
            accepted = outcomes.accepted.get(pair, {})
            durable = outcomes.durable(pair, killed_at)
            listed = await _all_pages(stubs, receiver, sender)
            by_id = {m.id: m.content for m in listed}
            assert len(by_id) == len(listed), "no message listed twice"
            assert set(durable) <= set(by_id), f"pair {pair} lost an accepted message"
            assert all(by_id[i] == accepted[i] for i in accepted if i in by_id)
            assert all(c.startswith(("message ", "after the recovery")) for c in by_id.values())
            conversations = await stubs.message.ListConversations(
                message_pb2.ListConversationsRequest(user_email=receiver.email),
                metadata=receiver.metadata,
                timeout=10,
            )
            [conversation] = conversations.conversations
            assert conversation.peer_email == sender.email
            assert conversation.message_count == len(listed)
            assert conversation.unread_count == len(listed)
            all_ids += list(by_id)
        assert len(all_ids) == len(set(all_ids)), "ids are unique across conversations"

        # Delivered once it is back: one stored notification per accepted message...
        for pair, (_, receiver) in enumerate(pairs):
            wanted = set(outcomes.durable(pair, killed_at))

            async def stored(receiver: User = receiver, wanted: set[int] = wanted) -> bool:
                return wanted <= set(await _stored_notifications(stubs, receiver))

            await _until(stored, 30)
            notified = await _stored_notifications(stubs, receiver)
            assert len(notified) == len(set(notified)), "no message notified twice"
            # ...and a live stream replays each exactly once.
            stream = stubs.frontend.SubscribeNotifications(
                frontend_pb2.SubscribeNotificationsRequest(email=receiver.email),
                metadata=receiver.metadata,
            )
            shown: list[int] = []
            try:
                while len(shown) < len(notified):
                    item = await asyncio.wait_for(stream.read(), 10)
                    assert isinstance(item, notification_pb2.Notification), item
                    shown.append(item.message_id)
            finally:
                stream.cancel()
            assert Counter(shown) == Counter(notified)
            assert wanted <= set(shown)
    finally:
        await stubs.close()
