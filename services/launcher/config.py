"""What the launcher starts, read from the same environment variables the services read."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import ConfigError
from services.common.ports import format_address
from services.common.settings import (
    CLUSTER_SCHEME,
    cluster_nodes,
    env_bool,
    env_int,
    env_str,
    validate_redis_url,
)

__all__ = [
    "CLUSTER_ENV",
    "CLUSTER_MASTERS",
    "CLUSTER_NODES_ENV",
    "DEFAULT_REDIS_URL",
    "PEER_ADDRESS_VARS",
    "PEER_URL_VARS",
    "REPLICAS_ENV",
    "LaunchConfig",
    "PortSetting",
    "ServiceSpec",
    "connect_host",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
LOOPBACK = "127.0.0.1"
REPLICAS_ENV = "MISSIVE_REPLICAS"
CLUSTER_ENV = "MISSIVE_CLUSTER"
"""``1``: start an embedded Valkey Cluster rather than one Valkey (the ``--cluster`` flag)."""
CLUSTER_NODES_ENV = "REDIS_CLUSTER_NODES"
"""``host:port,...`` of an existing Valkey/Redis Cluster: no embedded Valkey is started."""
CLUSTER_MASTERS = 3
"""Masters of the embedded cluster, on VALKEY_PORT, VALKEY_PORT + 1, VALKEY_PORT + 2."""
# What the endpoint table shows for each service's data in cluster mode: its key namespace.
CLUSTER_NAMESPACES = {"user": "u:", "message": "m:", "notification": "n:", "frontend": "f:"}
MAX_REPLICAS = 16
REPLICA_PORT_STEP = 100
# FrontendService's metrics listener (its settings' METRICS_PORT_ENV and default; the launcher
# imports no service module: it starts them, whatever they are).
FRONTEND_METRICS_ENV = "FRONTEND_METRICS_PORT"
FRONTEND_METRICS = 9464
"""Replica k (from 2) of a service listens on each of its ports + (k - 1) x 100."""
SINGLE_REPLICA = frozenset({"web"})
"""Run once whatever ``--replicas`` says: the web inbox (its SDK connects to one address)."""

# name; HTTP port variable and default; gRPC port variable and default; Redis DB variable, default.
# The web inbox serves HTTP only (its health is GET /health); the others serve gRPC health.
_SERVICES: tuple[tuple[str, str | None, int, str | None, int, str | None, int], ...] = (
    ("user", "USER_REST_PORT", 8080, "USER_GRPC_PORT", 9797, "USER_REDIS_DB", 0),
    ("message", "MESSAGE_REST_PORT", 8081, "MESSAGE_GRPC_PORT", 9798, "MESSAGE_REDIS_DB", 1),
    (
        "notification",
        "NOTIFICATION_REST_PORT",
        8082,
        "NOTIFICATION_GRPC_PORT",
        9799,
        "NOTIFICATION_REDIS_DB",
        2,
    ),
    ("frontend", None, 0, "FRONTEND_GRPC_PORT", 3030, None, 0),
    ("web", "WEB_PORT", 8083, None, 0, None, 0),
)

# The variables through which services find each other, and the service each one names.
PEER_ADDRESS_VARS: dict[str, str] = {
    "USER_SERVICE_ADDR": "user",
    "MESSAGE_SERVICE_ADDR": "message",
    "NOTIFICATION_SERVICE_ADDR": "notification",
    "FRONTEND_SERVICE_ADDR": "frontend",
}
# The same for REST base URLs (the web inbox registers users through UserService's REST API).
PEER_URL_VARS: dict[str, str] = {"USER_SERVICE_URL": "user"}


@dataclass(frozen=True)
class PortSetting:
    """A port something will listen on, and the variable that changes it."""

    port: int
    env_var: str
    host: str


@dataclass(frozen=True)
class ServiceSpec:
    """One service process: its command line and the ports it serves.

    A service without a gRPC port (the web inbox) is probed with ``GET /health`` on its HTTP
    port instead of the gRPC health service. ``name`` is the service (``user``) for its first
    replica and ``user.2``, ``user.3``... for the others; ``env`` is what this process gets on
    top of the launch's environment (its own ports).
    """

    name: str
    command: tuple[str, ...]
    grpc_port: int | None
    grpc_env: str | None
    rest_port: int | None = None
    rest_env: str | None = None
    redis_db: int | None = None
    service: str = ""
    replica: int = 1
    env: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        """The service this process is a replica of."""
        return self.service or self.name


def connect_host(bind_host: str) -> str:
    """Where local clients reach a server bound to ``bind_host``."""
    host = bind_host.strip("[]")
    if host in ("", "0.0.0.0"):
        return LOOPBACK
    if host == "::":
        return "::1"
    return host


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    return env_int(environ, name, default, min=1, max=65535)


def _metrics_port(
    environ: Mapping[str, str], name: str, offset: int
) -> tuple[tuple[str, int], ...]:
    """FrontendService's separate metrics listener, moved like its other ports for a replica."""
    if name != "frontend":
        return ()
    return (
        (FRONTEND_METRICS_ENV, _port(environ, FRONTEND_METRICS_ENV, FRONTEND_METRICS) + offset),
    )


