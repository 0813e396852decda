"""FrontendService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.metrics import FRONTEND_METRICS_PORT
from services.common.settings import (
    CommonSettings,
    env_address,
    env_int,
    env_server,
)
from services.frontend.metrics import METRICS_PORT_ENV
from services.frontend.service import MAX_STREAMS, MAX_STREAMS_PER_CLIENT, MAX_STREAMS_PER_USER

GRPC_PORT_ENV = "FRONTEND_GRPC_PORT"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
USER_ADDR_ENV = "USER_SERVICE_ADDR"


@dataclass(frozen=True)
class Settings:
    """Everything FrontendService reads from the environment.

    FrontendService stores nothing, so REDIS_URL is ignored (even a malformed one):
    ``common.redis_url`` keeps its default and is never used.
    """

    common: CommonSettings
    keys_dir: Path
    keys_create: bool = False
    host: str = "127.0.0.1"
    grpc_port: int = 3030
    notification_addr: str = "127.0.0.1:9799"
    user_addr: str = "127.0.0.1:9797"  # checks the tokens of open streams against their account
    max_streams: int = MAX_STREAMS
    max_streams_per_user: int = MAX_STREAMS_PER_USER
    max_streams_per_client: int = MAX_STREAMS_PER_CLIENT
    metrics_port: int = FRONTEND_METRICS_PORT  # /metrics; 0 picks a free port

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        return cls(
            **env_server(environ, GRPC_PORT_ENV, cls.grpc_port, redis=False),
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
        )
