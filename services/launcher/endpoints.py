"""The table printed once everything is healthy: where each service listens, how to log in."""

from __future__ import annotations

import logging
import shlex

from services.common.ports import format_address
from services.common.settings import redact_url
from services.launcher.config import LaunchConfig

__all__ = ["render_endpoints"]

logger = logging.getLogger(__name__)

_NONE = "-"
_HEADERS = ("service", "REST", "Swagger UI", "gRPC", "Redis DB")


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
                str(spec.redis_db) if spec.redis_db is not None else _NONE,
            )
        )
    return rows


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def _curl(url: str, body: str) -> str:
    return f"curl -s -X POST {url} -H 'content-type: application/json' -d {shlex.quote(body)}"


def render_endpoints(config: LaunchConfig, redis_url: str) -> str:
    """The endpoint table, the Redis in use, and the two commands that get a token."""
    lines = ["", "Missive is up.", ""]
    web = next((spec for spec in config.services if spec.name == "web"), None)
    if web is not None and web.rest_port:
        url = f"http://{format_address(config.connect_host, web.rest_port)}/"
        lines += [f"  Web inbox: {url}   (open it in a browser; register, sign in)", ""]
    lines += _table([_HEADERS, *_rows(config)])
    where = f"embedded Valkey, AOF in {config.valkey_dir}" if config.embedded_valkey else "external"
    lines += ["", f"  Redis: {redact_url(redis_url)} ({where}); signing keys in {config.keys_dir}"]
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
