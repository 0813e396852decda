"""MessageService configuration, read once from the environment."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.bootstrap import keys_dir_from_env
from services.common.settings import CommonSettings, ConfigError, env_int, env_str

logger = logging.getLogger(__name__)

REST_PORT_ENV = "MESSAGE_REST_PORT"
GRPC_PORT_ENV = "MESSAGE_GRPC_PORT"
REDIS_DB_ENV = "MESSAGE_REDIS_DB"
USER_ADDR_ENV = "USER_SERVICE_ADDR"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
# Above the gRPC server's 200 concurrent calls plus REST and the relay: redis-py's asyncio pool
# fails a command at once, rather than waiting, when every connection is busy.
REDIS_MAX_CONNECTIONS = 512


def env_address(environ: Mapping[str, str], name: str, default: str) -> str:
    """``name`` as a ``host:port`` gRPC target; ConfigError naming it otherwise."""
    value = env_str(environ, name, default)
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} is not a host:port address")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything MessageService reads from the environment."""

    common: CommonSettings
    keys_dir: Path
    host: str = "127.0.0.1"
    rest_port: int = 8081
    grpc_port: int = 9798
    redis_db: int = 1
    user_service_addr: str = "127.0.0.1:9797"
    notification_service_addr: str = "127.0.0.1:9799"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        return cls(
            common=CommonSettings.from_env(environ),
            keys_dir=keys_dir_from_env(environ),
            host=env_str(environ, "BIND_HOST", cls.host),
            rest_port=env_int(environ, REST_PORT_ENV, cls.rest_port, min=0, max=65535),
            grpc_port=env_int(environ, GRPC_PORT_ENV, cls.grpc_port, min=0, max=65535),
            redis_db=env_int(environ, REDIS_DB_ENV, cls.redis_db, min=0, max=15),
            user_service_addr=env_address(environ, USER_ADDR_ENV, cls.user_service_addr),
            notification_service_addr=env_address(
                environ, NOTIFICATION_ADDR_ENV, cls.notification_service_addr
            ),
        )
