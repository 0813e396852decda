"""The table printed once everything is healthy: where each service listens, how to log in."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from services.common.ports import format_address
from services.common.settings import redact_url
from services.launcher.config import CLUSTER_NAMESPACES, LaunchConfig

__all__ = ["CLIENT_DEFAULT_HOST", "CLIENT_VARS", "client_exports", "render_endpoints"]

_NONE = "-"
_HEADERS = ("service", "REST", "Swagger UI", "gRPC", "Redis DB")
_CLUSTER_HEADERS = ("service", "REST", "Swagger UI", "gRPC", "Redis keys")
"""On a cluster (one database), the last column is each service's key namespace."""


def _rows(config: LaunchConfig) -> list[tuple[str, ...]]:
    host = config.connect_host
    rows: list[tuple[str, ...]] = []
    for spec in config.services:
        rest = f"http://{format_address(host, spec.rest_port)}" if spec.rest_port else _NONE
        api = spec.grpc_port is not None  # the web inbox serves pages: no Swagger UI, no gRPC
        rows.append(
            (
                spec.name,
                rest,
                f"{rest}/ui/" if spec.rest_port and api else _NONE,
                format_address(host, spec.grpc_port) if spec.grpc_port is not None else _NONE,
                _data(config, spec.kind, spec.redis_db),
            )
        )
    return rows


def _data(config: LaunchConfig, service: str, db: int | None) -> str:
    if config.cluster:
        return f"{CLUSTER_NAMESPACES[service]}*" if service in CLUSTER_NAMESPACES else _NONE
    return str(db) if db is not None else _NONE


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


CLIENT_DEFAULT_HOST = "127.0.0.1"
"""Where the SDK and the CLI look for the services when nothing is set (``MISSIVE_HOST``)."""

# The SDK's per-service variables: (service, "rest" or "grpc") -> the variable and the default
# port the SDK assumes on its host (clients/python/missive_client/_config.py; a test checks
# that both agree).
CLIENT_VARS: dict[tuple[str, str], tuple[str, int]] = {
    ("user", "rest"): ("MISSIVE_USER_URL", 8080),
    ("message", "rest"): ("MISSIVE_MESSAGE_URL", 8081),
    ("notification", "rest"): ("MISSIVE_NOTIFICATION_URL", 8082),
    ("user", "grpc"): ("MISSIVE_USER_GRPC", 9797),
    ("message", "grpc"): ("MISSIVE_MESSAGE_GRPC", 9798),
    ("notification", "grpc"): ("MISSIVE_NOTIFICATION_GRPC", 9799),
    ("frontend", "grpc"): ("MISSIVE_FRONTEND_GRPC", 3030),
}
_HOST_VAR = "MISSIVE_HOST"
_PROFILE_VAR = "MISSIVE_PROFILE"


def _client_addresses(config: LaunchConfig) -> dict[str, tuple[str, int, int]]:
    """Each client variable: the address this launch serves it on, its port, the default port."""
    host = config.connect_host
    found: dict[str, tuple[str, int, int]] = {}
    for spec in config.services:
        for kind, port in (("rest", spec.rest_port), ("grpc", spec.grpc_port)):
            entry = CLIENT_VARS.get((spec.name, kind))
            if entry is None or port is None:
                continue
            variable, default = entry
            address = format_address(host, port)
            found[variable] = (f"http://{address}" if kind == "rest" else address, port, default)
    return found


def client_exports(config: LaunchConfig, environ: Mapping[str, str]) -> list[str]:
    """The shell lines that point the SDK and the CLI at this launch; [] when the defaults do.

    ``MISSIVE_HOST`` when the services are not on the client's default host, and a service's
    own variable for each port that differs from its default, plus any MISSIVE_* variable of
    this environment that would point a client elsewhere (so that pasting the lines into a
    shell like this one is enough).
    """
    host = config.connect_host
    lines: dict[str, str] = {}
    if host != CLIENT_DEFAULT_HOST or _differs(environ.get(_HOST_VAR), host):
        lines[_HOST_VAR] = host
    for variable, (address, port, default) in _client_addresses(config).items():
        if port != default or _differs(environ.get(variable), address):
            lines[variable] = address
    exports = [f"export {name}={shlex.quote(value)}" for name, value in lines.items()]
    if environ.get(_PROFILE_VAR, "").strip() and exports:
        exports.insert(0, f"unset {_PROFILE_VAR}")
    return exports


def _differs(current: str | None, wanted: str) -> bool:
    """True when a variable is set to something else than ``wanted``."""
    value = (current or "").strip()
    return bool(value) and value.rstrip("/").strip("[]") != wanted.strip("[]")


def _curl(url: str, body: str) -> str:
    return f"curl -s -X POST {url} -H 'content-type: application/json' -d {shlex.quote(body)}"


def render_endpoints(
    config: LaunchConfig, redis_url: str, environ: Mapping[str, str] | None = None
) -> str:
    """The endpoint table, the Redis in use, client exports, and the commands that get a token."""
    lines = ["", "Missive is up.", ""]
    web = next((spec for spec in config.services if spec.kind == "web"), None)
    if web is not None and web.rest_port:
        url = f"http://{format_address(config.connect_host, web.rest_port)}/"
        lines += [f"  Web inbox: {url}   (open it in a browser; register, sign in)", ""]
    lines += _table([_CLUSTER_HEADERS if config.cluster else _HEADERS, *_rows(config)])
    if config.cluster:
        where = (
            f"embedded Valkey Cluster, data in {config.valkey_dir}"
            if config.embedded_valkey
            else "external cluster"
        )
    else:
        where = (
            f"embedded Valkey, AOF in {config.valkey_dir}" if config.embedded_valkey else "external"
        )
    lines += ["", f"  Redis: {redact_url(redis_url)} ({where}); signing keys in {config.keys_dir}"]
    exports = client_exports(config, environ or {})
    if exports:
        lines += [
            "",
            "Point the missive CLI and the SDK here: run in each terminal that uses them",
            *(f"  {line}" for line in exports),
        ]
    user = next(spec for spec in config.services if spec.name == "user")
    if user.rest_port:
        base = f"http://{format_address(config.connect_host, user.rest_port)}"
        lines += [
            "",
            "Get a token: register, then log in (the token is access_token in the reply):",
            "  "
            + _curl(
                f"{base}/users",
                '{"name":"Ada","email":"ada@example.com","password":"correct horse"}',
            ),
            "  " + _curl(f"{base}/login", '{"email":"ada@example.com","password":"correct horse"}'),
            "and send it as  -H 'authorization: Bearer <access_token>'",
        ]
    lines += ["", "Press Ctrl-C to stop everything.", ""]
    return "\n".join(lines)
