"""The one place for HTTP/2 keepalive and reconnect settings of Missive's gRPC servers and channels.

Servers enforce a ping policy and clients must stay inside it: a client that pings more often
than ``SERVER_MIN_PING_INTERVAL_MS`` (with no data flowing) collects a "ping strike", and after
``SERVER_MAX_PING_STRIKES`` strikes the server closes the connection with
``GOAWAY ENHANCE_YOUR_CALM too_many_pings``. Client pings are therefore spaced by at least
``KEEPALIVE_MARGIN`` times the server's minimum, so timer jitter can never produce a strike.
(The SDK in ``clients/python`` keeps its own copy in ``missive_client/_channel_options.py``; a
test imports both and checks them against each other.)

Reconnects: gRPC's default reconnect backoff grows to 120 s (first retry after 1 s, then x1.6
with jitter), so a channel to a peer that was down for a while kept failing for seconds after the
peer was back. Internal channels retry every 100 ms at first and at most every
``MAX_RECONNECT_BACKOFF_MS``, so a restarted peer is reachable again within about 0.3 s.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

# --- what every Missive gRPC server enforces -----------------------------------------------
SERVER_MIN_PING_INTERVAL_MS: Final = 10_000
"""Pings closer together than this (without data) count as strikes."""
SERVER_MAX_PING_STRIKES: Final = 2
"""Strikes tolerated before GOAWAY too_many_pings."""
SERVER_KEEPALIVE_TIME_MS: Final = 60_000
"""Servers ping idle clients too, so a vanished stream subscriber is noticed in about a minute."""
SERVER_KEEPALIVE_TIMEOUT_MS: Final = 20_000

# --- what every internal channel (service to service) uses -------------------------------
KEEPALIVE_MARGIN: Final = 2
"""Client ping interval / server minimum interval: at least this factor, never equality."""
CLIENT_KEEPALIVE_TIME_MS: Final = 20_000
"""A silently dropped peer is detected within keepalive time + timeout (~25 s)."""
CLIENT_KEEPALIVE_TIMEOUT_MS: Final = 5_000
INITIAL_RECONNECT_BACKOFF_MS: Final = 100
"""First reconnect attempt 100 ms after a connection is lost."""
MIN_RECONNECT_BACKOFF_MS: Final = 1_000
"""gRPC's minimum connect timeout: one connection attempt may take this long (default 20 s)."""
MAX_RECONNECT_BACKOFF_MS: Final = 300
"""Upper bound of the time between reconnect attempts (default 120 s)."""


def server_options() -> list[tuple[str, Any]]:
    """Keepalive enforcement for :func:`services.common.grpc_server.create_grpc_server`."""
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", SERVER_MAX_PING_STRIKES),
        ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", SERVER_KEEPALIVE_TIMEOUT_MS),
    ]


def client_options() -> list[tuple[str, Any]]:
    """Keepalive and reconnect options of every internal channel."""
    return [
        ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", CLIENT_KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keep pinging an idle connection (0 = no limit): the server allows it at this pace.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", MIN_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


# --- one address, a list of replicas, or a resolver name ---------------------------------
RESOLVER_SCHEMES: Final = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
"""gRPC target names passed through as they are (``dns:///user-grpc:9797`` resolves to every
address of the name, which a headless Kubernetes Service answers with every ready pod)."""


def is_multi_target(address: str) -> bool:
    """Whether ``address`` may name several servers: a comma-separated list or a gRPC name."""
    value = address.strip()
    return "," in value or value.startswith(RESOLVER_SCHEMES)


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r} is not a host:port address")
    return host, int(port)


def parse_target(address: str) -> str:
    """The gRPC target of ``address``: ``host:port``, ``host:port,host:port,...`` (IP addresses
    or ``localhost``; becomes ``ipv4:a:1,b:2`` or ``ipv6:[a]:1,[b]:2``) or a gRPC name
    (``dns:///name:port``, ``ipv4:``, ``ipv6:``, ``unix:``) as it is. ValueError saying why
    otherwise."""
    value = address.strip()
    if value.startswith(RESOLVER_SCHEMES):
        if value.startswith("dns:"):
            _host_port(value.removeprefix("dns:").lstrip("/").rpartition("/")[2])
        return value
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ValueError(f"{address!r} has an empty entry")
    if len(items) == 1:
        _host_port(items[0])
        return items[0]
    v4: list[str] = []
    v6: list[str] = []
    for item in items:
        host, port = _host_port(item)
        bare = host.strip("[]")
        if bare == "localhost":
            bare = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(
                f"{item!r}: a list of replicas takes IP addresses; name replicas by host "
                "name with one dns:///name:port target instead"
            ) from None
        if ip.version == 4:
            v4.append(f"{ip}:{port}")
        else:
            v6.append(f"[{ip}]:{port}")
    if v4 and v6:
        raise ValueError(f"{address!r} mixes IPv4 and IPv6 addresses; gRPC takes one family")
    return f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"
