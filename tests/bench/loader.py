"""The load generator: a separate process sending pre-serialised requests.

``python -m tests.bench.loader SPEC.json`` reads a spec written by the bench, runs it and prints
one JSON line of results on stdout. Kinds:

* ``grpc`` - unary calls of one method with pre-serialised request bytes (no serialisation
  in the loop), closed loop (``concurrency`` calls in flight) or paced (``rate`` per second,
  at most ``concurrency`` in flight);
* ``http`` - HTTP/1.1 requests over keep-alive connections, raw asyncio streams, one connection
  per in-flight request (same closed-loop / paced modes);
* ``e2e`` - SendMessage calls (paced or closed loop) while live SubscribeNotifications streams
  of the receivers are open (spread over ``frontends`` when it lists several FrontendService
  replicas): time from SendMessage OK to the stream yielding that message, and what each
  stream showed: every accepted message once on its receiver's stream, nothing twice;
* ``hold`` - open the given SubscribeNotifications streams, each on its own connection (as
  many clients would), ``open_rate`` a second, and keep them open (one ended with
  UNAVAILABLE is opened again, as a client reconnects) until SIGTERM or ``hold`` seconds
  passed; then close them and report how many ended early, and why.

A ``target`` may list several replicas (``host:port,host:port``): the channel balances over
them (``round_robin``), as the services' own channels do.

The loader reports its own CPU time (user + system, all threads) over the load phase.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import uvloop

from services.common.channels import is_multi_target, parse_target

SEND_METHOD = "/missive.message.v1.MessageService/SendMessage"
LOAD_DONE = "load done"
SUBSCRIBE_METHOD = "/missive.frontend.v1.FrontendService/SubscribeNotifications"


@dataclass
class Tally:
    """Outcomes and latencies of one load phase."""

    ok: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def failed(self, reason: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = reason[:300]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


async def closed_loop(
    one: Callable[[int], Awaitable[None]], concurrency: int, duration: float
) -> None:
    """``concurrency`` workers calling ``one`` back to back until ``duration`` has passed."""
    deadline = time.perf_counter() + duration
    counter = iter(range(sys.maxsize))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await one(next(counter))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def paced(
    one: Callable[[int], Awaitable[None]], concurrency: int, rate: float, duration: float
) -> None:
    """Start ``one`` ``rate`` times a second (at most ``concurrency`` in flight)."""
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    n = 0

    async def run(i: int) -> None:
        try:
            await one(i)
        finally:
            slots.release()

    while n / rate < duration:
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(run(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks)


async def drive(spec: dict[str, Any], one: Callable[[int], Awaitable[None]]) -> None:
    if spec.get("rate"):
        await paced(one, spec["concurrency"], spec["rate"], spec["duration"])
    else:
        await closed_loop(one, spec["concurrency"], spec["duration"])


def channel(address: str) -> grpc.aio.Channel:
    """A channel to ``address``; one to a list of replicas balances over them."""
    if is_multi_target(address):
        options = [("grpc.lb_policy_name", "round_robin")]
        return grpc.aio.insecure_channel(parse_target(address), options=options)
    return grpc.aio.insecure_channel(address)


def _requests(spec: dict[str, Any]) -> list[tuple[bytes, tuple[tuple[str, str], ...]]]:
    return [
        (base64.b64decode(item["body"]), tuple((k, v) for k, v in item.get("metadata", [])))
        for item in spec["requests"]
    ]


async def run_grpc(spec: dict[str, Any], tally: Tally) -> None:
    requests = _requests(spec)
    async with channel(spec["target"]) as grpc_channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        call = grpc_channel.unary_unary(spec["method"])  # bytes in, bytes out

        async def one(i: int) -> None:
            body, metadata = requests[i % len(requests)]
            began = time.perf_counter()
            try:
                await call(body, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                tally.failed(f"{exc.code().name}: {exc.details()}")
                return
            tally.latencies.append(time.perf_counter() - began)
            tally.ok += 1

        await call(requests[0][0], metadata=requests[0][1], timeout=30)  # connect first
        await measured(spec, tally, lambda: drive(spec, one))


async def _read_reply(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at >= 0:
        length = int(lower[at + 15 : lower.index(b"\r\n", at)])
        await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def run_http(spec: dict[str, Any], tally: Tally) -> None:
    host, port = spec["target"].rsplit(":", 1)
    requests = [base64.b64decode(item["body"]) for item in spec["requests"]]
    expected = int(spec["status"])
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(spec["concurrency"]):
        idle.append(await asyncio.open_connection(host, int(port)))

    async def one(i: int) -> None:
        reader, writer = idle.pop()
        began = time.perf_counter()
        try:
            writer.write(requests[i % len(requests)])
            status = await _read_reply(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.failed(f"{type(exc).__name__}: {exc}")
            writer.close()
            idle.append(await asyncio.open_connection(host, int(port)))
            return
        idle.append((reader, writer))
        if status != expected:
            tally.failed(f"HTTP {status}, expected {expected}")
            return
        tally.latencies.append(time.perf_counter() - began)
        tally.ok += 1

    await one(0)  # warm the path
    tally.ok, tally.latencies = 0, []
    try:
        await measured(spec, tally, lambda: drive(spec, one))
    finally:
        for _, writer in idle:
            writer.close()


@dataclass
class Arrivals:
    """When each message's SendMessage returned OK, and when a live stream first yielded it."""

    tally: Tally
    called_at: dict[int, float] = field(default_factory=dict)
    sent_at: dict[int, float] = field(default_factory=dict)
    seen_at: dict[int, float] = field(default_factory=dict)
    sent_to: dict[int, str] = field(default_factory=dict)
    shown: dict[tuple[str, int], int] = field(default_factory=dict)
    moved: asyncio.Event = field(default_factory=asyncio.Event)

    async def watch(self, stream: Any, email: str = "") -> None:
        try:
            async for notification in stream:
                self.seen_at.setdefault(notification.message_id, time.perf_counter())
                key = (email, notification.message_id)
                self.shown[key] = self.shown.get(key, 0) + 1
                self.moved.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.tally.failed(f"stream {exc.code().name}: {exc.details()}")

    async def settle(self, within: float) -> None:
        """Until every sent message was seen (or ``within`` seconds passed)."""
        deadline = time.perf_counter() + within
        while not self.sent_at.keys() <= self.seen_at.keys():
            self.moved.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.moved.wait(), remaining)

    def count(self) -> None:
        """Latency from OK (0 when the stream was first); also from the call's start."""
        from_call: list[float] = []
        for message_id, at in self.sent_at.items():
            if message_id in self.seen_at:
                self.tally.latencies.append(max(0.0, self.seen_at[message_id] - at))
                from_call.append(self.seen_at[message_id] - self.called_at[message_id])
                self.tally.ok += 1
            else:
                self.tally.failed(f"message {message_id} never reached the live stream")
        early = sum(
            1 for message_id, at in self.sent_at.items() if self.seen_at.get(message_id, at) < at
        )
        self.tally.extra["stream_before_ok"] = early
        self.tally.extra["accepted"] = len(self.sent_at)
        if self.sent_to:  # the receivers are known: check what each one's stream showed
            expected = {(email, message_id) for message_id, email in self.sent_to.items()}
            self.tally.extra["stream_missing"] = len(expected - self.shown.keys())
            self.tally.extra["stream_twice"] = sum(n - 1 for n in self.shown.values() if n > 1)
            self.tally.extra["stream_foreign"] = len(self.shown.keys() - expected)
            accepted: dict[str, list[int]] = {}
            for message_id, email in sorted(self.sent_to.items()):
                accepted.setdefault(email, []).append(message_id)
            self.tally.extra["accepted_ids"] = accepted
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            value = percentile(from_call, q)
            self.tally.extra[f"from_call_start_{name}_ms"] = None if value is None else value * 1000


