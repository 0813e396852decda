"""Bench scenario 7: the same SendMessage load on 1 and on 2 replicas of every service.

Both runs use the bench's Valkey and the same loader spec: SendMessage in a closed loop
(64 in flight) from the 16 senders to 16 fresh receivers, each receiver with one live
SubscribeNotifications stream (with replicas, the streams alternate between the FrontendService
replicas, so most notifications reach their stream through the fan-out bus). The loader waits
until every accepted message was shown, then each run is checked:

* every accepted message was shown exactly once, on its receiver's stream (none missing, none
  twice, none on another user's stream);
* every accepted message is stored exactly once among its receiver's notifications (listed
  through NotificationService), and nothing else is.

Throughput is counted two ways: SendMessage calls accepted per second of load, and end to end
(accepted messages / time until the last one was shown). With replicas, the MessageService
calls are balanced by the loader's channel (``round_robin``) and the services' own channels;
each replica's gRPC server metrics show the share it handled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from missive.frontend.v1 import frontend_pb2
from missive.notification.v1 import notification_pb2, notification_pb2_grpc

from tests.bench import procs
from tests.bench.figures import figure
from tests.bench.loader import SEND_METHOD
from tests.bench.run import Bench, _check, _drained, _outboxes
from tests.helpers.clients import User, register_and_login
from tests.helpers.replicas import PEER_VARS, Replica, server_calls
from tests.helpers.system import SERVICES, System

REPLICAS = 2
SETTLE_WITHIN = 180.0


@contextlib.asynccontextmanager
async def scaled_out(system: System, count: int) -> AsyncIterator[list[Replica]]:
    """``system`` restarted with ``count`` processes of each service: its own plus
    ``count - 1`` replicas, every peer address listing all of them. On a clean exit the
    replicas stop and the system runs with one process of each again."""
    extra = [
        Replica(system, name, system.base / f"{name}-{k}.log", start=False)
        for name in SERVICES
        for k in range(2, count + 1)
    ]
    saved = dict(system.extra_env)
    for name in SERVICES:
        addresses = [system.grpc_addr(name), *(r.addr for r in extra if r.name == name)]
        system.extra_env[PEER_VARS[name]] = ",".join(addresses)
    try:
        system.stop()
        system.start()
        for replica in extra:
            replica.start()
        await system.wait_healthy()
        await asyncio.gather(*(replica.wait_healthy() for replica in extra))
        yield extra
    finally:
        for replica in extra:
            replica.stop()
        system.extra_env.clear()
        system.extra_env.update(saved)
    system.stop()
    system.start()
    await system.wait_healthy()


async def stored_ids(system: System, receiver: User) -> list[int]:
    """Message ids of every notification stored for ``receiver``, every page."""
    ids: list[int] = []
    token = ""
    async with grpc.aio.insecure_channel(system.grpc_addr("notification")) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        while True:
            page = await stub.ListNotifications(
                notification_pb2.ListNotificationsRequest(
                    email=receiver.email, page_size=100, page_token=token
                ),
                metadata=receiver.metadata,
                timeout=10,
            )
            ids.extend(n.message_id for n in page.notifications)
            token = page.next_page_token
            if not token:
                return ids


def check_stored(accepted: dict[str, list[int]], stored: dict[str, list[int]]) -> dict[str, int]:
    """Accepted messages with no stored notification, stored more than once, and stored
    notifications of no accepted message (per receiver)."""
    missing = twice = foreign = 0
    for email, ids in stored.items():
        wanted = set(accepted.get(email, []))
        seen: set[int] = set()
        for message_id in ids:
            if message_id in seen:
                twice += 1
            seen.add(message_id)
        missing += len(wanted - seen)
        foreign += len(seen - wanted)
    return {"stored_missing": missing, "stored_twice": twice, "stored_foreign": foreign}


def _pids(bench: Bench, extra: list[Replica]) -> dict[str, int]:
    pids = bench.pids()
    for replica in extra:
        k = 2 + sum(1 for name in pids if name.startswith(f"{replica.name}."))
        pids[f"{replica.name}.{k}"] = replica.pid
    return pids


async def _run(bench: Bench, label: str, extra: list[Replica]) -> dict[str, Any]:
    """One loaded, checked run on the processes running now."""
    system: System = bench.system
    receivers = list(
        await asyncio.gather(
            *(register_and_login(system, f"Scale{label}x{i}") for i in range(len(bench.senders)))
        )
    )
    requests = bench.send_requests(receivers)
    for request, receiver in zip(requests, receivers, strict=True):
        request["receiver"] = receiver.email
    streams = [
        {
            "body": base64.b64encode(
                frontend_pb2.SubscribeNotificationsRequest(email=r.email).SerializeToString()
            ).decode(),
            "metadata": [list(pair) for pair in r.metadata],
            "email": r.email,
        }
        for r in receivers
    ]

    def addresses(name: str) -> list[str]:
        return [system.grpc_addr(name), *(r.addr for r in extra if r.name == name)]

    # Warm up first (channels, caches of a process just started), as for the single run.
    warm_up = bench.grpc_spec(",".join(addresses("message")), SEND_METHOD, duration=1.0)
    warmed = await procs.Loader(warm_up).run()
    _check(warmed, f"warm-up, {label} replica(s)")
    async with _outboxes(system) as clients:
        await _drained(clients, within=120)  # its deliveries are not counted in the run
    spec: dict[str, Any] = {
        "kind": "e2e",
        "target": ",".join(addresses("message")),
        "frontends": addresses("frontend"),
        "requests": requests,
        "streams": streams,
        "duration": bench.options.duration,
        "concurrency": 64,
        "rate": None,
        "settle_within": SETTLE_WITHIN,
    }
    message_metrics = [system.metrics_url("message")]
    message_metrics += [r.metrics_url for r in extra if r.name == "message"]
    calls_before = await asyncio.gather(*(server_calls(u, SEND_METHOD) for u in message_metrics))
    pids = _pids(bench, extra)
    before = procs.cpu_snapshot(pids)
    result = await procs.Loader(spec).run()
    cpu = procs.cpu_delta(before, pids)
    calls_after = await asyncio.gather(*(server_calls(u, SEND_METHOD) for u in message_metrics))
    accepted: dict[str, list[int]] = result.pop("accepted_ids", {})
    stored = dict(
        zip(
            (r.email for r in receivers),
            await asyncio.gather(*(stored_ids(system, r) for r in receivers)),
            strict=True,
        )
    )
    calls = [after - was for after, was in zip(calls_after, calls_before, strict=True)]
    wall = result["wall_s"] or 1.0
    return {
        **result,
        **check_stored(accepted, stored),
        "warm_up": {"ok": warmed["ok"], "errors": warmed["errors"], "rps": warmed["rps"]},
        "processes": len(pids) - 1,
        "accepted_per_s": result["accepted"] / wall,
        "end_to_end_per_s": result["accepted"] / (wall + result["settle_s"]),
        "cpu_s": cpu,
        "cpu_us_per_message": sum(cpu.values()) / max(result["accepted"], 1) * 1e6,
        "send_calls_per_replica": calls,
        "smallest_share": min(calls) / max(sum(calls), 1),
    }


def _per_message(run: dict[str, Any], service: str) -> float:
    """CPU µs per accepted message of every process of ``service`` (``name`` or ``name.k``)."""
    cpu: dict[str, float] = run["cpu_s"]
    accepted: int = run["accepted"]
    seconds = sum(s for name, s in cpu.items() if name.split(".")[0] == service)
    return seconds / max(accepted, 1) * 1e6


CORRECTNESS = (
    ("stream_missing", "accepted, never shown on its receiver's live stream"),
    ("stream_twice", "shown twice on a live stream"),
    ("stream_foreign", "shown on another user's live stream"),
    ("stored_missing", "accepted, no stored notification"),
    ("stored_twice", "stored twice"),
    ("stored_foreign", "stored notification of no accepted message"),
)


async def replicas(bench: Bench) -> None:
    single = await _run(bench, "1", [])
    async with scaled_out(bench.system, REPLICAS) as extra:
        double = await _run(bench, str(REPLICAS), extra)
    bench.details["replicas"] = {"1": single, str(REPLICAS): double}
    n = REPLICAS
    one = "the same load, 1 process each"
    bench.add(
        figure(
            "7 replicas",
            f"SendMessage accepted/s, {n} replicas each, 64 in flight, live streams",
            double["accepted_per_s"],
            "rps",
            single["accepted_per_s"],
            one,
        ),
        figure(
            "7 replicas",
            f"end to end (accepted → last shown on a stream), {n} replicas each",
            double["end_to_end_per_s"],
            "/s",
            single["end_to_end_per_s"],
            one,
        ),
        figure(
            "7 replicas",
            f"send OK → live stream p50, {n} replicas each",
            double["p50_ms"],
            "ms",
            single["p50_ms"],
            one,
        ),
        figure(
            "7 replicas",
            f"send OK → live stream p99, {n} replicas each",
            double["p99_ms"],
            "ms",
            single["p99_ms"],
            one,
        ),
        figure(
            "7 replicas",
            f"CPU per message, all {double['processes']} processes + valkey",
            double["cpu_us_per_message"],
            "µs",
            single["cpu_us_per_message"],
            one,
        ),
        figure(
            "7 replicas",
            f"MessageService: smallest replica's share of SendMessage ({n} replicas)",
            double["smallest_share"],
            "",
        ),
        figure("7 replicas", f"messages accepted, {n} replicas each", double["accepted"], ""),
        figure("7 replicas", "messages accepted, 1 process each", single["accepted"], ""),
    )
    for name in ("valkey", *SERVICES):
        bench.add(
            figure(
                "7 replicas",
                f"CPU per message: {name}" + ("" if name == "valkey" else f", {n} processes"),
                _per_message(double, name),
                "µs",
                _per_message(single, name),
                one,
            )
        )
    bus = (_per_message(double, "frontend") - _per_message(single, "frontend")) / (n - 1)
    bench.add(
        figure(
            "7 replicas",
            "FrontendService CPU per message added by each more replica (the fan-out bus)",
            bus,
            "µs",
        )
    )
    for key, text in CORRECTNESS:
        bench.add(
            figure("7 replicas", f"{text}, {n} replicas each", double[key], ""),
            figure("7 replicas", f"{text}, 1 process each", single[key], ""),
        )
