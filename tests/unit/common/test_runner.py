"""serve(): SIGTERM drains in-flight calls and exits 0 in time; busy ports exit 2 with one line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from starlette.applications import Starlette

from services.common.grpc_server import add_health_and_reflection, bind_port, create_grpc_server
from services.common.ports import free_port
from services.common.runner import serve
from tests.helpers.grpc_clients import NOT_SERVING, SERVING, health_watch, next_status
from tests.helpers.grpc_clients import wait_for_status as _wait_for_status
from tests.helpers.runner_app import NAME, SLEEPER

ROOT = Path(__file__).resolve().parents[3]
GRACE = 1.0


@dataclass
class App:
    process: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    output: Path

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    async def wait_serving(self, channel: grpc.aio.Channel) -> None:
        try:
            await _wait_for_status(channel, SERVING, within=10)
        except AssertionError:
            raise AssertionError("\n".join(self.lines())) from None


StartApp = Callable[..., App]
Sleep = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[StartApp]:
    """Starts tests/helpers/runner_app.py on free ports; kills whatever is left at the end."""
    apps: list[App] = []

    def start(**overrides: str) -> App:
        rest_port, grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(
            RUNNER_REST_PORT=str(rest_port),
            RUNNER_GRPC_PORT=str(grpc_port),
            RUNNER_GRACE=str(GRACE),
        )
        env.update(overrides)
        output = tmp_path / f"app-{len(apps)}.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.runner_app"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        app = App(process, int(env["RUNNER_REST_PORT"]), int(env["RUNNER_GRPC_PORT"]), output)
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.process.poll() is None:
            app.process.kill()
            app.process.wait()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_sigterm_drains_in_flight_calls_and_exits_zero(
    start_app: StartApp, redis_url: str
) -> None:
    app = start_app(REDIS_URL=redis_url)  # health checks ping the real Valkey
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.rest_port}") as http,
    ):
        await app.wait_serving(channel)
        assert (await http.get("/health")).text == "ok"
        watch = health_watch(channel)
        assert await next_status(watch) == SERVING

        sleep: Sleep = channel.unary_unary(f"/{SLEEPER}/Sleep")
        grpc_call = asyncio.ensure_future(sleep(b"0.6", timeout=5))
        rest_call = asyncio.ensure_future(http.get("/slow", params={"seconds": "0.6"}))
        await asyncio.sleep(0.2)  # both requests are in the server now

        signalled = time.monotonic()
        app.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(1):
            assert await next_status(watch) == NOT_SERVING
        watch.cancel()

        assert await grpc_call == b"done"
        assert (await rest_call).text == "done"
        code = await asyncio.to_thread(app.process.wait, GRACE + 2)
        elapsed = time.monotonic() - signalled

    assert code == 0
    assert elapsed < GRACE + 2
    output = "\n".join(app.lines())
    assert f"{NAME}: received SIGTERM; shutting down" in output
    assert f"{NAME}: stopped" in output
    assert "Traceback" not in output


async def test_calls_longer_than_grace_are_cut_off_in_time(start_app: StartApp) -> None:
    app = start_app()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.rest_port}") as http,
    ):
        await app.wait_serving(channel)
        sleep: Sleep = channel.unary_unary(f"/{SLEEPER}/Sleep")
        grpc_call = asyncio.ensure_future(sleep(b"30", timeout=30))
        rest_call = asyncio.ensure_future(http.get("/slow", params={"seconds": "30"}, timeout=30))
        await asyncio.sleep(0.2)

        signalled = time.monotonic()
        app.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(app.process.wait, GRACE + 2)
        elapsed = time.monotonic() - signalled
        with pytest.raises(grpc.aio.AioRpcError):
            await grpc_call
        assert (await rest_call).status_code == 500  # uvicorn's answer for a cancelled request

    assert code == 0
    assert GRACE <= elapsed < GRACE + 2
    output = "\n".join(app.lines())
    assert "Application shutdown complete" in output  # the lifespan still ran


def test_sigint_also_stops_cleanly(start_app: StartApp) -> None:
    app = start_app()
    with grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    signalled = time.monotonic()
    app.process.send_signal(signal.SIGINT)
    assert app.process.wait(GRACE + 2) == 0
    assert time.monotonic() - signalled < GRACE + 2
    assert "Traceback" not in app.output.read_text()


@pytest.mark.parametrize("variable", ["RUNNER_REST_PORT", "RUNNER_GRPC_PORT"])
def test_busy_port_is_one_line_and_exit_code_2(
    start_app: StartApp, busy_port: int, variable: str
) -> None:
    app = start_app(**{variable: str(busy_port)})
    assert app.process.wait(10) == 2
    assert app.lines() == [
        f"{NAME}: port {busy_port} is already in use (set {variable} to change it)"
    ]


def test_bad_configuration_is_one_line_and_exit_code_2(start_app: StartApp) -> None:
    app = start_app(RUNNER_GRACE="soon")
    assert app.process.wait(10) == 2
    assert app.lines() == [f"{NAME}: RUNNER_GRACE='soon' is not a number"]


async def test_background_crash_stops_the_service_and_is_raised() -> None:
    server = create_grpc_server()
    health = add_health_and_reflection(server, [])
    bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    closed: list[str] = []

    async def relay() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("relay bug")

    async def close_pool() -> None:
        closed.append("pool")

    with pytest.raises(RuntimeError, match="relay bug"):
        await serve(
            name="crashy",
            grpc_server=server,
            health=health,
            grace=0.2,
            background=[relay],
            on_shutdown=[close_pool],
        )
    assert closed == ["pool"]
    assert not health.serving


async def test_stop_event_cancels_background_then_runs_callbacks_in_order() -> None:
    server = create_grpc_server()
    health = add_health_and_reflection(server, [])
    port = bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    events: list[str] = []
    stop = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("background cancelled")
            raise

    async def first() -> None:
        events.append("first")

    async def second() -> None:
        events.append("second")

    task = asyncio.create_task(
        serve(
            name="inproc",
            grpc_server=server,
            health=health,
            rest_app=Starlette(),
            rest_host="127.0.0.1",
            rest_port=0,
            grace=0.2,
            background=[forever],
            on_shutdown=[first, second],
            stop=stop,
        )
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 5)
    stop.set()
    await asyncio.wait_for(task, 3)
    assert events == ["background cancelled", "first", "second"]


def test_run_freezes_the_startup_heap_and_collects_the_young_generation_less_often() -> None:
    """run() (every service's entry point) tunes the collector before serving; a process of its
    own, so this test process keeps CPython's defaults."""
    code = (
        "import gc\n"
        "from services.common.runner import GC_YOUNG_THRESHOLD, run\n"
        "seen = {}\n"
        "async def main():\n"
        "    seen['threshold'] = gc.get_threshold()\n"
        "    seen['frozen'] = gc.get_freeze_count()\n"
        "    garbage = []\n"
        "    garbage.append(garbage)  # a cycle made while serving is still collected\n"
        "    del garbage\n"
        "    seen['collected'] = gc.collect()\n"
        "assert gc.get_threshold()[0] == 700 and gc.get_freeze_count() == 0\n"
        "assert run(main, name='t') == 0\n"
        "assert seen['threshold'][0] == GC_YOUNG_THRESHOLD > 700, seen\n"
        "assert seen['frozen'] > 10_000, seen\n"
        "assert seen['collected'] >= 1, seen\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
