"""Runs a service's REST (uvicorn) and gRPC servers on one asyncio loop; graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, Literal

import grpc.aio
import uvicorn
import uvloop
from starlette.types import ASGIApp

from services.common.draining import drain_gate
from services.common.errors import StartupError
from services.common.grpc_server import HealthReporter
from services.common.ports import bind_socket, format_address
from services.common.rest_server import RestEdgeSettings, uvicorn_options

__all__ = [
    "BackgroundFactory",
    "ShutdownCallback",
    "UvicornServer",
    "install_signal_handlers",
    "remove_signal_handlers",
    "run",
    "serve",
    "serve_http",
    "tune_gc",
    "uvicorn_server",
]

logger = logging.getLogger(__name__)

BackgroundFactory = Callable[[], Coroutine[Any, Any, object]]
"""Makes a long-running coroutine (health checks, relays) that runs until cancelled."""

ShutdownCallback = Callable[[], Awaitable[object]]
"""Releases a resource (Redis pool, gRPC channel) after both servers have drained."""

# Budget for the steps around the grace period, so the process exits within grace + 2 s.
_BACKGROUND_STOP_SECONDS = 0.3
_LIFESPAN_STOP_SECONDS = 0.5
_FORCE_STOP_SECONDS = 0.2
_SHUTDOWN_SLACK_SECONDS = 1.8
_MIN_CALLBACK_SECONDS = 0.1
_HTTP_SLACK_SECONDS = 1.5
_HTTP_FORCE_SECONDS = 0.5


class UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller (:func:`serve`) owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's version re-raises the signal after its own shutdown, which would
        # kill the process before the gRPC server has drained.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:  # uvicorn exits the process when the lifespan fails
            raise StartupError(
                "the REST application failed to start (its lifespan startup failed; "
                "see the log above)"
            ) from exc


def uvicorn_server(
    app: ASGIApp,
    grace: float,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    access_log: bool = True,
    **options: Any,
) -> UvicornServer:
    """A uvicorn server for ``app`` that keeps the process-wide logging set-up, speaks no
    WebSocket, sends no Server header and, ``grace`` seconds (whole, at least 1) into a
    shutdown, cancels the requests still running; ``options`` are uvicorn's own."""
    config = uvicorn.Config(
        app,
        log_config=None,  # keep the process-wide logging set-up
        access_log=access_log,
        lifespan=lifespan,
        ws="none",
        server_header=False,
        # After this uvicorn cancels the requests still running (they get a
        # 500) and still runs the app's lifespan shutdown. Whole seconds only.
        timeout_graceful_shutdown=_rest_grace(grace),
        **options,
    )
    return UvicornServer(config)


def _on_signal(sig: signal.Signals, stop: asyncio.Event, name: str) -> None:
    if stop.is_set():
        logger.warning("%s: received %s again; already shutting down", name, sig.name)
        return
    logger.info("%s: received %s; shutting down", name, sig.name)
    stop.set()


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, name: str
) -> list[signal.Signals]:
    """SIGTERM/SIGINT set ``stop`` (a second one is logged); the signals handled."""
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _on_signal, sig, stop, name)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread (or not Unix): the caller stops us through ``stop``.
            continue
        installed.append(sig)
    return installed


def remove_signal_handlers(loop: asyncio.AbstractEventLoop, signals: list[signal.Signals]) -> None:
    """Undo :func:`install_signal_handlers`."""
    for sig in signals:
        loop.remove_signal_handler(sig)


