"""Bench scenario 9: the same SendMessage load on the standalone Valkey and on a Valkey Cluster.

Both runs send the same load as the replicas scenario (:mod:`tests.bench.replicas`):
SendMessage in a closed loop (64 in flight) from 16 senders with real tokens to 16 fresh
receivers, each receiver with one live SubscribeNotifications stream; the loader waits until
every accepted message was shown. The first run is on the bench's standalone Valkey (today's
layout: databases 0/1/2); for the second, UserService, MessageService and NotificationService
are restarted with ``REDIS_URL`` naming a 3-master :class:`EmbeddedValkeyCluster` on loopback
(their cluster key layouts) and fresh senders and receivers are registered there.

FrontendService stays one process on the standalone Valkey in both runs: it keeps no keys, and
its fan-out bus takes a ``redis://`` URL only (a ``redis+cluster://`` one stops it at start-up),
so it does the same work in both runs and the standalone Valkey's CPU in the cluster run is
that bus alone.

Each run is checked as the replicas scenario checks its runs (every accepted message shown once
on its receiver's stream and stored once among its notifications, nothing else), and measured:
accepted/s, end-to-end rate, latency, CPU per accepted message of every process (each Cluster
master, and the masters summed) over the load and the drain that follows, and the drain time:
from the end of the load until both outboxes have nothing unacknowledged (``outbox:*`` in
databases 1 and 2, or the 16 bucket streams ``m:outbox:{t}`` and ``n:outbox:frontend:{t}`` of
each outbox on the Cluster).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from redis.exceptions import ResponseError

from services.common.redis import create_cluster
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from services.message.relay import CLUSTER_OUTBOXES as MESSAGE_OUTBOXES
from services.notification.relay import CLUSTER_OUTBOXES as NOTIFICATION_OUTBOXES
from tests.bench import procs
from tests.bench.catchup import backlog
from tests.bench.figures import Figure, figure
from tests.bench.loader import SEND_METHOD
from tests.bench.relay_calls import HOPS, RELAY_CALLS, relay_calls
from tests.bench.replicas import CORRECTNESS, SETTLE_WITHIN, check_stored, stored_ids
from tests.bench.run import CONTENT, IN_FLIGHT, OUTBOXES, SENDERS, Bench, _check
from tests.helpers.clients import User, register_and_login
from tests.helpers.system import System

MASTERS = 3
CLUSTERED = ("user", "message", "notification")
"""The services restarted on the Cluster (FrontendService keeps the standalone Valkey)."""
DRAIN_WITHIN = 120.0
SCENARIO = "9 cluster"
IDLE_S = 2.0
"""Seconds of no load over which each process's idle CPU is measured (relays polling...)."""

Backlogs = Callable[[], Awaitable[dict[str, int]]]


# -- the two layouts' outboxes -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def standalone_backlogs(system: System) -> AsyncIterator[Backlogs]:
    """Unacknowledged entries of ``outbox:notifications`` (db 1) and ``outbox:frontend`` (db 2)."""
    clients = {
        stream: redis.asyncio.Redis.from_url(system.valkey.url, db=db, decode_responses=True)
        for stream, db in OUTBOXES
    }

    async def read() -> dict[str, int]:
        return {stream: await backlog(client, stream) for stream, client in clients.items()}

    try:
        yield read
    finally:
        for client in clients.values():
            await client.aclose()


CLUSTER_STREAMS = {
    "outbox:notifications": tuple(o.stream for o in MESSAGE_OUTBOXES),
    "outbox:frontend": tuple(o.stream for o in NOTIFICATION_OUTBOXES),
}
"""Each outbox of the standalone layout and its bucket streams in the cluster layout."""


@contextlib.asynccontextmanager
async def cluster_backlogs(url: str) -> AsyncIterator[Backlogs]:
    """The same two figures on the Cluster: each summed over its outbox's bucket streams."""
    client = create_cluster(url, client_name="bench")

    async def one(stream: str) -> int:
        try:
            return await backlog(client, stream)  # type: ignore[arg-type]
        except ResponseError:  # no such stream (yet): nothing in it
            return 0

    async def read() -> dict[str, int]:
        return {
            name: sum(await asyncio.gather(*(one(s) for s in streams)))
            for name, streams in CLUSTER_STREAMS.items()
        }

    try:
        yield read
    finally:
        await client.aclose()


