"""The parts every service is built from: its keys, readiness, the gRPC server with its edge.

:mod:`services.common.app` assembles them; tests build single servers with them directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.auth import KeyRing, ServiceCredentials, TokenVerifier
from services.common.grpc_edge import EdgeInterceptor
from services.common.grpc_server import (
    HealthReporter,
    add_health_and_reflection,
    bind_port,
    create_grpc_server,
)
from services.common.metrics import ServerMetricsInterceptor
from services.common.redis import RedisClient
from services.common.sessions import Sessions

__all__ = ["GrpcEndpoint", "Readiness", "Security", "create_endpoint", "redis_ready"]

Readiness = Callable[[], Awaitable[bool]]
"""A readiness check: True while the service can do its work (health follows it)."""


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


def redis_ready(redis: RedisClient) -> Readiness:
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
        # After the drain gate (added by create_grpc_server), before the edge: every accepted
        # call is counted, those the edge refuses too.
        interceptors=[ServerMetricsInterceptor(), EdgeInterceptor(security.verifier, sessions)],
        max_concurrent_rpcs=max_concurrent_rpcs,
    )
    names = register(server)
    health = add_health_and_reflection(server, names)
    bound = bind_port(server, host, port, port_env)
    return GrpcEndpoint(server, health, bound)