async def serve(
    *,
    name: str,
    grpc_server: grpc.aio.Server,
    health: HealthReporter,
    rest_app: ASGIApp | None = None,
    rest_host: str = "0.0.0.0",
    rest_port: int = 0,
    rest_port_env: str = "",
    grace: float = 8.0,
    background: Sequence[BackgroundFactory] = (),
    on_shutdown: Sequence[ShutdownCallback] = (),
    stop: asyncio.Event | None = None,
    access_log: bool = True,
    rest_edge: RestEdgeSettings | None = None,
) -> None:
    """Serve gRPC (already bound with ``bind_port``) and REST until SIGTERM/SIGINT or ``stop``.

    On shutdown: health NOT_SERVING, background tasks cancelled, gRPC and REST drain
    in-flight calls for up to ``grace`` seconds (concurrently; REST rounds it up to
    whole seconds; meanwhile new gRPC calls get UNAVAILABLE, see
    :mod:`services.common.draining`), then the REST app's lifespan shutdown, then the
    ``on_shutdown`` callbacks run in order. Close resources shared by REST and gRPC handlers in
    ``on_shutdown`` rather than in the ASGI lifespan, which may end first.

    ``rest_edge`` sets the trusted proxies, header and idle timeouts and the per-client
    connection cap of the REST server (default: :class:`RestEdgeSettings`' defaults, which
    trust no proxy).

    A taken REST port raises :class:`PortInUse` naming ``rest_port_env`` before anything
    starts. A crash of the REST server or of a background task shuts everything
    down and is re-raised.
    """
    loop = asyncio.get_running_loop()
    stop_event = stop if stop is not None else asyncio.Event()
    rest_socket: socket.socket | None = None
    if rest_app is not None:
        try:
            # Bound here, not by uvicorn: uvicorn calls sys.exit() on a bind error.
            rest_socket = bind_socket(rest_host, rest_port, rest_port_env)
        except StartupError:
            await grpc_server.stop(None)
            raise
    signals = install_signal_handlers(loop, stop_event, name)
    rest: UvicornServer | None = None
    rest_task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[object]] = []
    failure: BaseException | None = None
    try:
        await grpc_server.start()
        if rest_app is not None and rest_socket is not None:
            rest = uvicorn_server(
                rest_app,
                grace,
                access_log=access_log,
                **uvicorn_options(rest_edge or RestEdgeSettings()),
            )
            rest_task = asyncio.create_task(rest.serve(sockets=[rest_socket]), name=f"{name}-rest")
            host, port = rest_socket.getsockname()[:2]
            logger.info("%s: REST listening on http://%s", name, format_address(host, port))
        tasks = [
            asyncio.create_task(factory(), name=f"{name}-background-{i}")
            for i, factory in enumerate(background)
        ]
        logger.info("%s: started", name)
        failure = await _wait_for_stop(name, stop_event, rest_task, tasks)
    finally:
        await _shutdown(name, health, grpc_server, rest, rest_task, tasks, on_shutdown, grace)
        if rest_socket is not None:
            rest_socket.close()
        remove_signal_handlers(loop, signals)
    if failure is not None:
        raise failure
    logger.info("%s: stopped", name)


async def _wait_for_stop(
    name: str,
    stop: asyncio.Event,
    rest_task: asyncio.Task[None] | None,
    tasks: list[asyncio.Task[object]],
) -> BaseException | None:
    """Wait for a stop request, or for a component that ends by itself (a failure)."""
    stop_waiter = asyncio.create_task(stop.wait(), name=f"{name}-stop")
    watched: set[asyncio.Task[Any]] = {stop_waiter, *tasks}
    if rest_task is not None:
        watched.add(rest_task)
    try:
        while True:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if stop_waiter in done:
                return None
            for task in done:
                watched.discard(task)
                error = None if task.cancelled() else task.exception()
                if task is rest_task:
                    logger.error("%s: REST server stopped unexpectedly", name, exc_info=error)
                    return error or RuntimeError(f"{name}: REST server stopped unexpectedly")
                if error is not None:
                    logger.error("%s: %s crashed", name, task.get_name(), exc_info=error)
                    return error
                logger.info("%s: %s finished", name, task.get_name())
    finally:
        stop_waiter.cancel()


async def _shutdown(
    name: str,
    health: HealthReporter,
    grpc_server: grpc.aio.Server,
    rest: UvicornServer | None,
    rest_task: asyncio.Task[None] | None,
    tasks: list[asyncio.Task[object]],
    on_shutdown: Sequence[ShutdownCallback],
    grace: float,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace + _SHUTDOWN_SLACK_SECONDS
    logger.info("%s: draining for up to %.1fs", name, grace)
    await health.shutdown()
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=_BACKGROUND_STOP_SECONDS)
        for task in pending:
            logger.warning("%s: %s ignored cancellation", name, task.get_name())
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.warning(
                    "%s: %s failed while stopping", name, task.get_name(), exc_info=task.exception()
                )
    if rest is not None:
        rest.should_exit = True
    await asyncio.gather(_stop_grpc(grpc_server, grace), _stop_rest(name, rest, rest_task, grace))
    for callback in on_shutdown:
        # The callbacks share what is left of the budget; a hung one cannot hold the exit.
        remaining = max(deadline - loop.time(), _MIN_CALLBACK_SECONDS)
        try:
            async with asyncio.timeout(remaining):
                await callback()
        except Exception:
            logger.exception("%s: shutdown callback %r failed", name, callback)


