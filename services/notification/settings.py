"""NotificationService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from services.common.settings import (
    ServerSettings,
    env_address,
    env_int,
    env_port,
    env_redis_db,
    env_server,
)

REST_PORT_ENV = "NOTIFICATION_REST_PORT"
GRPC_PORT_ENV = "NOTIFICATION_GRPC_PORT"
REDIS_DB_ENV = "NOTIFICATION_REDIS_DB"
FRONTEND_ADDR_ENV = "FRONTEND_SERVICE_ADDR"
USER_ADDR_ENV = "USER_SERVICE_ADDR"
RETENTION_ENV = "NOTIFICATION_RETENTION"
MAX_RETENTION = 100_000


@dataclass(frozen=True)
class Settings(ServerSettings):
    """Everything NotificationService reads from the environment."""

    GRPC_PORT_ENV: ClassVar[str] = GRPC_PORT_ENV
    REST_PORT_ENV: ClassVar[str] = REST_PORT_ENV
    rest_port: int = 8082
    grpc_port: int = 9799
    redis_db: int = 2
    frontend_addr: str = "127.0.0.1:3030"
    user_addr: str = "127.0.0.1:9797"  # checks tokens against their account
    retention: int = 1000  # notifications kept per user, newest first

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        return cls(
            **env_server(environ, GRPC_PORT_ENV, cls.grpc_port),
            rest_port=env_port(environ, REST_PORT_ENV, cls.rest_port),
            redis_db=env_redis_db(environ, REDIS_DB_ENV, cls.redis_db),
            frontend_addr=env_address(environ, FRONTEND_ADDR_ENV, cls.frontend_addr),
            user_addr=env_address(environ, USER_ADDR_ENV, cls.user_addr),
            retention=env_int(environ, RETENTION_ENV, cls.retention, min=1, max=MAX_RETENTION),
        )
