"""The bench scenarios on one running system, each next to its bare baseline of the same run."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2

from services.common.ports import free_port
from tests.bench import procs
from tests.bench.catchup import MESSAGE_DB, NOTIFICATION_DB, backlog, catch_up, register_receiver
from tests.bench.echo_server import ECHO_METHOD, STORE_PREFIX
from tests.bench.figures import Figure, figure
from tests.bench.loader import SEND_METHOD
from tests.bench.relay_calls import HOPS, relay_calls
from tests.helpers.clients import User, register_and_login
from tests.helpers.system import SERVICES, System

SCENARIOS = ("send", "latency", "rest", "catchup", "memory", "streams", "replicas", "cluster")
CONTENT = "Hello! Are we still on for lunch tomorrow at noon? I'll bring the notes."
SENDERS = 16
IN_FLIGHT = 64
OUTBOXES = (("outbox:notifications", MESSAGE_DB), ("outbox:frontend", NOTIFICATION_DB))
STORE_DB = 15  # the storing echo's keys, apart from the services' databases


@dataclass
class Options:
    scenarios: tuple[str, ...] = SCENARIOS
    duration: float = 5.0
    catchup_count: int = 5000
    catchup_receivers: int = 20
    streams: int = 2000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _grpc_request(body: bytes, user: User) -> dict[str, Any]:
    return {"body": _b64(body), "metadata": [list(pair) for pair in user.metadata]}


@dataclass
class Bench:
    """A started system plus the echo baseline; scenarios append figures and details."""

    system: System
    options: Options
    echo_port: int
    echo_pid: int
    senders: list[User] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    # -- helpers --------------------------------------------------------------------------

    def pids(self, *names: str) -> dict[str, int]:
        """Valkey's pid and each service's (of ``names``, default every service)."""
        pids = {"valkey": self.system.valkey.pid or 0}
        for name in names or SERVICES:
            process = self.system.services[name].process
            assert process is not None, f"{name} is not running"
            pids[name] = process.pid
        return pids

    def send_requests(self, receivers: list[User] | None = None) -> list[dict[str, Any]]:
        """Pre-serialised SendMessage requests: sender i to receiver i (default: sender i+1)."""
        receivers = receivers or self.senders[1:] + self.senders[:1]
        return [
            _grpc_request(
                message_pb2.SendMessageRequest(
                    sender_email=sender.email, receiver_email=receiver.email, content=CONTENT
                ).SerializeToString(),
                sender,
            )
            for sender, receiver in zip(
                self.senders, _cycle(receivers, len(self.senders)), strict=True
            )
        ]

    def grpc_spec(self, target: str, method: str, **load: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": "grpc",
            "target": target,
            "method": method,
            "requests": self.send_requests(),
        }
        spec.update(duration=self.options.duration, concurrency=IN_FLIGHT, rate=None)
        spec.update(load)
        return spec

    @property
    def echo_target(self) -> str:
        return f"127.0.0.1:{self.echo_port}"

    async def echo_throughput(self) -> dict[str, Any]:
        """The echo server at IN_FLIGHT calls in flight, with its CPU (measured once a run)."""
        if "echo_throughput" not in self.details:
            before = procs.cpu_seconds(self.echo_pid)
            echo = await procs.Loader(self.grpc_spec(self.echo_target, ECHO_METHOD)).run()
            echo["server_cpu_s"] = procs.cpu_seconds(self.echo_pid) - before
            _check(echo, "echo")
            self.details["echo_throughput"] = echo
        result: dict[str, Any] = self.details["echo_throughput"]
        return result

    async def store_throughput(self) -> dict[str, Any]:
        """The storing echo (one RPC, one durable write) at IN_FLIGHT calls in flight, with its
        CPU and Valkey's; its keys are flushed afterwards."""
        port = free_port()
        url = f"{self.system.valkey.url}?db={STORE_DB}"
        with procs.server_process("tests.bench.echo_server", str(port), url) as server:
            await procs.wait_port(port, server)
            pids = {"server": server.pid, "valkey": self.system.valkey.pid or 0}
            before = procs.cpu_snapshot(pids)
            result = await procs.Loader(self.grpc_spec(f"127.0.0.1:{port}", ECHO_METHOD)).run()
            result["cpu_s"] = procs.cpu_delta(before, pids)
        async with redis.asyncio.Redis.from_url(self.system.valkey.url, db=STORE_DB) as client:
            result["stored"] = int(await client.get(f"{STORE_PREFIX}id") or 0)
            await client.flushdb()
        _check(result, "storing echo")
        self.details["store_throughput"] = result
        return result

    async def send_alone(self) -> dict[str, Any]:
        """SendMessage with NotificationService and FrontendService stopped (MessageService's
        relay backs off and reads nothing: the send path and its one write alone), with the CPU
        of the processes still running; then both restarted and what was sent meanwhile
        delivered."""
        self.system.stop("notification", "frontend")
        try:
            pids = self.pids("user", "message")
            before = procs.cpu_snapshot(pids)
            spec = self.grpc_spec(self.system.grpc_addr("message"), SEND_METHOD)
            result = await procs.Loader(spec).run()
            result["cpu_s"] = procs.cpu_delta(before, pids)
        finally:
            self.system.start("notification", "frontend")
        await self.system.wait_healthy()
        async with _outboxes(self.system) as clients:
            await _drained(clients, within=300)
        _check(result, "SendMessage with nothing downstream")
        self.details["send_alone"] = result
        return result

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    # -- scenarios 1, 2 and 4: SendMessage at full load, CPU per message, backlog ------------

    async def send(self) -> None:
        echo = await self.echo_throughput()
        store = await self.store_throughput()
        pids = self.pids()
        calls_before = await relay_calls(self.system)
        before = procs.cpu_snapshot(pids)
        loader = procs.Loader(self.grpc_spec(self.system.grpc_addr("message"), SEND_METHOD))
        async with _outboxes(self.system) as clients:
            await loader.start()
            sampler = asyncio.create_task(_sample_backlog(clients))
            try:
                await loader.load_done()
                stopped = time.monotonic()
                at_stop = await _backlogs(clients)
                sampler.cancel()
                samples = await asyncio.gather(sampler, return_exceptions=True)
                await _drained(clients, within=120)
                drain_s = time.monotonic() - stopped
                result = await loader.result()
            finally:
                sampler.cancel()
                await loader.close()
        cpu = procs.cpu_delta(before, pids)
        calls_after = await relay_calls(self.system)
        _check(result, "SendMessage")
        series = samples[0] if isinstance(samples[0], list) else []
        calls = {hop: calls_after[hop] - calls_before[hop] for hop in calls_after}
        self.details["send"] = {
            **result,
            "cpu_s": cpu,
            "backlog_samples": series,
            "relay_calls": calls,
        }
        self._send_figures(result, echo, store, cpu, series, at_stop, drain_s)
        for hop, text in HOPS:
            per_call = result["ok"] / calls[hop] if calls[hop] else None
            self.add(figure("4 backlog", f"messages per relay RPC, {text}", per_call, ""))
        alone = await self.send_alone()
        self.add(
            figure(
                "1 send",
                "SendMessage with NotificationService and FrontendService stopped",
                alone["rps"],
                "rps",
                echo["rps"],
                "bare grpc.aio echo",
            ),
            figure(
                "2 cpu",
                "CPU per message with them stopped: message + user + valkey",
                sum(alone["cpu_s"].values()) / max(alone["ok"], 1) * 1e6,
                "µs",
                echo["server_cpu_s"] / max(echo["ok"], 1) * 1e6,
                "echo server per request",
            ),
        )

    def _send_figures(
        self,
        result: dict[str, Any],
        echo: dict[str, Any],
        store: dict[str, Any],
        cpu: dict[str, float],
        series: list[dict[str, Any]],
        at_stop: dict[str, int],
        drain_s: float,
    ) -> None:
        echo_label = "bare grpc.aio echo"
        self.add(
            figure(
                "1 send",
                "SendMessage throughput, 64 in flight",
                result["rps"],
                "rps",
                echo["rps"],
                echo_label,
            ),
            # What one RPC and one durable write leave of the echo: the most any send could reach.
            figure(
                "1 send",
                "one RPC + one Valkey write script, 64 in flight",
                store["rps"],
                "rps",
                echo["rps"],
                echo_label,
            ),
            figure(
                "1 send",
                "SendMessage p50 at full load",
                result["p50_ms"],
                "ms",
                echo["p50_ms"],
                echo_label,
            ),
            figure(
                "1 send",
                "SendMessage p99 at full load",
                result["p99_ms"],
                "ms",
                echo["p99_ms"],
                echo_label,
            ),
            figure(
                "1 send",
                "loader CPU share (1 = a whole core)",
                result["loader_cpu_share"],
                "",
                echo["loader_cpu_share"],
                "loader on echo",
            ),
        )
        delivered = max(result["ok"], 1)
        per_echo = max(echo["ok"], 1)
        echo_total = (echo["server_cpu_s"] + echo["loader_cpu_s"]) / per_echo * 1e6
        for name, seconds in cpu.items():
            self.add(
                figure(
                    "2 cpu", f"CPU per delivered message: {name}", seconds / delivered * 1e6, "µs"
                )
            )
        system_us = sum(cpu.values()) / delivered * 1e6
        self.add(
            figure(
                "2 cpu",
                "CPU per delivered message: loader",
                result["loader_cpu_us_per_request"],
                "µs",
                echo["loader_cpu_us_per_request"],
                "loader on echo",
            ),
            figure(
                "2 cpu",
                "CPU per delivered message: all services + valkey",
                system_us,
                "µs",
                echo["server_cpu_s"] / per_echo * 1e6,
                "echo server per request",
            ),
            figure(
                "2 cpu",
                "CPU per call of one RPC + one write: server + valkey",
                sum(store["cpu_s"].values()) / max(store["ok"], 1) * 1e6,
                "µs",
                echo["server_cpu_s"] / per_echo * 1e6,
                "echo server per request",
            ),
            figure(
                "2 cpu",
                "CPU per delivered message: everything incl. loader",
                system_us + (result["loader_cpu_us_per_request"] or 0),
                "µs",
                echo_total,
                "echo server + loader",
            ),
        )
        for stream, _ in OUTBOXES:
            peak = max((s[stream] for s in series), default=0)
            self.add(
                figure("4 backlog", f"{stream}: peak backlog during load", peak, "entries"),
                figure(
                    "4 backlog", f"{stream}: backlog when load stopped", at_stop[stream], "entries"
                ),
            )
        self.add(figure("4 backlog", "drain after the load stopped", drain_s, "s"))

    # -- scenario 3: end-to-end latency --------------------------------------------------------

    async def latency(self) -> None:
        light = self.options.duration
        bare = await procs.Loader(
            self.grpc_spec(self.echo_target, ECHO_METHOD, concurrency=1, rate=50.0, duration=light)
        ).run()
        _check(bare, "echo light")
        receivers = list(
            await asyncio.gather(
                *(register_and_login(self.system, f"Watcher{i}") for i in range(4))
            )
        )
        streams = [
            _grpc_request(
                frontend_pb2.SubscribeNotificationsRequest(email=r.email).SerializeToString(), r
            )
            for r in receivers
        ]
        base: dict[str, Any] = {
            "kind": "e2e",
            "target": self.system.grpc_addr("message"),
            "frontend": self.system.grpc_addr("frontend"),
        }
        base.update(requests=self.send_requests(receivers), streams=streams)
        slow = await procs.Loader({**base, "concurrency": 1, "rate": 50.0, "duration": light}).run()
        _check(slow, "end-to-end light")
        if "send" in self.details:
            max_rps = self.details["send"]["rps"]
        else:
            probe = await procs.Loader(
                self.grpc_spec(self.system.grpc_addr("message"), SEND_METHOD)
            ).run()
            max_rps = probe["rps"]
        half = await procs.Loader(
            {**base, "concurrency": IN_FLIGHT, "rate": max(max_rps / 2, 1.0), "duration": light}
        ).run()
        _check(half, "end-to-end half load")
        self.details["latency"] = {
            "bare_unary_light": bare,
            "light": slow,
            "half_load": half,
            "half_rate": max_rps / 2,
        }
        label = "one bare unary RPC, 1 in flight"
        self.add(
            figure(
                "3 e2e",
                "send OK → live stream, light load, p50",
                slow["p50_ms"],
                "ms",
                bare["p50_ms"],
                label,
            ),
            figure(
                "3 e2e",
                "send OK → live stream, light load, p99",
                slow["p99_ms"],
                "ms",
                bare["p99_ms"],
                label,
            ),
            figure(
                "3 e2e",
                "send call start → live stream, light load, p50",
                slow["from_call_start_p50_ms"],
                "ms",
                bare["p50_ms"],
                label,
            ),
            figure(
                "3 e2e",
                f"send OK → live stream at half max rate ({max_rps / 2:.0f}/s), p50",
                half["p50_ms"],
                "ms",
                bare["p50_ms"],
                label,
            ),
            figure(
                "3 e2e",
                f"send OK → live stream at half max rate ({max_rps / 2:.0f}/s), p99",
                half["p99_ms"],
                "ms",
                bare["p99_ms"],
                label,
            ),
        )

    # -- scenario 5: catch-up --------------------------------------------------------------------

    async def catchup(self) -> None:
        echo = await self.echo_throughput()
        receivers = list(
            await asyncio.gather(
                *(register_receiver(self.system, i) for i in range(self.options.catchup_receivers))
            )
        )
        result = await catch_up(
            self.system, self.senders[:2], receivers, self.options.catchup_count
        )
        self.details["catchup"] = result
        label = "bare echo rps, 64 in flight"
        self.add(
            figure(
                "5 catch-up",
                f"hop 1 (→ NotificationService), {result['sent']:.0f} backlogged",
                result["hop1_per_s"],
                "/s",
                echo["rps"],
                label,
            ),
            figure(
                "5 catch-up",
                f"hop 2 (→ FrontendService), {result['sent']:.0f} backlogged",
                result["hop2_per_s"],
                "/s",
                echo["rps"],
                label,
            ),
            figure(
                "5 catch-up", "first delivery after restart, hop 1", result["hop1_first_s"], "s"
            ),
            figure("5 catch-up", "dead letters", result["dead_letters"], ""),
        )

    # -- scenario 6: Redis memory ------------------------------------------------------------

    async def memory(self) -> None:
        url = self.system.valkey.url
        async with redis.asyncio.Redis.from_url(url, db=MESSAGE_DB) as db1:
            messages_bytes, message_keys, json_bytes = await _db_usage(db1, "message:")
        async with redis.asyncio.Redis.from_url(url, db=NOTIFICATION_DB) as db2:
            notification_bytes, _, _ = await _db_usage(db2, None)
        count = max(message_keys, 1)
        json_size = json_bytes / count
        self.details["memory"] = {
            "messages": message_keys,
            "message_db_bytes": messages_bytes,
            "notification_db_bytes": notification_bytes,
            "message_json_bytes_mean": json_size,
        }
        label = "message JSON size"
        self.add(
            figure(
                "6 memory",
                f"MessageService DB per message ({message_keys} stored)",
                messages_bytes / count,
                "B",
                json_size,
                label,
            ),
            figure(
                "6 memory",
                "NotificationService DB per message",
                notification_bytes / count,
                "B",
                json_size,
                label,
            ),
            figure(
                "6 memory",
                "Redis bytes per stored message, total",
                (messages_bytes + notification_bytes) / count,
                "B",
                json_size,
                label,
            ),
        )


