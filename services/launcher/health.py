"""Waiting until every service's gRPC health service reports SERVING, with visible progress."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import httpx

from services.common.healthcheck import CHANNEL_OPTIONS, SERVING, check_async
from services.common.ports import format_address
from services.launcher.config import ServiceSpec
from services.launcher.output import Console

__all__ = ["wait_healthy"]

_CHECK_DEADLINE = 1.0
_POLL_INTERVAL = 0.25
_SPIN_INTERVAL = 0.1
_UNICODE_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ASCII_FRAMES = "|/-\\"

# A server that is not listening yet must be retried promptly, not after gRPC's
# default reconnect backoff (1 s growing to 2 min).
_OPTIONS: list[tuple[str, Any]] = [
    *CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


async def _serving(channel: grpc.aio.Channel) -> bool:
    try:
        return await check_async(channel, deadline=_CHECK_DEADLINE) == SERVING
    except grpc.aio.AioRpcError:
        return False


async def _http_serving(client: httpx.AsyncClient, url: str) -> bool:
    """``GET /health`` answers 200 with status SERVING (HTTP-only components: the web inbox)."""
    try:
        response = await client.get(url, timeout=_CHECK_DEADLINE)
        return response.status_code == 200 and response.json().get("status") == "SERVING"
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


class _Progress:
    """Which services are healthy, shown as a spinner line or as plain lines."""

    def __init__(self, console: Console, names: Sequence[str]) -> None:
        self._console = console
        self._names = tuple(names)
        self.healthy: set[str] = set()

    def mark(self, name: str, elapsed: float) -> None:
        self.healthy.add(name)
        if not self._console.interactive:
            self._console.info(f"{name} is healthy ({elapsed:.1f}s)")

    def line(self, frame: str, elapsed: float) -> str:
        ok, waiting = ("✓", "…") if self._console.unicode else ("ok", "..")
        states = "  ".join(
            f"{name} {ok if name in self.healthy else waiting}" for name in self._names
        )
        return f"{frame} waiting for the services: {states}  ({elapsed:.0f}s)"

    async def spin(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        frames = _UNICODE_FRAMES if self._console.unicode else _ASCII_FRAMES
        for frame in itertools.cycle(frames):
            self._console.status(self.line(frame, loop.time() - started))
            await asyncio.sleep(_SPIN_INTERVAL)


async def _poll(
    console: Console,
    progress: _Progress,
    names: Sequence[str],
    probe: Callable[[str], Awaitable[bool]],
    started: float,
    within: float,
) -> list[str]:
    """Probe the services not yet serving every poll interval; the names still not serving."""
    loop = asyncio.get_running_loop()
    while True:
        pending = [name for name in names if name not in progress.healthy]
        results = await asyncio.gather(*(probe(name) for name in pending))
        for name, serving in zip(pending, results, strict=True):
            if serving:
                progress.mark(name, loop.time() - started)
        if len(progress.healthy) == len(names):
            console.status(None)
            console.info(f"all services are healthy ({loop.time() - started:.1f}s)")
            return []
        if loop.time() - started >= within:
            return [name for name in names if name not in progress.healthy]
        await asyncio.sleep(_POLL_INTERVAL)


async def wait_healthy(
    console: Console, specs: Sequence[ServiceSpec], host: str, within: float
) -> list[str]:
    """Poll every service's health (gRPC Check, or GET /health; 1 s deadline) until all serve.

    Returns the names still not serving after ``within`` seconds (empty when all are).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = _Progress(console, [spec.name for spec in specs])
    if not console.interactive:
        console.info(f"waiting up to {within:g}s for the services to report SERVING")
    channels = {
        spec.name: grpc.aio.insecure_channel(format_address(host, spec.grpc_port), options=_OPTIONS)
        for spec in specs
        if spec.grpc_port is not None
    }
    urls = {
        spec.name: f"http://{format_address(host, spec.rest_port)}/health"
        for spec in specs
        if spec.grpc_port is None and spec.rest_port is not None
    }
    names = [*channels, *urls]
    http = httpx.AsyncClient(trust_env=False)

    async def probe(name: str) -> bool:
        if name in channels:
            return await _serving(channels[name])
        return await _http_serving(http, urls[name])

    spinner = asyncio.create_task(progress.spin(started)) if console.interactive else None
    try:
        return await _poll(console, progress, names, probe, started, within)
    finally:
        if spinner is not None:
            spinner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await spinner
        console.status(None)
        for channel in channels.values():
            await channel.close()
        await http.aclose()