async def _stop_grpc(grpc_server: grpc.aio.Server, grace: float) -> None:
    """New calls get UNAVAILABLE while unary calls in flight finish, then gRPC stops."""
    gate = drain_gate(grpc_server)
    loop = asyncio.get_running_loop()
    start = loop.time()
    if gate is not None:
        await gate.drain(grace)
    await grpc_server.stop(max(grace - (loop.time() - start), 0.0))


def _rest_grace(grace: float) -> int:
    return max(1, math.ceil(grace))


async def _stop_rest(
    name: str, rest: UvicornServer | None, rest_task: asyncio.Task[None] | None, grace: float
) -> None:
    if rest is None or rest_task is None:
        return
    limit = _rest_grace(grace) + _LIFESPAN_STOP_SECONDS
    done, _ = await asyncio.wait({rest_task}, timeout=limit)
    if not done:
        # Last resort: force_exit skips the app's lifespan shutdown.
        logger.warning("%s: REST server still stopping after %.1fs; forcing it", name, limit)
        rest.force_exit = True
        done, _ = await asyncio.wait({rest_task}, timeout=_FORCE_STOP_SECONDS)
    if not done:
        rest_task.cancel()
        await asyncio.wait({rest_task}, timeout=_FORCE_STOP_SECONDS)
    if rest_task.done() and not rest_task.cancelled() and rest_task.exception() is not None:
        logger.error("%s: REST server failed while stopping", name, exc_info=rest_task.exception())


async def serve_http(
    name: str,
    server: UvicornServer,
    sock: socket.socket,
    *,
    grace: float,
    stop: asyncio.Event | None = None,
    before_stop: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve one HTTP server on ``sock`` until SIGTERM/SIGINT or ``stop``.

    Then ``before_stop`` (to end what never ends by itself, such as event streams), then the
    server drains for up to ``grace`` + 1.5 seconds before it is forced; the socket is closed.
    A crash of the server is raised.
    """
    stop_event = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = install_signal_handlers(loop, stop_event, name)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}-http")
    stopper = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # a crash of the server is the process's failure
            raise RuntimeError(f"{name}: the HTTP server stopped unexpectedly")
        if before_stop is not None:
            await before_stop()
        server.should_exit = True
        done, _ = await asyncio.wait({serving}, timeout=grace + _HTTP_SLACK_SECONDS)
        if not done:
            server.force_exit = True
            await asyncio.wait({serving}, timeout=_HTTP_FORCE_SECONDS)
    finally:
        stopper.cancel()
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        sock.close()
        remove_signal_handlers(loop, installed)
    logger.info("%s: stopped", name)


GC_YOUNG_THRESHOLD = 20_000
"""Allocations between two young-generation collections (CPython's default is 700)."""


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running server.

    Everything imported so far (modules, classes, protobuf descriptors: most of the process's
    objects, and never garbage) is moved out of the collector's sight with ``gc.freeze()``, so a
    full collection no longer walks them (it took ~45 ms each in MessageService under load); the
    young generation is collected every ``GC_YOUNG_THRESHOLD`` allocations instead of 700, so
    the objects of the calls in flight are mostly freed by reference counting before a
    collection promotes them. Garbage cycles are still collected, only later.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run(main: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> int:
    """Run an entry point's ``main`` coroutine; the process exit code.

    A :class:`StartupError` (taken port, bad configuration) becomes one line on stderr
    and exit code 2, instead of a traceback.
    """
    tune_gc()
    try:
        # uvloop: the REST edge answers several times faster than on asyncio's own loop.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except StartupError as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0
