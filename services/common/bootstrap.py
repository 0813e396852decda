"""Wiring every service repeats: keys, the gRPC server with its edge, health, and serving."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from redis.asyncio import Redis
from starlette.types import ASGIApp

from services.common.auth import KeyRing, ServiceCredentials, TokenVerifier, ensure_keys
from services.common.grpc_edge import EdgeInterceptor
from services.common.grpc_server import (
    HealthReporter,
    add_health_and_reflection,
    bind_port,
    create_grpc_server,
)
from services.common.runner import BackgroundFactory, ShutdownCallback, serve
from services.common.sessions import Sessions
from services.common.settings import RestEdgeSettings, env_bool, env_str

Readiness = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Security:
    """This service's keys: verifies user tokens and service credentials, signs its own."""

    keys: KeyRing = field(repr=False)
    verifier: TokenVerifier = field(repr=False)
    credentials: ServiceCredentials = field(repr=False)

    @classmethod
    def load(cls, keys_dir: Path, service: str, *, sign_user_tokens: bool = False) -> Security:
        keys = KeyRing.load(keys_dir, service, sign_user_tokens=sign_user_tokens)
        return cls(keys, TokenVerifier(keys), ServiceCredentials(keys))


def keys_dir_from_env(environ: Mapping[str, str]) -> Path:
    """KEYS_DIR (default .data/keys); with KEYS_CREATE=1 missing keys are generated there."""
    keys_dir = Path(env_str(environ, "KEYS_DIR", ".data/keys"))
    if env_bool(environ, "KEYS_CREATE", False):
        ensure_keys(keys_dir)
    return keys_dir


def redis_ready(redis: Redis) -> Readiness:
    """A readiness check: Redis answers PING."""

    async def check() -> bool:
        return bool(await redis.ping())

    return check


@dataclass
class GrpcEndpoint:
    """A gRPC server with the edge interceptor, health and reflection, bound to its port."""

    server: grpc.aio.Server
    health: HealthReporter
    port: int


def create_endpoint(
    *,
    security: Security,
    host: str,
    port: int,
    port_env: str,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    max_concurrent_rpcs: int | None = 200,
    sessions: Sessions | None = None,
) -> GrpcEndpoint:
    """Build the server; `register` adds the servicers and returns their full service names.

    With ``sessions``, user tokens are also checked against their account (revocation)."""
    server = create_grpc_server(
        interceptors=[EdgeInterceptor(security.verifier, sessions)],
        max_concurrent_rpcs=max_concurrent_rpcs,
    )
    names = register(server)
    health = add_health_and_reflection(server, names)
    bound = bind_port(server, host, port, port_env)
    return GrpcEndpoint(server, health, bound)


async def run_endpoint(
    *,
    name: str,
    endpoint: GrpcEndpoint,
    readiness: Readiness,
    grace: float,
    rest_app: ASGIApp | None = None,
    rest_host: str = "127.0.0.1",
    rest_port: int = 0,
    rest_port_env: str = "",
    background: Sequence[BackgroundFactory] = (),
    on_shutdown: Sequence[ShutdownCallback] = (),
    stop: asyncio.Event | None = None,
    rest_edge: RestEdgeSettings | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), health following `readiness` every second."""
    await serve(
        name=name,
        grpc_server=endpoint.server,
        health=endpoint.health,
        rest_app=rest_app,
        rest_host=rest_host,
        rest_port=rest_port,
        rest_port_env=rest_port_env,
        grace=grace,
        background=[lambda: endpoint.health.run_checks(readiness, interval=1.0), *background],
        on_shutdown=on_shutdown,
        stop=stop,
        rest_edge=rest_edge,
    )