def _services(
    environ: Mapping[str, str], python: str, replicas: int = 1
) -> tuple[ServiceSpec, ...]:
    specs = []
    for name, rest_env, rest_default, grpc_env, grpc_default, db_env, db_default in _SERVICES:
        grpc_base = _port(environ, grpc_env, grpc_default) if grpc_env else None
        rest_base = _port(environ, rest_env, rest_default) if rest_env else None
        count = 1 if name in SINGLE_REPLICA else replicas
        for replica in range(1, count + 1):
            offset = (replica - 1) * REPLICA_PORT_STEP
            grpc_port = grpc_base + offset if grpc_base is not None else None
            rest_port = rest_base + offset if rest_base is not None else None
            own: list[tuple[str, str]] = []
            if replica > 1:
                extra = _metrics_port(environ, name, offset)
                for var, port in ((grpc_env, grpc_port), (rest_env, rest_port), *extra):
                    if var is not None and port is not None:
                        if port > 65535:
                            raise ConfigError(
                                f"{var}={port - offset}: replica {replica} would listen on "
                                f"{port}, above 65535; use fewer replicas or a lower port"
                            )
                        own.append((var, str(port)))
            specs.append(
                ServiceSpec(
                    name=name if replica == 1 else f"{name}.{replica}",
                    command=(python, "-m", f"services.{name}"),
                    grpc_port=grpc_port,
                    grpc_env=grpc_env,
                    rest_port=rest_port,
                    rest_env=rest_env,
                    redis_db=env_int(environ, db_env, db_default, min=0) if db_env else None,
                    service=name,
                    replica=replica,
                    env=tuple(own),
                )
            )
    return tuple(specs)