def _cycle(items: list[User], n: int) -> list[User]:
    return [items[i % len(items)] for i in range(n)]


def _check(result: dict[str, Any], what: str) -> None:
    if not result["ok"]:
        raise RuntimeError(f"{what}: no call succeeded ({result['first_error']})")


@contextlib.asynccontextmanager
async def _outboxes(system: System) -> Any:
    clients = {
        # A bounded read: a command whose reply never comes fails the run instead of hanging it.
        stream: redis.asyncio.Redis.from_url(
            system.valkey.url, db=db, decode_responses=True, socket_timeout=10
        )
        for stream, db in OUTBOXES
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def _backlogs(clients: dict[str, redis.asyncio.Redis]) -> dict[str, int]:
    return {stream: await backlog(client, stream) for stream, client in clients.items()}


async def _sample_backlog(clients: dict[str, redis.asyncio.Redis]) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            samples.append({"t": time.monotonic() - started, **await _backlogs(clients)})
            await asyncio.sleep(0.2)
    return samples


async def _drained(clients: dict[str, redis.asyncio.Redis], within: float) -> None:
    deadline = time.monotonic() + within
    while any((await _backlogs(clients)).values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the outboxes did not drain within {within:.0f}s")
        await asyncio.sleep(0.01)


async def _db_usage(client: redis.asyncio.Redis, count_prefix: str | None) -> tuple[int, int, int]:
    """MEMORY USAGE summed over every key of the DB; keys named ``prefix<n>`` and their STRLEN."""
    total = counted = strlen = 0
    keys = [key async for key in client.scan_iter(count=1000)]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key, samples=0)
            usages = await pipe.execute()
        total += sum(u or 0 for u in usages)
    if count_prefix is not None:
        prefix = count_prefix.encode()
        messages = [k for k in keys if k.startswith(prefix) and k[len(prefix) :].isdigit()]
        counted = len(messages)
        async with client.pipeline(transaction=False) as pipe:
            for key in messages:
                pipe.strlen(key)
            strlen = sum(await pipe.execute())
    return total, counted, strlen


async def start_bench(base: Path, options: Options, echo_port: int, echo_pid: int) -> Bench:
    """Valkey and the four services started and healthy, with 16 signed-in senders; on any
    failure (or Ctrl-C) on the way, everything started is stopped again."""
    system = System.create(base, NOTIFICATION_RETENTION="100000", USER_TOKEN_TTL="3600")
    bench = Bench(system, options, echo_port, echo_pid)
    try:
        system.start()
        await system.wait_healthy()
        bench.senders = list(
            await asyncio.gather(
                *(register_and_login(system, f"Sender{i}") for i in range(SENDERS))
            )
        )
    except BaseException:
        system.close()
        raise
    return bench


def dump(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
