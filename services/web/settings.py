"""The web inbox's configuration, read once from the environment."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.settings import (
    CommonSettings,
    ConfigError,
    env_address,
    env_bool,
    env_float,
    env_port,
    env_str,
)

PORT_ENV = "WEB_PORT"
SECRET_ENV = "WEB_SECRET"
MIN_SECRET_LENGTH = 32


def _http_url(environ: Mapping[str, str], name: str, default: str) -> str:
    value = env_str(environ, name, default).rstrip("/")
    if not value.startswith(("http://", "https://")) or "://" == value[-3:]:
        raise ConfigError(f"{name}={value!r} is not an http:// or https:// URL")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the web inbox reads from the environment.

    It stores nothing itself, so REDIS_URL is ignored (even a malformed one).
    """

    common: CommonSettings
    secret: bytes = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8083
    user_url: str = "http://127.0.0.1:8080"
    user_addr: str = "127.0.0.1:9797"
    message_addr: str = "127.0.0.1:9798"
    notification_addr: str = "127.0.0.1:9799"
    frontend_addr: str = "127.0.0.1:3030"
    call_timeout: float = 5.0
    heartbeat_seconds: float = 15.0
    secure_cookies: bool = False
    secret_generated: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        raw_secret = env_str(environ, SECRET_ENV, "")
        if raw_secret and len(raw_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"{SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters long")
        return cls(
            common=CommonSettings.from_env(environ, redis=False),
            secret=raw_secret.encode() if raw_secret else secrets.token_bytes(32),
            secret_generated=not raw_secret,
            host=env_str(environ, "BIND_HOST", cls.host),
            port=env_port(environ, PORT_ENV, cls.port),
            user_url=_http_url(environ, "USER_SERVICE_URL", cls.user_url),
            user_addr=env_address(environ, "USER_SERVICE_ADDR", cls.user_addr),
            message_addr=env_address(environ, "MESSAGE_SERVICE_ADDR", cls.message_addr),
            notification_addr=env_address(
                environ, "NOTIFICATION_SERVICE_ADDR", cls.notification_addr
            ),
            frontend_addr=env_address(environ, "FRONTEND_SERVICE_ADDR", cls.frontend_addr),
            call_timeout=env_float(environ, "WEB_CALL_TIMEOUT", cls.call_timeout, min=0.1, max=60),
            heartbeat_seconds=env_float(
                environ, "WEB_HEARTBEAT_SECONDS", cls.heartbeat_seconds, min=0.5, max=300
            ),
            secure_cookies=env_bool(environ, "WEB_SECURE_COOKIES", cls.secure_cookies),
        )
