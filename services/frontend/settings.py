"""FrontendService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from services.common.settings import (
    ServerSettings,
    env_address,
    env_int,
    env_server,
    env_str,
)

GRPC_PORT_ENV = "FRONTEND_GRPC_PORT"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
METRICS_PORT_ENV = "FRONTEND_METRICS_PORT"
DEFAULT_METRICS_PORT = 9464  # the usual Prometheus exporter port
USER_ADDR_ENV = "USER_SERVICE_ADDR"
CLUSTER_NODES_ENV = "REDIS_CLUSTER_NODES"
MAX_STREAMS = 5_000
"""Open streams per process (FRONTEND_MAX_STREAMS), sized by memory: an idle stream costs about
30 KiB of process memory (measured: 2,000 streams added 54 MiB of RSS, 4,000 added 117 MiB; see
the service README), so 5,000 take about 150 MiB. The gRPC server admits this many calls plus
room for pushes and health checks."""
MAX_STREAMS_PER_USER = 10
"""Open streams per account (FRONTEND_MAX_STREAMS_PER_USER); one more ends the longest idle."""
MAX_STREAMS_PER_CLIENT = 100
"""Open streams per client host (FRONTEND_MAX_STREAMS_PER_CLIENT), whatever the accounts."""

STREAM_HEADROOM = 200
"""Concurrent calls the gRPC server admits beyond the stream limit (pushes, health checks)."""


@dataclass(frozen=True)
class Settings(ServerSettings):
    """Everything FrontendService reads from the environment.

    FrontendService stores nothing. REDIS_URL (or REDIS_CLUSTER_NODES, a Valkey Cluster), when
    set, is the shared Valkey through which replicas pass live notifications to each other
    (``fanout``); unset, this process is the only replica and ``common.redis_url`` keeps its
    unused default.
    """

    GRPC_PORT_ENV: ClassVar[str] = GRPC_PORT_ENV
    REST_PORT_ENV: ClassVar[str] = ""
    grpc_port: int = 3030
    notification_addr: str = "127.0.0.1:9799"
    user_addr: str = "127.0.0.1:9797"  # checks the tokens of open streams against their account
    max_streams: int = MAX_STREAMS
    max_streams_per_user: int = MAX_STREAMS_PER_USER
    max_streams_per_client: int = MAX_STREAMS_PER_CLIENT
    metrics_port: int = DEFAULT_METRICS_PORT  # /metrics; 0 picks a free port
    metrics_port_set: bool = False  # FRONTEND_METRICS_PORT given: a taken port stops the service
    fanout: bool = False
    """REDIS_URL or REDIS_CLUSTER_NODES is set: live notifications reach the streams of every
    replica through it (sharded pub/sub on a Cluster)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        fanout = any(env_str(environ, name, "") != "" for name in ("REDIS_URL", CLUSTER_NODES_ENV))
        return cls(
            **env_server(environ, GRPC_PORT_ENV, cls.grpc_port, redis=fanout),
            fanout=fanout,
            notification_addr=env_address(environ, NOTIFICATION_ADDR_ENV, cls.notification_addr),
            user_addr=env_address(environ, USER_ADDR_ENV, cls.user_addr),
            max_streams=env_int(
                environ, "FRONTEND_MAX_STREAMS", cls.max_streams, min=1, max=1_000_000
            ),
            max_streams_per_user=env_int(
                environ,
                "FRONTEND_MAX_STREAMS_PER_USER",
                cls.max_streams_per_user,
                min=1,
                max=10_000,
            ),
            max_streams_per_client=env_int(
                environ,
                "FRONTEND_MAX_STREAMS_PER_CLIENT",
                cls.max_streams_per_client,
                min=1,
                max=1_000_000,
            ),
            metrics_port=env_int(environ, METRICS_PORT_ENV, cls.metrics_port, min=0, max=65535),
            metrics_port_set=METRICS_PORT_ENV in environ,
        )

    @property
    def max_concurrent_rpcs(self) -> int:
        """Every open stream is a call: admit them all, plus room for pushes and health."""
        return self.max_streams + STREAM_HEADROOM