async def run_e2e(spec: dict[str, Any], tally: Tally) -> None:
    from missive.message.v1 import message_pb2
    from missive.notification.v1 import notification_pb2

    requests = _requests(spec)
    receivers = [item.get("receiver", "") for item in spec["requests"]]
    arrivals = Arrivals(tally)
    frontends = [channel(address) for address in spec.get("frontends") or [spec["frontend"]]]
    async with channel(spec["target"]) as grpc_channel, contextlib.AsyncExitStack() as stack:
        for frontend in frontends:
            stack.push_async_callback(frontend.close)
        send: grpc.aio.UnaryUnaryMultiCallable[bytes, message_pb2.SendMessageResponse]
        send = grpc_channel.unary_unary(
            SEND_METHOD, response_deserializer=message_pb2.SendMessageResponse.FromString
        )
        subscribe: list[grpc.aio.UnaryStreamMultiCallable[bytes, notification_pb2.Notification]]
        subscribe = [
            frontend.unary_stream(
                SUBSCRIBE_METHOD, response_deserializer=notification_pb2.Notification.FromString
            )
            for frontend in frontends
        ]
        streams = [
            subscribe[n % len(subscribe)](
                base64.b64decode(s["body"]), metadata=tuple(map(tuple, s["metadata"]))
            )
            for n, s in enumerate(spec["streams"])
        ]
        watchers = [
            asyncio.create_task(arrivals.watch(stream, s.get("email", "")))
            for stream, s in zip(streams, spec["streams"], strict=True)
        ]
        await asyncio.sleep(0.5)  # the streams are registered with FrontendService

        async def one(i: int) -> None:
            body, metadata = requests[i % len(requests)]
            began = time.perf_counter()
            try:
                reply = await send(body, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                tally.failed(f"{exc.code().name}: {exc.details()}")
                return
            arrivals.sent_at[reply.message.id] = time.perf_counter()
            arrivals.called_at[reply.message.id] = began
            if receivers[i % len(requests)]:
                arrivals.sent_to[reply.message.id] = receivers[i % len(requests)]

        await measured(spec, tally, lambda: drive(spec, one))
        settling = time.perf_counter()
        await arrivals.settle(within=spec.get("settle_within", 15))
        tally.extra["settle_s"] = time.perf_counter() - settling
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    arrivals.count()


REOPENS = 5
"""Times a stream ended with UNAVAILABLE (the contract's "reconnect") is opened again."""


async def run_hold(spec: dict[str, Any], tally: Tally) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    items = spec["streams"]
    channels = [grpc.aio.insecure_channel(spec["frontend"]) for _ in items]
    calls: dict[int, grpc.aio.UnaryStreamCall[bytes, bytes]] = {}
    reasons: dict[str, int] = {}
    reopened = 0
    started = time.perf_counter()

    async def hold(n: int) -> None:
        nonlocal reopened
        await asyncio.sleep(max(0.0, started + n / spec["open_rate"] - time.perf_counter()))
        subscribe: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
        subscribe = channels[n].unary_stream(SUBSCRIBE_METHOD)  # bytes: nothing is expected
        body, metadata = base64.b64decode(items[n]["body"]), _metadata(items[n])
        for attempt in range(REOPENS + 1):
            calls[n] = subscribe(body, metadata=metadata)
            code, reason = None, "a stream ended"
            try:
                async for _ in calls[n]:
                    pass
            except grpc.aio.AioRpcError as exc:
                code, reason = exc.code(), f"stream {exc.code().name}: {exc.details()}"
            if stop.is_set():
                return
            if code != grpc.StatusCode.UNAVAILABLE or attempt == REOPENS:
                break
            reopened += 1  # as a client reconnects, after a pause
            await asyncio.sleep(0.5 * (attempt + 1))
        tally.failed(reason)
        reasons[reason] = reasons.get(reason, 0) + 1

    holders = [asyncio.create_task(hold(n)) for n in range(len(items))]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), spec["hold"])
    stop.set()
    _phase["wall_s"] = time.perf_counter() - started
    for call in calls.values():
        call.cancel()
    for holder in holders:
        holder.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    for channel in channels:
        await channel.close()
    tally.ok = len(items) - tally.errors
    tally.extra.update(ended_early=reasons, reopened=reopened)


