"""UserService configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from services.common.errors import ConfigError
from services.common.settings import (
    ServerSettings,
    env_address,
    env_int,
    env_port,
    env_redis_db,
    env_server,
)
from services.user.models import LoginPolicy

REST_PORT_ENV = "USER_REST_PORT"
GRPC_PORT_ENV = "USER_GRPC_PORT"
MESSAGE_ADDR_ENV = "MESSAGE_SERVICE_ADDR"
NOTIFICATION_ADDR_ENV = "NOTIFICATION_SERVICE_ADDR"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# OWASP Password Storage Cheat Sheet minimum for Argon2id: m=19 MiB, t=2, p=1.
MIN_TIME_COST = 2
MIN_MEMORY_KIB = 19456
MIN_PARALLELISM = 1


@dataclass(frozen=True)
class HashParams:
    """Argon2id cost parameters; never below the OWASP minimum."""

    time_cost: int = MIN_TIME_COST
    memory_kib: int = MIN_MEMORY_KIB
    parallelism: int = MIN_PARALLELISM

    def __post_init__(self) -> None:
        if (
            self.time_cost < MIN_TIME_COST
            or self.memory_kib < MIN_MEMORY_KIB
            or self.parallelism < MIN_PARALLELISM
        ):
            raise ConfigError(
                f"Argon2id parameters t={self.time_cost}, m={self.memory_kib}, "
                f"p={self.parallelism} are below the minimum t={MIN_TIME_COST}, "
                f"m={MIN_MEMORY_KIB}, p={MIN_PARALLELISM}"
            )


@dataclass(frozen=True)
class LoginLimits:
    """Sign-in throttling: failures are counted, successes are not (OWASP Authentication
    Cheat Sheet: the account's counter plus per-client limits, and no lockout an anonymous
    attacker can use against the owner).

    - Per account and client: after ``max_failures`` failed attempts on one account from one
      client host within ``lock_seconds`` (a window starting at the first one), that client
      is refused for that account until the window ends.
    - Per client host: at most ``client_attempts`` failed attempts on any accounts per
      ``client_window_seconds``.
    - Per account, from every client together: the first ``account_free_failures`` failures
      cost nothing; each further one makes the account wait ``account_base_delay_ms`` doubled
      per failure, at most ``account_max_delay_seconds``, before the next attempt from a client
      that has not signed in to it before. The count is forgotten ``account_window_seconds``
      after the last failure. Clients that signed in to the account successfully (the last
      ``known_clients`` of them, for ``known_client_days``) are not slowed down.
    - Registration: at most ``register_attempts`` per client host per ``register_window_seconds``.
    """

    max_failures: int = 5
    lock_seconds: int = 900
    client_attempts: int = 20
    client_window_seconds: int = 60
    account_free_failures: int = 10
    account_base_delay_ms: int = 1000
    account_max_delay_seconds: int = 60
    account_window_seconds: int = 900
    known_clients: int = 16
    known_client_days: int = 30
    register_attempts: int = 20
    register_window_seconds: int = 3600

    def __post_init__(self) -> None:
        if min(self.max_failures, self.lock_seconds, self.client_attempts) < 1:
            raise ConfigError("login limits must be at least 1")
        if self.client_window_seconds < 1:
            raise ConfigError("the client window must be at least 1 second")
        if min(self.account_base_delay_ms, self.account_max_delay_seconds) < 1:
            raise ConfigError("the account back-off must be at least 1 ms and 1 second")
        if min(self.account_window_seconds, self.known_clients, self.known_client_days) < 1:
            raise ConfigError("the account window and known clients must be at least 1")
        if self.account_free_failures < 0:
            raise ConfigError("free account failures cannot be negative")
        if min(self.register_attempts, self.register_window_seconds) < 1:
            raise ConfigError("registration limits must be at least 1")

    @property
    def policy(self) -> LoginPolicy:
        return LoginPolicy(
            client_failures=self.client_attempts,
            client_window_seconds=self.client_window_seconds,
            pair_failures=self.max_failures,
            pair_window_seconds=self.lock_seconds,
            account_free_failures=self.account_free_failures,
            account_base_delay_ms=self.account_base_delay_ms,
            account_max_delay_ms=self.account_max_delay_seconds * 1000,
            account_window_seconds=self.account_window_seconds,
            known_clients=self.known_clients,
            known_client_seconds=self.known_client_days * 86400,
        )


@dataclass(frozen=True)
class Settings(ServerSettings):
    """Everything UserService reads from the environment (see the README for the table)."""

    GRPC_PORT_ENV: ClassVar[str] = GRPC_PORT_ENV
    REST_PORT_ENV: ClassVar[str] = REST_PORT_ENV
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
