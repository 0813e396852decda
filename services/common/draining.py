"""Graceful shutdown of a gRPC server: new calls get UNAVAILABLE, calls in flight complete.

``grpc.aio.Server.stop(grace)`` lets calls in flight finish, but calls that reach the server
while it shuts down - sent on a connection before the client has processed the GOAWAY, or
queued in gRPC's core without a handler yet - are cancelled: the client sees CANCELLED, which no
RPC documents and which clients (rightly) do not retry. So shutdown closes this gate first: for
as long as calls are still in flight (at most the grace period) every new call is answered
UNAVAILABLE "shutting down; retry", which every RPC documents as retryable, and only once the
server has no unary call left does ``stop()`` run. Health checks pass the gate (they report
NOT_SERVING by then) and so do streams already open, which ``stop(grace)`` ends as before.

One window remains: gRPC's own shutdown sends GOAWAY, and a call a client sends before it has
read that GOAWAY is cancelled by the server (CANCELLED again). So before ``stop()`` the server's
client connections are closed at the socket level (:func:`close_connections`, Linux): a call on
its way then fails on the client with UNAVAILABLE, like any connection loss, and no client
connection is left for ``stop()`` to cancel calls on. Every unary call has completed by then, so
nothing that ran is cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import grpc.aio

__all__ = ["DrainGate", "close_connections", "drain_gate", "note_port"]

logger = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context = grpc.aio.ServicerContext[Any, Any]

SHUTTING_DOWN = "the service is shutting down; retry (another instance, or this one once restarted)"
# Once the last call has completed, keep answering UNAVAILABLE this long before gRPC's own
# shutdown starts, so clients that were just told to retry stop sending on this connection.
LINGER_SECONDS = 0.2
_EXEMPT = ("/grpc.health.v1.Health/",)

_gates: weakref.WeakKeyDictionary[grpc.aio.Server, DrainGate] = weakref.WeakKeyDictionary()
_FD_DIR = "/proc/self/fd"


class DrainGate(grpc.aio.ServerInterceptor):
    """Counts unary calls in flight; once closed, answers every new call with UNAVAILABLE."""

    def __init__(self) -> None:
        self._closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.rejected = 0
        self.ports: set[int] = set()
        self._counted_handlers: dict[str, tuple[Handler, Handler]] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def close(self) -> None:
        """Answer UNAVAILABLE from now on."""
        self._closed = True

    async def drain(self, grace: float) -> bool:
        """Close, wait up to ``grace`` s for the unary calls in flight, then (if none is left)
        close the client connections; True if it did."""
        self.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        try:
            await asyncio.wait_for(self._idle.wait(), max(grace, 0.0))
        except TimeoutError:
            logger.warning("%d call(s) still running after the grace period", self._in_flight)
            return False
        await asyncio.sleep(max(min(LINGER_SECONDS, deadline - loop.time()), 0.0))
        if self._in_flight:
            return False  # a call slipped in during the linger; stop(grace) waits for it
        closed = close_connections(self.ports)
        logger.info("no call in flight; closed %d client connection(s)", closed)
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT):
            return handler
        if self._closed:
            self.rejected += 1
            return _unavailable(handler)
        if handler.unary_unary is None:
            return handler  # streams: ended by the server's stop(grace)
        method = handler_call_details.method
        cached = self._counted_handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]  # built once per method, not per call
        counted = self._counted(handler)
        self._counted_handlers[method] = (handler, counted)
        return counted

    def _counted(self, handler: Handler) -> Handler:
        inner: Any = handler.unary_unary

        async def unary(request: Any, context: Context) -> Any:
            if self._closed:  # closed between routing and running
                self.rejected += 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            self._in_flight += 1
            self._idle.clear()
            try:
                return await inner(request, context)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _unavailable(handler: Handler) -> Handler:
    async def unary(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def register(server: grpc.aio.Server, gate: DrainGate) -> None:
    _gates[server] = gate


def note_port(server: grpc.aio.Server, port: int) -> None:
    """Remember a port ``server`` listens on, for :func:`close_connections`."""
    gate = _gates.get(server)
    if gate is not None:
        gate.ports.add(port)


def close_connections(ports: set[int]) -> int:
    """Shut down the listening sockets and accepted TCP connections of this process on
    ``ports``; how many connections.

    Linux only (reads /proc/self/fd); elsewhere nothing is closed and 0 is returned. The
    listener goes first, so a client cannot reconnect before the server stops (gRPC logs
    "Closing acceptor. Failed accept4: Invalid argument" for it, which is expected).
    """
    if not ports or not os.path.isdir(_FD_DIR):
        return 0
    closed = 0
    listeners: list[socket.socket] = []
    connections: list[socket.socket] = []
    for name in os.listdir(_FD_DIR):
        try:
            if not os.readlink(f"{_FD_DIR}/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                sock.close()
                continue
            if sock.getsockname()[1] not in ports:
                sock.close()
                continue
            try:
                sock.getpeername()
            except OSError:  # the listening socket: first, so no client reconnects meanwhile
                listeners.append(sock)
                continue
            connections.append(sock)
        except OSError:
            sock.close()
            continue
    for sock in [*listeners, *connections]:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
            closed += sock in connections
        sock.close()  # closes the duplicate only
    return closed


def drain_gate(server: grpc.aio.Server) -> DrainGate | None:
    """The gate :func:`~services.common.grpc_server.create_grpc_server` installed on ``server``."""
    return _gates.get(server)
