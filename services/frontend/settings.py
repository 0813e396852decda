"""FrontendService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import (
    CommonSettings,
    env_address,
    env_int,
    env_server,
    env_str,
)
from services.frontend.service import MAX_STREAMS, MAX_STREAMS_PER_CLIENT, MAX_STREAMS_PER_USER

GRPC_PORT_ENV = "FRONTEND_GRPC_PORT"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
USER_ADDR_ENV = "USER_SERVICE_ADDR"


@dataclass(frozen=True)
class Settings:
    """Everything FrontendService reads from the environment.

    FrontendService stores nothing. REDIS_URL, when set, is the shared Valkey through which
    replicas pass live notifications to each other (``fanout``); unset, this process is the
    only replica and ``common.redis_url`` keeps its unused default.
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
    fanout: bool = False
    """REDIS_URL is set: live notifications reach the streams of every replica through it."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        fanout = env_str(environ, "REDIS_URL", "") != ""
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
        )
