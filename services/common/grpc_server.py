"""gRPC server factory, port binding with clear errors, health driven by real checks, reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.channels import server_options
from services.common.draining import DrainGate, note_port
from services.common.draining import register as register_drain_gate
from services.common.errors import PortInUse, StartupError
from services.common.ports import format_address, port_is_taken

__all__ = [
    "HEALTH_SERVICE_NAME",
    "HealthReporter",
    "PortInUse",
    "add_health_and_reflection",
    "bind_port",
    "create_grpc_server",
]

logger = logging.getLogger(__name__)

HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

MiB = 1024 * 1024


def create_grpc_server(
    *,
    max_receive_bytes: int = 1 * MiB,
    max_concurrent_rpcs: int | None = 200,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Server:
    """A ``grpc.aio`` server with bounded messages and concurrency and sane keepalive.

    Beyond ``max_concurrent_rpcs`` calls gRPC answers RESOURCE_EXHAUSTED at once.
    ``options`` are appended, so they override the defaults below. Call it from a
    coroutine: grpc.aio ties the server to the running event loop.
    """
    defaults: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", 4 * MiB),
        # gRPC enables SO_REUSEPORT by default: a second server on a busy port would
        # silently share it instead of failing. Refuse, so a taken port is an error.
        ("grpc.so_reuseport", 0),
        # Clients may ping idle connections every 10 s or more; servers ping idle clients
        # every minute (services.common.channels holds both sides' settings).
        *server_options(),
    ]
    # First, so a call refused while shutting down never reaches authentication.
    gate = DrainGate()
    server = grpc.aio.server(
        interceptors=[gate, *interceptors],
        options=[*defaults, *options],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    register_drain_gate(server, gate)
    return server


def bind_port(server: grpc.aio.Server, host: str, port: int, env_var: str) -> int:
    """Listen on ``host:port`` (insecure); the bound port (useful with port 0).

    Raises :class:`PortInUse` naming ``env_var`` when the port is taken, rather than
    gRPC's "Failed to bind" RuntimeError (checked first, so gRPC logs nothing).
    """
    bare_host = host.strip("[]")
    address = format_address(bare_host, port)
    if port and port_is_taken(bare_host, port):
        raise PortInUse(port, env_var)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        if port and port_is_taken(bare_host, port):
            raise PortInUse(port, env_var) from exc
        raise StartupError(f"cannot listen for gRPC on {address} (check {env_var})") from exc
    if bound == 0:
        raise StartupError(f"cannot listen for gRPC on {address} (check {env_var})")
    note_port(server, bound)
    return bound


class _HealthServicer(HealthServicer):
    """The stock asyncio health servicer, except that it starts NOT_SERVING."""

    # The stock servicer keeps statuses in this dict and starts with "" SERVING; its
    # public setter is a coroutine, unusable while the server is being wired up.
    _server_status: MutableMapping[str, int]

    def __init__(self, services: Sequence[str]) -> None:
        super().__init__()
        self._server_status = dict.fromkeys(services, _NOT_SERVING)


class HealthReporter:
    """Drives the standard gRPC health service from a readiness check."""

    def __init__(self, servicer: HealthServicer, services: Sequence[str]) -> None:
        self._servicer = servicer
        self._services = ("", *(name for name in services if name))
        self._serving = False
        self._shut_down = False

    @property
    def services(self) -> tuple[str, ...]:
        """The names whose status is reported ("" is the whole server)."""
        return self._services

    @property
    def serving(self) -> bool:
        """The status last reported."""
        return self._serving

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the server and every service; no-op after shutdown."""
        if self._shut_down:
            return
        self._serving = serving
        status = _SERVING if serving else _NOT_SERVING
        for name in self._services:
            await self._servicer.set(name, status)

    async def run_checks(
        self,
        check: Callable[[], Awaitable[bool]],
        interval: float = 1.0,
        check_timeout: float | None = None,
    ) -> None:
        """Call ``check`` every ``interval`` seconds and report its answer, until cancelled.

        A check that raises or takes longer than ``check_timeout`` (default: ``interval``,
        at least 1 s) counts as not serving. Each change is logged once.
        """
        limit = check_timeout if check_timeout is not None else max(interval, 1.0)
        last: bool | None = None
        while not self._shut_down:
            reason = ""
            try:
                ok = bool(await asyncio.wait_for(check(), limit))
                if not ok:
                    reason = "readiness check failed"
            except TimeoutError:
                ok, reason = False, f"readiness check took longer than {limit:g}s"
            except Exception as exc:
                ok, reason = False, f"readiness check raised {type(exc).__name__}: {exc}"
            await self.set_serving(ok)
            if ok != last and not self._shut_down:
                if ok:
                    logger.info("health: SERVING")
                else:
                    logger.warning("health: NOT_SERVING (%s)", reason)
                last = ok
            await asyncio.sleep(interval)

    async def shutdown(self) -> None:
        """NOT_SERVING for good: the process is draining and will not come back."""
        if self._shut_down:
            return
        self._shut_down = True
        self._serving = False
        await self._servicer.enter_graceful_shutdown()


def add_health_and_reflection(
    server: grpc.aio.Server, service_full_names: Sequence[str]
) -> HealthReporter:
    """Register grpc.health.v1 (starting NOT_SERVING) and v1alpha reflection on ``server``.

    Reflection lists ``service_full_names`` plus the health and reflection services.
    """
    names = list(dict.fromkeys(service_full_names))
    servicer = _HealthServicer(["", *names])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return HealthReporter(servicer, names)
