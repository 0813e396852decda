"""MessageService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final

from services.common.settings import (
    ServerSettings,
    env_address,
    env_int,
    env_port,
    env_redis_db,
    env_server,
)

REST_PORT_ENV = "MESSAGE_REST_PORT"
GRPC_PORT_ENV = "MESSAGE_GRPC_PORT"
REDIS_DB_ENV = "MESSAGE_REDIS_DB"
USER_ADDR_ENV = "USER_SERVICE_ADDR"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
DEFAULT_QUOTA_BYTES: Final = 50 * 1024 * 1024
"""Bytes of message content one sender may keep stored (MESSAGE_SENDER_QUOTA_BYTES)."""


@dataclass(frozen=True)
class SendLimits:
    """Per-account sending limits: at most ``messages`` new messages per ``window_seconds``
    (a fixed window from the first one; a repeated client_request_id is free)."""

    messages: int = 60
    window_seconds: int = 60

    def __post_init__(self) -> None:
        if min(self.messages, self.window_seconds) < 1:
            raise ValueError("send limits must be at least 1")


@dataclass(frozen=True)
class Settings(ServerSettings):
    """Everything MessageService reads from the environment."""

    GRPC_PORT_ENV: ClassVar[str] = GRPC_PORT_ENV
    REST_PORT_ENV: ClassVar[str] = REST_PORT_ENV
    rest_port: int = 8081
    grpc_port: int = 9798
    redis_db: int = 1
    user_addr: str = "127.0.0.1:9797"
    notification_addr: str = "127.0.0.1:9799"
    send: SendLimits = field(default_factory=SendLimits)
    quota_bytes: int = DEFAULT_QUOTA_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        return cls(
            **env_server(environ, GRPC_PORT_ENV, cls.grpc_port),
            rest_port=env_port(environ, REST_PORT_ENV, cls.rest_port),
            redis_db=env_redis_db(environ, REDIS_DB_ENV, cls.redis_db),
            user_addr=env_address(environ, USER_ADDR_ENV, cls.user_addr),
            notification_addr=env_address(environ, NOTIFICATION_ADDR_ENV, cls.notification_addr),
            send=SendLimits(
                messages=env_int(
                    environ, "MESSAGE_SEND_LIMIT", SendLimits.messages, min=1, max=1_000_000
                ),
                window_seconds=env_int(
                    environ,
                    "MESSAGE_SEND_WINDOW_SECONDS",
                    SendLimits.window_seconds,
                    min=1,
                    max=86400,
                ),
            ),
            quota_bytes=env_int(
                environ,
                "MESSAGE_SENDER_QUOTA_BYTES",
                cls.quota_bytes,
                min=64 * 1024,
                max=2**40,
            ),
        )
