"""Strict readers of configuration from the environment, and the settings every service shares."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self, TypedDict, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from services.common.channels import is_multi_target, parse_target
from services.common.errors import ConfigError

__all__ = [
    "CLUSTER_SCHEME",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "REDIS_URL_SCHEMES",
    "ClusterSeeds",
    "CommonSettings",
    "ConfigError",
    "RestEdgeSettings",
    "ServerSettings",
    "cluster_nodes",
    "env_address",
    "env_bool",
    "env_choice",
    "env_float",
    "env_int",
    "env_port",
    "env_redis_db",
    "env_server",
    "env_str",
    "redact_url",
    "validate_redis_url",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEME = "redis+cluster"
"""``redis+cluster://host:port[,host:port...]``: the seed nodes of a Redis/Valkey Cluster."""
KEYS_DIR_ENV = "KEYS_DIR"
KEYS_CREATE_ENV = "KEYS_CREATE"
DEFAULT_KEYS_DIR = ".data/keys"
DEFAULT_HOST = "127.0.0.1"

T = TypeVar("T")
N = TypeVar("N", int, float)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    # An empty value counts as unset: compose files often pass FOO=${FOO:-}.
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _missing(name: str) -> ConfigError:
    return ConfigError(f"{name} is required but not set")


def _read(environ: Mapping[str, str], name: str, default: T | None, parse: Callable[[str], T]) -> T:
    """``parse(value)`` of ``name``, or ``default`` when unset; required without a default."""
    value = _raw(environ, name)
    if value is not None:
        return parse(value)
    if default is None:
        raise _missing(name)
    return default


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """``name``'s value, or ``default``; with no default the variable is required."""
    return _read(environ, name, default, str)


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int | None = None,
    *,
    min: int | None = None,
    max: int | None = None,
) -> int:
    """``name`` as an integer within ``[min, max]``; anything else raises ConfigError."""

    def parse(value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not an integer") from None
        return _check_range(name, value, number, min, max)

    return _read(environ, name, default, parse)


def env_float(
    environ: Mapping[str, str],
    name: str,
    default: float | None = None,
    *,
    min: float | None = None,
    max: float | None = None,
) -> float:
    """``name`` as a finite number within ``[min, max]``; anything else raises ConfigError."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{name}={value!r} is not a finite number")
        return _check_range(name, value, number, min, max)

    return _read(environ, name, default, parse)


def _check_range(name: str, raw: str, number: N, low: float | None, high: float | None) -> N:
    if low is not None and number < low:
        raise ConfigError(f"{name}={raw!r} is below the minimum {low}")
    if high is not None and number > high:
        raise ConfigError(f"{name}={raw!r} is above the maximum {high}")
    return number


def env_address(environ: Mapping[str, str], name: str, default: str) -> str:
    """``name`` as a gRPC target: ``host:port``, a comma-separated list of replicas
    (``127.0.0.1:9797,127.0.0.1:9897``) or a gRPC name (``dns:///user-grpc:9797``); ConfigError
    naming it otherwise (see :func:`services.common.channels.parse_target`)."""
    value = env_str(environ, name, default)
    try:
        parse_target(value)
    except ValueError as exc:
        if "," not in value and not is_multi_target(value):
            raise ConfigError(f"{name}={value!r} is not a host:port address") from None
        raise ConfigError(f"{name}={value!r} is not a gRPC target: {exc}") from None
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool | None = None) -> bool:
    """``name`` as a boolean: 1/0, true/false, yes/no, on/off (any case)."""

    def parse(value: str) -> bool:
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(
            f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)"
        )

    return _read(environ, name, default, parse)


def env_choice(
    environ: Mapping[str, str],
    name: str,
    default: str | None,
    choices: Collection[str],
    *,
    case_sensitive: bool = False,
) -> str:
    """``name``'s value, which must be one of ``choices`` (returned as spelled in ``choices``)."""

    def parse(value: str) -> str:
        for choice in choices:
            if value == choice or (not case_sensitive and value.lower() == choice.lower()):
                return choice
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")

    return _read(environ, name, default, parse)


def env_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """``name`` as a port to listen on (0 picks a free one)."""
    return env_int(environ, name, default, min=0, max=65535)


def env_redis_db(environ: Mapping[str, str], name: str, default: int) -> int:
    """``name`` as a logical Redis database (0-15)."""
    return env_int(environ, name, default, min=0, max=15)


def validate_redis_url(name: str, url: str) -> str:
    """``url`` if redis-py can use it; ConfigError naming ``name`` otherwise."""
    if url.startswith(f"{CLUSTER_SCHEME}://"):
        cluster_nodes(name, url)
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name}={redact_url(url)!r} is not a valid URL") from None
    if parts.scheme not in REDIS_URL_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES)
        schemes += f" or {CLUSTER_SCHEME}://"
        raise ConfigError(f"{name}={redact_url(url)!r} must start with one of {schemes}")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(f"{name}={redact_url(url)!r} has no socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{name}={redact_url(url)!r} has no host")
    return url


