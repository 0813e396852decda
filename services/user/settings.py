"""UserService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.settings import (
    CommonSettings,
    env_address,
    env_int,
    env_port,
    env_redis_db,
    env_server,
)
from services.user.passwords import MIN_MEMORY_KIB, MIN_PARALLELISM, MIN_TIME_COST, HashParams
from services.user.service import LoginLimits

REST_PORT_ENV = "USER_REST_PORT"
GRPC_PORT_ENV = "USER_GRPC_PORT"
MESSAGE_ADDR_ENV = "MESSAGE_SERVICE_ADDR"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
DEFAULT_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything UserService reads from the environment (see the README for the table)."""

    common: CommonSettings = field(default_factory=CommonSettings)
    keys_dir: Path = Path(".data/keys")
    keys_create: bool = False
    host: str = "127.0.0.1"
    rest_port: int = 8080
    grpc_port: int = 9797
    redis_db: int = 0
    token_ttl_seconds: int = 900
    hashing: HashParams = field(default_factory=HashParams)
    hash_concurrency: int = 4
    login: LoginLimits = field(default_factory=LoginLimits)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Where the data of deleted accounts is erased (the account outbox's relay calls them).
    message_addr: str = "127.0.0.1:9798"
    notification_addr: str = "127.0.0.1:9799"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the variables; ConfigError naming the first one that is malformed."""
        login = LoginLimits()
        return cls(
            **env_server(environ, GRPC_PORT_ENV, cls.grpc_port),
            rest_port=env_port(environ, REST_PORT_ENV, cls.rest_port),
            redis_db=env_redis_db(environ, "USER_REDIS_DB", cls.redis_db),
            token_ttl_seconds=env_int(
                environ, "USER_TOKEN_TTL", cls.token_ttl_seconds, min=60, max=86400
            ),
            hashing=HashParams(
                time_cost=env_int(
                    environ, "USER_HASH_TIME_COST", MIN_TIME_COST, min=MIN_TIME_COST, max=20
                ),
                memory_kib=env_int(
                    environ,
                    "USER_HASH_MEMORY_KIB",
                    MIN_MEMORY_KIB,
                    min=MIN_MEMORY_KIB,
                    max=1024 * 1024,
                ),
                parallelism=env_int(
                    environ, "USER_HASH_PARALLELISM", MIN_PARALLELISM, min=MIN_PARALLELISM, max=16
                ),
            ),
            hash_concurrency=env_int(
                environ, "USER_HASH_CONCURRENCY", cls.hash_concurrency, min=1, max=64
            ),
            login=LoginLimits(
                max_failures=env_int(
                    environ, "USER_LOGIN_MAX_FAILURES", login.max_failures, min=1, max=1000
                ),
                lock_seconds=env_int(
                    environ, "USER_LOGIN_LOCK_SECONDS", login.lock_seconds, min=1, max=86400
                ),
                client_attempts=env_int(
                    environ,
                    "USER_LOGIN_CLIENT_ATTEMPTS",
                    login.client_attempts,
                    min=1,
                    max=100_000,
                ),
                client_window_seconds=env_int(
                    environ,
                    "USER_LOGIN_CLIENT_WINDOW_SECONDS",
                    login.client_window_seconds,
                    min=1,
                    max=86400,
                ),
                account_free_failures=env_int(
                    environ,
                    "USER_LOGIN_ACCOUNT_FREE_FAILURES",
                    login.account_free_failures,
                    min=0,
                    max=100_000,
                ),
                account_base_delay_ms=env_int(
                    environ,
                    "USER_LOGIN_ACCOUNT_BASE_DELAY_MS",
                    login.account_base_delay_ms,
                    min=1,
                    max=60_000,
                ),
                account_max_delay_seconds=env_int(
                    environ,
                    "USER_LOGIN_ACCOUNT_MAX_DELAY_SECONDS",
                    login.account_max_delay_seconds,
                    min=1,
                    max=3600,
                ),
                account_window_seconds=env_int(
                    environ,
                    "USER_LOGIN_ACCOUNT_WINDOW_SECONDS",
                    login.account_window_seconds,
                    min=1,
                    max=86400,
                ),
                known_clients=env_int(
                    environ, "USER_LOGIN_KNOWN_CLIENTS", login.known_clients, min=1, max=1000
                ),
                known_client_days=env_int(
                    environ, "USER_LOGIN_KNOWN_CLIENT_DAYS", login.known_client_days, min=1, max=365
                ),
                register_attempts=env_int(
                    environ,
                    "USER_REGISTER_CLIENT_ATTEMPTS",
                    login.register_attempts,
                    min=1,
                    max=1_000_000,
                ),
                register_window_seconds=env_int(
                    environ,
                    "USER_REGISTER_CLIENT_WINDOW_SECONDS",
                    login.register_window_seconds,
                    min=1,
                    max=86400,
                ),
            ),
            max_body_bytes=env_int(
                environ, "USER_MAX_BODY_BYTES", cls.max_body_bytes, min=1024, max=16 * 1024 * 1024
            ),
            message_addr=env_address(environ, MESSAGE_ADDR_ENV, cls.message_addr),
            notification_addr=env_address(environ, NOTIFICATION_ADDR_ENV, cls.notification_addr),
        )