async def drained(read: Backlogs, within: float = DRAIN_WITHIN) -> None:
    deadline = time.monotonic() + within
    while any((await read()).values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the outboxes did not drain within {within:.0f}s")
        await asyncio.sleep(0.01)


# -- the system on the Cluster -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def on_cluster(system: System) -> AsyncIterator[EmbeddedValkeyCluster]:
    """``system`` with UserService, MessageService and NotificationService restarted on a
    fresh 3-master Cluster (FrontendService restarted on the standalone Valkey, as before).
    On exit the Cluster stops and the system runs on the standalone Valkey again."""
    cluster = EmbeddedValkeyCluster(system.base / "cluster", masters=MASTERS)
    saved = dict(system.extra_env)
    try:
        cluster.start()  # blocks a second or two; nothing else runs meanwhile
        system.stop()
        system.extra_env["REDIS_URL"] = cluster.url
        system.start(*CLUSTERED)
        system.extra_env.clear()
        system.extra_env.update(saved)
        system.start("frontend")
        await system.wait_healthy()
        yield cluster
    finally:
        system.extra_env.clear()
        system.extra_env.update(saved)
        system.stop()
        cluster.stop()
    system.start()
    await system.wait_healthy()


# -- one run ------------------------------------------------------------------------------------


def _request(sender: User, receiver: User) -> dict[str, Any]:
    body = message_pb2.SendMessageRequest(
        sender_email=sender.email, receiver_email=receiver.email, content=CONTENT
    ).SerializeToString()
    return {
        "body": base64.b64encode(body).decode(),
        "metadata": [list(pair) for pair in sender.metadata],
        "receiver": receiver.email,
    }


def _stream(receiver: User) -> dict[str, Any]:
    body = frontend_pb2.SubscribeNotificationsRequest(email=receiver.email).SerializeToString()
    return {
        "body": base64.b64encode(body).decode(),
        "metadata": [list(pair) for pair in receiver.metadata],
        "email": receiver.email,
    }


async def _users(system: System, prefix: str) -> tuple[list[User], list[User]]:
    """SENDERS senders and as many receivers, registered and signed in on ``system``, 8 at a
    time (UserService counts a sign-in in flight against the client's 20 attempts a minute
    until it succeeds)."""
    slots = asyncio.Semaphore(8)

    async def one(n: int) -> User:
        async with slots:
            return await register_and_login(system, f"{prefix}{n}")

    users = await asyncio.gather(*(one(n) for n in range(2 * SENDERS)))
    return list(users[:SENDERS]), list(users[SENDERS:])


async def run_once(
    bench: Bench, label: str, pids: dict[str, int], backlogs: Backlogs
) -> dict[str, Any]:
    """One loaded, checked run on the processes running now: e2e load with live streams,
    the drain timed from the end of the load, CPU of ``pids`` over both."""
    system = bench.system
    senders, receivers = await _users(system, f"Layout{label}x")
    requests = [_request(s, r) for s, r in zip(senders, receivers, strict=True)]
    target = system.grpc_addr("message")
    # Warm up first (channels, script caches, slot maps): sender i to sender i+1, so that the
    # receivers' streams and notifications hold the measured run's messages only; its
    # deliveries are drained before the run and not counted.
    warm_requests = [
        _request(s, r) for s, r in zip(senders, senders[1:] + senders[:1], strict=True)
    ]
    warm_up: dict[str, Any] = {"kind": "grpc", "target": target, "method": SEND_METHOD}
    warm_up.update(requests=warm_requests, duration=1.0, concurrency=IN_FLIGHT, rate=None)
    warmed = await procs.Loader(warm_up).run()
    _check(warmed, f"warm-up, {label}")
    await drained(backlogs)
    idle = await _idle_cpu(pids)
    spec: dict[str, Any] = {
        "kind": "e2e",
        "target": target,
        "frontend": system.grpc_addr("frontend"),
        "requests": requests,
        "streams": [_stream(r) for r in receivers],
        "duration": bench.options.duration,
        "concurrency": IN_FLIGHT,
        "rate": None,
        "settle_within": SETTLE_WITHIN,
    }
    calls_before = await relay_calls(system)
    before = procs.cpu_snapshot(pids)
    loader = procs.Loader(spec)
    try:
        await loader.start()
        await loader.load_done()
        stopped = time.monotonic()
        at_stop = await backlogs()
        await drained(backlogs)
        drain_s = time.monotonic() - stopped
        result = await loader.result()
    finally:
        await loader.close()
    cpu = procs.cpu_delta(before, pids)
    calls_after = await relay_calls(system)
    _check(result, f"SendMessage with live streams, {label}")
    accepted: dict[str, list[int]] = result.pop("accepted_ids", {})
    stored = dict(
        zip(
            (r.email for r in receivers),
            await asyncio.gather(*(stored_ids(system, r) for r in receivers)),
            strict=True,
        )
    )
    wall = result["wall_s"] or 1.0
    count = max(result["accepted"], 1)
    return {
        **result,
        **check_stored(accepted, stored),
        "warm_up": {"ok": warmed["ok"], "errors": warmed["errors"], "rps": warmed["rps"]},
        "accepted_per_s": result["accepted"] / wall,
        "end_to_end_per_s": result["accepted"] / (wall + result["settle_s"]),
        "backlog_at_stop": at_stop,
        "drain_s": drain_s,
        "cpu_s": cpu,
        "cpu_us_per_message": {name: s / count * 1e6 for name, s in cpu.items()},
        "idle_cpu_share": idle,
        "relay_calls": {hop: calls_after[hop] - calls_before[hop] for hop in RELAY_CALLS},
        "messages_per_relay_call": {
            hop: result["accepted"] / max(calls_after[hop] - calls_before[hop], 1)
            for hop in RELAY_CALLS
        },
    }


async def _idle_cpu(pids: dict[str, int]) -> dict[str, float]:
    """Each process's share of a core over IDLE_S seconds with no load."""
    before = procs.cpu_snapshot(pids)
    await asyncio.sleep(IDLE_S)
    return {name: s / IDLE_S for name, s in procs.cpu_delta(before, pids).items()}


def _valkey_us(run: dict[str, Any], masters_only: bool = False) -> float:
    """CPU µs per message of the Valkey processes of a run (``valkey``, ``valkey.m<i>``)."""
    per: dict[str, float] = run["cpu_us_per_message"]
    return sum(
        us
        for name, us in per.items()
        if name.startswith("valkey.m") or (name == "valkey" and not masters_only)
    )


async def cluster(bench: Bench) -> None:
    system = bench.system
    async with standalone_backlogs(system) as read:
        single = await run_once(bench, "standalone", bench.pids(), read)
    async with on_cluster(system) as valkeys:
        pids = bench.pids()
        pids.update({f"valkey.m{i}": m.pid or 0 for i, m in enumerate(valkeys.masters)})
        async with cluster_backlogs(valkeys.url) as read:
            spread = await run_once(bench, "cluster", pids, read)
    bench.details["cluster"] = {"standalone": single, "cluster": spread, "masters": MASTERS}
    _figures(bench, single, spread)


def _paired(name: str, value: float, unit: str, baseline: float | None, of: str) -> Figure:
    """A figure of the scenario beside its standalone counterpart (none when that measured 0:
    a process's CPU is counted in 10 ms ticks, and a short run may not reach one)."""
    return figure(SCENARIO, name, value, unit, baseline or None, of if baseline else "")


def _figures(bench: Bench, single: dict[str, Any], spread: dict[str, Any]) -> None:
    base = "the same load, standalone Valkey"
    on = f"{MASTERS}-master Valkey Cluster"
    bench.add(
        _paired(
            f"SendMessage accepted/s, {on}, 64 in flight, live streams",
            spread["accepted_per_s"],
            "rps",
            single["accepted_per_s"],
            base,
        ),
        _paired(
            f"end to end (accepted → last shown on a stream), {on}",
            spread["end_to_end_per_s"],
            "/s",
            single["end_to_end_per_s"],
            base,
        ),
        _paired(
            f"send OK → live stream p50, {on}",
            spread["p50_ms"],
            "ms",
            single["p50_ms"],
            base,
        ),
        _paired(
            f"send OK → live stream p99, {on}",
            spread["p99_ms"],
            "ms",
            single["p99_ms"],
            base,
        ),
        _paired(
            f"drain after the load stopped, {on}",
            spread["drain_s"],
            "s",
            single["drain_s"],
            base,
        ),
        figure(SCENARIO, "drain after the load stopped, standalone Valkey", single["drain_s"], "s"),
        figure(SCENARIO, f"messages accepted, {on}", spread["accepted"], ""),
        figure(SCENARIO, "messages accepted, standalone Valkey", single["accepted"], ""),
    )
    spread_us: dict[str, float] = spread["cpu_us_per_message"]
    single_us: dict[str, float] = single["cpu_us_per_message"]
    for name in ("user", "message", "notification", "frontend"):
        bench.add(
            _paired(
                f"CPU per message: {name}, on the Cluster"
                if name != "frontend"
                else "CPU per message: frontend (standalone Valkey in both runs)",
                spread_us[name],
                "µs",
                single_us[name],
                base,
            )
        )
    bench.add(
        _paired(
            f"CPU per message: valkey, the {MASTERS} masters summed",
            _valkey_us(spread, masters_only=True),
            "µs",
            single_us["valkey"],
            "the standalone Valkey",
        ),
        *(
            figure(SCENARIO, f"CPU per message: valkey master {i}", spread_us[f"valkey.m{i}"], "µs")
            for i in range(MASTERS)
        ),
        figure(
            SCENARIO,
            "CPU per message: standalone Valkey in the cluster run (FrontendService's bus only)",
            spread_us["valkey"],
            "µs",
        ),
        _paired(
            "CPU per message: every Valkey process (masters + the bus's)",
            _valkey_us(spread),
            "µs",
            single_us["valkey"],
            "the standalone Valkey",
        ),
        _paired(
            "CPU per message: every process (services + Valkey)",
            sum(spread_us.values()),
            "µs",
            sum(single_us.values()),
            base,
        ),
    )
    for hop, text in HOPS:
        bench.add(
            _paired(
                f"messages per relay RPC, {text}, {on}",
                spread["messages_per_relay_call"][hop],
                "",
                single["messages_per_relay_call"][hop],
                base,
            )
        )
    bench.add(
        figure(
            SCENARIO,
            f"idle CPU of every process (no load), share of a core, {on}",
            sum(spread["idle_cpu_share"].values()),
            "",
        ),
        figure(
            SCENARIO,
            "idle CPU of every process (no load), share of a core, standalone Valkey",
            sum(single["idle_cpu_share"].values()),
            "",
        ),
    )
    for key, text in CORRECTNESS:
        bench.add(
            figure(SCENARIO, f"{text}, {on}", spread[key], ""),
            figure(SCENARIO, f"{text}, standalone Valkey", single[key], ""),
        )