def _metadata(item: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in item["metadata"])


_phase: dict[str, float] = {}


async def measured(spec: dict[str, Any], tally: Tally, body: Callable[[], Awaitable[None]]) -> None:
    """Run the load phase, recording its wall and CPU time."""
    cpu, wall = time.process_time(), time.perf_counter()
    await body()
    _phase["wall_s"] = time.perf_counter() - wall
    _phase["cpu_s"] = time.process_time() - cpu
    print(LOAD_DONE, flush=True)  # the bench times the drain from this line


RUNNERS = {"grpc": run_grpc, "http": run_http, "e2e": run_e2e, "hold": run_hold}


def report(tally: Tally) -> dict[str, Any]:
    wall = _phase.get("wall_s", 0.0)
    cpu = _phase.get("cpu_s", 0.0)
    count = tally.ok + tally.errors
    p50, p99 = percentile(tally.latencies, 0.5), percentile(tally.latencies, 0.99)
    return {
        "ok": tally.ok,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "wall_s": wall,
        "rps": tally.ok / wall if wall else 0.0,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "loader_cpu_s": cpu,
        "loader_cpu_share": cpu / wall if wall else 0.0,
        "loader_cpu_us_per_request": cpu / count * 1e6 if count else None,
        **tally.extra,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    tally = Tally()
    load = RUNNERS[spec["kind"]](spec, tally)
    if spec["kind"] == "http":  # the raw HTTP client is faster on uvloop; grpc.aio has its own
        uvloop.run(load)
    else:
        asyncio.run(load)
    print(json.dumps(report(tally)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