@dataclass(frozen=True)
class LaunchConfig:
    """Everything ``make up`` needs, validated before anything starts."""

    data_dir: Path
    keys_dir: Path
    bind_host: str
    services: tuple[ServiceSpec, ...]
    embedded_valkey: bool
    valkey_port: int
    redis_url: str
    health_timeout: float = 60.0
    stop_timeout: float = 15.0
    replicas: int = 1
    cluster: bool = False
    """Redis is a Cluster: an embedded one (``embedded_valkey``) or the one ``redis_url``
    (``redis+cluster://``) names."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        data_dir: Path,
        no_valkey: bool = False,
        health_timeout: float = 60.0,
        python: str = sys.executable,
        replicas: int | None = None,
        cluster: bool | None = None,
    ) -> LaunchConfig:
        """Read ports, addresses and paths; ConfigError naming the variable on a bad value.

        ``replicas`` processes of each service (default MISSIVE_REPLICAS, else 1). ``cluster``
        (default MISSIVE_CLUSTER) starts an embedded Valkey Cluster; REDIS_CLUSTER_NODES (or a
        ``redis+cluster://`` REDIS_URL) uses an existing one."""
        nodes = env_str(environ, CLUSTER_NODES_ENV, "")
        if nodes:
            external = f"{CLUSTER_SCHEME}://{nodes}"
            cluster_nodes(CLUSTER_NODES_ENV, external)
        else:
            external = env_str(environ, "REDIS_URL", "")
        if cluster is None:
            cluster = env_bool(environ, CLUSTER_ENV, False)
        is_cluster = external.startswith(f"{CLUSTER_SCHEME}://")
        if cluster and external and not is_cluster:
            raise ConfigError(
                "--cluster (MISSIVE_CLUSTER) starts an embedded Valkey Cluster, but REDIS_URL "
                "names a standalone Redis: unset REDIS_URL, or set REDIS_CLUSTER_NODES to use "
                "an existing cluster"
            )
        if cluster and no_valkey and not external:
            raise ConfigError(
                "--cluster with --no-valkey needs REDIS_CLUSTER_NODES: the nodes of the "
                "existing cluster (host:port,host:port,...)"
            )
        embedded = not external and not no_valkey
        if replicas is None:
            replicas = env_int(environ, REPLICAS_ENV, 1, min=1, max=MAX_REPLICAS)
        return cls(
            data_dir=data_dir,
            keys_dir=Path(env_str(environ, "KEYS_DIR", str(data_dir / "keys"))),
            bind_host=env_str(environ, "BIND_HOST", LOOPBACK),
            services=_services(environ, python, replicas),
            embedded_valkey=embedded,
            valkey_port=_port(environ, "VALKEY_PORT", 6379),
            redis_url=validate_redis_url("REDIS_URL", external or DEFAULT_REDIS_URL),
            health_timeout=health_timeout,
            replicas=replicas,
            cluster=cluster or is_cluster,
        )

    @property
    def valkey_dir(self) -> Path:
        """Where the embedded Valkey keeps its AOF and log (the cluster: one folder per node)."""
        return self.data_dir / ("valkey-cluster" if self.cluster else "valkey")

    @property
    def valkey_ports(self) -> list[int]:
        """The embedded Valkey's port, or the ports of the embedded cluster's masters."""
        count = CLUSTER_MASTERS if self.cluster else 1
        return [self.valkey_port + n for n in range(count)]

    @property
    def connect_host(self) -> str:
        """The address the launcher, the services and the printed URLs use."""
        return connect_host(self.bind_host)

    def ports(self) -> list[PortSetting]:
        """Every port to check before starting, in the order they are reported."""
        ports = []
        if self.embedded_valkey:
            ports += [PortSetting(port, "VALKEY_PORT", LOOPBACK) for port in self.valkey_ports]
        host = self.bind_host.strip("[]")
        for spec in self.services:
            if spec.rest_port is not None and spec.rest_env is not None:
                ports.append(PortSetting(spec.rest_port, spec.rest_env, host))
            if spec.grpc_port is not None and spec.grpc_env is not None:
                ports.append(PortSetting(spec.grpc_port, spec.grpc_env, host))
        return ports

    def _replicas(self, service: str) -> list[ServiceSpec]:
        return [spec for spec in self.services if spec.kind == service]

    def grpc_address(self, name: str) -> str:
        """``host:port`` of a service's gRPC server; with replicas, every one of them,
        comma-separated (the form peer channels balance over)."""
        specs = self._replicas(name)
        assert specs and specs[0].grpc_port is not None, f"{name} has no gRPC port"
        return ",".join(
            format_address(self.connect_host, spec.grpc_port)
            for spec in specs
            if spec.grpc_port is not None
        )

    def rest_url(self, name: str) -> str:
        """``http://host:port`` of a service's REST (HTTP) server (its first replica)."""
        spec = self._replicas(name)[0]
        assert spec.rest_port is not None, f"{name} has no HTTP port"
        return f"http://{format_address(self.connect_host, spec.rest_port)}"

    def child_env(self, environ: Mapping[str, str], redis_url: str) -> dict[str, str]:
        """The environment of the service processes (each adds its :attr:`ServiceSpec.env`).

        Peer addresses follow the configured gRPC ports unless set explicitly, so moving a
        service to another port with its *_GRPC_PORT variable is enough. With replicas, a
        peer address lists every replica of the peer; FrontendService replicas pass live
        notifications to each other through REDIS_URL. On a cluster, REDIS_CLUSTER_NODES names
        its nodes too (it is what the services read first).
        """
        env = dict(environ)
        env["REDIS_URL"] = redis_url
        if redis_url.startswith(f"{CLUSTER_SCHEME}://"):
            # What every service reads first; the same nodes as REDIS_URL.
            env[CLUSTER_NODES_ENV] = redis_url.removeprefix(f"{CLUSTER_SCHEME}://")
        env["KEYS_DIR"] = str(self.keys_dir.resolve())
        env["BIND_HOST"] = self.bind_host
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the launcher as they are written
        for var, service in PEER_ADDRESS_VARS.items():
            if not env.get(var, "").strip():
                env[var] = self.grpc_address(service)
        for var, service in PEER_URL_VARS.items():
            if not env.get(var, "").strip():
                env[var] = self.rest_url(service)
        return env

    def process_env(self, spec: ServiceSpec, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` (from :meth:`child_env`) as the process of ``spec`` gets it: its own ports,
        and for a service run once whose client takes one address (the web inbox), the first
        replica of each peer the launcher addressed."""
        mine = {**env, **dict(spec.env)}
        if spec.kind in SINGLE_REPLICA:
            for var in PEER_ADDRESS_VARS:
                value = mine.get(var, "")
                if "," in value and value == self._addressed(var):
                    mine[var] = value.split(",", 1)[0]
        return mine

    def _addressed(self, var: str) -> str:
        return self.grpc_address(PEER_ADDRESS_VARS[var])
