"""FrontendService configuration, read once from the environment."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.bootstrap import keys_dir_from_env
from services.common.settings import CommonSettings, env_address, env_int, env_str

logger = logging.getLogger(__name__)

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
    host: str = "127.0.0.1"
    grpc_port: int = 3030
    notification_addr: str = "127.0.0.1:9799"
    user_addr: str = "127.0.0.1:9797"  # checks the tokens of open streams against their account

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        without_redis = {key: value for key, value in environ.items() if key != "REDIS_URL"}
        return cls(
            common=CommonSettings.from_env(without_redis),
            keys_dir=keys_dir_from_env(environ),
            host=env_str(environ, "BIND_HOST", cls.host),
            grpc_port=env_int(environ, GRPC_PORT_ENV, cls.grpc_port, min=0, max=65535),
            notification_addr=env_address(environ, NOTIFICATION_ADDR_ENV, cls.notification_addr),
            user_addr=env_address(environ, USER_ADDR_ENV, cls.user_addr),
        )
