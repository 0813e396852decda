"""Keepalive within the servers' ping policy, and fast reconnects, on real loopback servers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from missive_client import _channel_options as sdk
from missive_client._wire import GRPC_OPTIONS

from services.common import channels
from services.common.auth import KeyRing, ServiceCredentials, ensure_keys
from services.common.grpc_client import peer_channel
from services.common.grpc_server import add_health_and_reflection, bind_port, create_grpc_server
from services.common.ports import free_port
from tests.helpers.grpc_clients import SERVING, health_status, health_watch, next_status

# --- the settings agree -----------------------------------------------------------------------


def test_internal_keepalive_leaves_a_margin_over_the_server_minimum() -> None:
    client = dict(channels.client_options())
    server = dict(channels.server_options())
    minimum = server["grpc.http2.min_recv_ping_interval_without_data_ms"]
    assert minimum == channels.SERVER_MIN_PING_INTERVAL_MS
    assert client["grpc.keepalive_time_ms"] >= channels.KEEPALIVE_MARGIN * minimum
    assert channels.KEEPALIVE_MARGIN >= 2
    assert server["grpc.http2.max_ping_strikes"] == channels.SERVER_MAX_PING_STRIKES
    assert server["grpc.keepalive_permit_without_calls"] == 1  # idle connections may ping


def test_sdk_keepalive_leaves_a_margin_over_the_server_minimum() -> None:
    minimum_ms = channels.SERVER_MIN_PING_INTERVAL_MS
    # The SDK cannot import the services: its copy of the policy must be the real one.
    assert sdk.SERVER_MIN_PING_INTERVAL_SECONDS * 1000 == minimum_ms
    grpcio = dict(GRPC_OPTIONS)
    assert int(grpcio["grpc.keepalive_time_ms"]) >= channels.KEEPALIVE_MARGIN * minimum_ms
    grpclib = sdk.grpclib_configuration()
    assert grpclib._keepalive_time is not None
    assert grpclib._keepalive_time * 1000 >= channels.KEEPALIVE_MARGIN * minimum_ms
    # grpclib spaces pings by the larger of these two.
    assert grpclib._http2_min_sent_ping_interval_without_data * 1000 >= (
        channels.KEEPALIVE_MARGIN * minimum_ms
    )


def test_reconnect_backoff_is_short_everywhere() -> None:
    for options in (dict(channels.client_options()), dict(GRPC_OPTIONS)):
        assert int(options["grpc.initial_reconnect_backoff_ms"]) <= 100
        assert int(options["grpc.max_reconnect_backoff_ms"]) <= 1_000


# --- an idle stream is not sent GOAWAY ----------------------------------------------------------

# The production policy scaled down 50x, so a test sees many ping intervals in a few seconds.
SCALE = 50
SCALED_MIN_MS = channels.SERVER_MIN_PING_INTERVAL_MS // SCALE


async def _health_server(options: list[tuple[str, Any]]) -> tuple[grpc.aio.Server, int]:
    server = create_grpc_server(options=options)
    health = add_health_and_reflection(server, [])
    port = bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    await server.start()
    await health.set_serving(True)
    return server, port


async def _idle_watch_outcome(client_keepalive_ms: int, idle_seconds: float) -> str:
    """Keep a Health/Watch stream idle under the scaled policy; how it ended ("open" if not)."""
    server, port = await _health_server(
        [
            ("grpc.http2.min_recv_ping_interval_without_data_ms", SCALED_MIN_MS),
            ("grpc.http2.max_ping_strikes", channels.SERVER_MAX_PING_STRIKES),
        ]
    )
    client_options = {
        **dict(channels.client_options()),
        "grpc.keepalive_time_ms": client_keepalive_ms,
    }
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=list(client_options.items()))
    try:
        call = health_watch(channel)
        assert await next_status(call) == SERVING
        try:
            await asyncio.wait_for(call.read(), idle_seconds)
        except TimeoutError:
            return "open"
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return "ended"
    finally:
        await channel.close()
        await server.stop(None)


async def test_an_idle_stream_with_keepalive_is_not_sent_goaway() -> None:
    keepalive_ms = channels.CLIENT_KEEPALIVE_TIME_MS // SCALE
    # ~8 pings in 3 s; two early ones would already be a GOAWAY.
    assert await _idle_watch_outcome(keepalive_ms, idle_seconds=3.0) == "open"


async def test_pinging_at_the_server_minimum_is_sent_goaway() -> None:
    # The control: pinging faster than the policy (as internal channels did at exactly the
    # minimum, with jitter) ends the stream, so the test above can fail.
    outcome = await _idle_watch_outcome(SCALED_MIN_MS // 4, idle_seconds=5.0)
    assert outcome.startswith("UNAVAILABLE"), outcome


# --- a restarted peer is reachable again at once ---------------------------------------------


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> ServiceCredentials:
    keys_dir: Path = tmp_path_factory.mktemp("keys")
    ensure_keys(keys_dir)
    return ServiceCredentials(KeyRing.load(keys_dir, "message"))


async def _restart_delay(channel: grpc.aio.Channel, port: int, down_seconds: float) -> float:
    """Stop the peer, keep calling while it is down, restart it on the same port; seconds
    from its restart until a call on ``channel`` succeeds again."""
    server, _ = await _peer(port)
    assert await health_status(channel, deadline=2.0) == SERVING
    await server.stop(None)
    until = time.monotonic() + down_seconds
    while time.monotonic() < until:  # failing calls push the channel into its backoff
        try:
            await health_status(channel, deadline=0.2)
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    server, _ = await _peer(port)
    started = time.monotonic()
    try:
        while True:
            try:
                await health_status(channel, deadline=0.5)
                return time.monotonic() - started
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.01)
                assert time.monotonic() - started < 10, "the peer never became reachable"
    finally:
        await server.stop(None)


async def _peer(port: int) -> tuple[grpc.aio.Server, int]:
    server = create_grpc_server()
    health = add_health_and_reflection(server, [])
    bind_port(server, "127.0.0.1", port, "TEST_GRPC_PORT")
    await server.start()
    await health.set_serving(True)
    return server, port


async def test_a_restarted_peer_is_reachable_again_within_a_fraction_of_a_second(
    credentials: ServiceCredentials,
) -> None:
    port = free_port()
    channel = peer_channel(f"127.0.0.1:{port}", credentials, target="user")
    try:
        delays = [await _restart_delay(channel, port, down) for down in (1.0, 3.0)]
    finally:
        await channel.close()
    print(f"peer_channel reconnect after restart: {', '.join(f'{d:.3f}s' for d in delays)}")
    # gRPC's default backoff (1 s, x1.6 up to 120 s) took up to ~3.5 s here.
    assert max(delays) < 0.6, delays


async def test_a_wait_for_ready_call_made_while_the_peer_is_down_completes_when_it_is_back(
    credentials: ServiceCredentials,
) -> None:
    port = free_port()
    server, _ = await _peer(port)
    channel = peer_channel(f"127.0.0.1:{port}", credentials, target="user", wait_for_ready=True)
    try:
        assert await health_status(channel) == SERVING
        await server.stop(None)
        waiting = asyncio.create_task(health_status(channel, deadline=5.0))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # not failed at once with UNAVAILABLE
        server, _ = await _peer(port)
        started = time.monotonic()
        assert await waiting == SERVING
        assert time.monotonic() - started < 0.6
    finally:
        await channel.close()
        await server.stop(None)


def test_the_blocking_sdk_channel_reconnects_quickly() -> None:
    port = free_port()

    async def main() -> float:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=list(GRPC_OPTIONS))
        try:
            return await _restart_delay(channel, port, 2.0)
        finally:
            await channel.close()

    # The blocking client's grpcio channel has the same core and options as this one.
    delay = asyncio.run(main())
    print(f"SDK channel reconnect after restart: {delay:.3f}s")
    assert delay < 1.3, delay