@dataclass(frozen=True)
class ClusterSeeds:
    """What a ``redis+cluster://[user:password@]host:port[,host:port...]`` URL holds."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def cluster_nodes(name: str, url: str) -> ClusterSeeds:
    """The seed nodes (comma-separated, each ``host:port`` or ``[v6]:port``) and credentials of
    a ``redis+cluster://`` URL; ConfigError naming ``name`` and never showing the password."""
    rest = url.removeprefix(f"{CLUSTER_SCHEME}://").rstrip("/")
    userinfo, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username, password = (user or None), (unquote(secret) if colon else None)
    nodes: list[tuple[str, int]] = []
    for node in hosts.split(","):
        try:
            parts = urlsplit(f"redis://{node.strip()}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host = port = None
        if not host or port is None or parts.path or "@" in node:
            raise ConfigError(
                f"{name}={redact_url(url)!r}: {node.strip()!r} is not a host:port cluster node"
            )
        nodes.append((host, port))
    return ClusterSeeds(tuple(nodes), username, password)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


TRUSTED_PROXIES_ENV = "REST_TRUSTED_PROXIES"
HEADER_TIMEOUT_ENV = "REST_HEADER_TIMEOUT"
IDLE_TIMEOUT_ENV = "REST_IDLE_TIMEOUT"
MAX_CONNECTIONS_PER_CLIENT_ENV = "REST_MAX_CONNECTIONS_PER_CLIENT"


def parse_trusted_proxies(raw: str, name: str = TRUSTED_PROXIES_ENV) -> tuple[str, ...]:
    """Comma-separated IP addresses or networks (CIDR); ConfigError naming ``name`` otherwise."""
    proxies: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r}: {item!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from None
        proxies.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    return tuple(dict.fromkeys(proxies))


@dataclass(frozen=True)
class RestEdgeSettings:
    """How the REST server treats connections (services/common/rest_server.py applies it).

    Forwarded headers are honoured only from ``trusted_proxies`` (none by default); request
    headers must arrive within ``header_timeout`` seconds; a connection silent for
    ``idle_timeout`` seconds between requests or in the middle of a body is closed; one client
    address may hold ``max_connections_per_client`` connections.
    """

    trusted_proxies: tuple[str, ...] = ()
    header_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_connections_per_client: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """Read REST_TRUSTED_PROXIES, REST_HEADER_TIMEOUT, REST_IDLE_TIMEOUT and
        REST_MAX_CONNECTIONS_PER_CLIENT; ConfigError naming the first malformed one."""
        return cls(
            trusted_proxies=parse_trusted_proxies(env_str(environ, TRUSTED_PROXIES_ENV, "")),
            header_timeout=env_float(
                environ, HEADER_TIMEOUT_ENV, cls.header_timeout, min=0.1, max=3600.0
            ),
            idle_timeout=env_float(
                environ, IDLE_TIMEOUT_ENV, cls.idle_timeout, min=0.1, max=3600.0
            ),
            max_connections_per_client=env_int(
                environ,
                MAX_CONNECTIONS_PER_CLIENT_ENV,
                cls.max_connections_per_client,
                min=1,
                max=1_000_000,
            ),
        )

    def is_trusted_proxy(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(proxy) for proxy in self.trusted_proxies)


@dataclass(frozen=True)
class CommonSettings:
    """Settings every service reads: where Redis is, how to log, how long to drain on shutdown."""

    redis_url: str = field(default="redis://127.0.0.1:6379", repr=False)
    log_level: str = "INFO"
    log_format: str = "text"
    shutdown_grace_seconds: float = 8.0
    rest: RestEdgeSettings = field(default_factory=RestEdgeSettings)
    metrics_outbox_interval: float = 10.0
    """Seconds between two readings of each outbox's backlog (METRICS_OUTBOX_INTERVAL)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, redis: bool = True) -> Self:
        """Read REDIS_URL (or REDIS_CLUSTER_NODES, which wins), LOG_LEVEL, LOG_FORMAT,
        SHUTDOWN_GRACE, METRICS_OUTBOX_INTERVAL and the REST_* connection settings
        (:class:`RestEdgeSettings`); ConfigError on bad values.

        A service that stores nothing passes ``redis=False``: REDIS_URL is then not read at
        all (even a malformed one is ignored) and ``redis_url`` keeps its unused default."""
        redis_url = cls.redis_url
        if redis:
            nodes = _raw(environ, "REDIS_CLUSTER_NODES")
            if nodes is not None:
                redis_url = f"{CLUSTER_SCHEME}://{nodes}"
                cluster_nodes("REDIS_CLUSTER_NODES", redis_url)
            else:
                redis_url = env_str(environ, "REDIS_URL", redis_url)
                redis_url = validate_redis_url("REDIS_URL", redis_url)
        return cls(
            redis_url=redis_url,
            log_level=env_choice(environ, "LOG_LEVEL", cls.log_level, LOG_LEVELS),
            log_format=env_choice(environ, "LOG_FORMAT", cls.log_format, LOG_FORMATS),
            shutdown_grace_seconds=env_float(
                environ, "SHUTDOWN_GRACE", cls.shutdown_grace_seconds, min=0.0, max=300.0
            ),
            rest=RestEdgeSettings.from_env(environ),
            metrics_outbox_interval=env_float(
                environ,
                "METRICS_OUTBOX_INTERVAL",
                cls.metrics_outbox_interval,
                min=0.05,
                max=3600.0,
            ),
        )

    @property
    def redis_cluster(self) -> bool:
        """Whether Redis is a Cluster (REDIS_CLUSTER_NODES, or a ``redis+cluster://`` URL):
        one database, and the services' cluster key layouts."""
        return self.redis_url.startswith(f"{CLUSTER_SCHEME}://")

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL without its password, for log lines."""
        return redact_url(self.redis_url)


@dataclass(frozen=True)
class ServerSettings:
    """What every gRPC service's ``Settings`` has: a service's settings subclass it, name their
    port variables (``GRPC_PORT_ENV``, and ``REST_PORT_ENV`` when they serve REST), and add
    ``grpc_port`` and their own fields. :func:`env_server` reads these."""

    GRPC_PORT_ENV: ClassVar[str] = ""
    REST_PORT_ENV: ClassVar[str] = ""

    common: CommonSettings = field(default_factory=CommonSettings)
    keys_dir: Path = Path(DEFAULT_KEYS_DIR)
    keys_create: bool = False
    host: str = DEFAULT_HOST


class ServerFields(TypedDict):
    """The settings every gRPC service has, for its ``Settings(**env_server(...), ...)``."""

    common: CommonSettings
    keys_dir: Path
    keys_create: bool
    host: str
    grpc_port: int


def env_server(
    environ: Mapping[str, str], grpc_port_env: str, grpc_port: int, *, redis: bool = True
) -> ServerFields:
    """The :class:`CommonSettings` (without REDIS_URL when ``redis`` is false), KEYS_DIR
    (default .data/keys), KEYS_CREATE (whether start-up creates the missing key pairs there),
    BIND_HOST (default 127.0.0.1) and the gRPC port from ``grpc_port_env``."""
    return ServerFields(
        common=CommonSettings.from_env(environ, redis=redis),
        keys_dir=Path(env_str(environ, KEYS_DIR_ENV, DEFAULT_KEYS_DIR)),
        keys_create=env_bool(environ, KEYS_CREATE_ENV, False),
        host=env_str(environ, "BIND_HOST", DEFAULT_HOST),
        grpc_port=env_port(environ, grpc_port_env, grpc_port),
    )
