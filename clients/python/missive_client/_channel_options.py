"""Keepalive and reconnect settings of the SDK's (and CLI's) gRPC channels, in one place.

Missive's servers accept client pings no closer than 10 s apart on a connection without data
and close it with ``GOAWAY ENHANCE_YOUR_CALM too_many_pings`` after 2 closer ones. The SDK pings
every 30 s - three times the servers' minimum, so timer jitter can never make a strike - which
keeps an idle ``watch()`` stream alive through NATs and proxies and notices a dead server in
about 40 s. (The services' own settings live in ``services/common/channels.py``; a test checks
that the two agree.)

Reconnects: the blocking client (grpcio) retries a lost connection after 100 ms at first and at
most every second (gRPC's default grows to 120 s); the asyncio client (grpclib) opens a new
connection on the next call, without any backoff.
"""

from __future__ import annotations

from typing import Final

from grpclib.config import Configuration

__all__ = [
    "CHANNEL_OPTIONS",
    "INITIAL_RECONNECT_BACKOFF_MS",
    "KEEPALIVE_SECONDS",
    "KEEPALIVE_TIMEOUT_SECONDS",
    "MAX_RECONNECT_BACKOFF_MS",
    "MIN_RECONNECT_BACKOFF_MS",
    "SERVER_MIN_PING_INTERVAL_SECONDS",
    "grpclib_configuration",
]

SERVER_MIN_PING_INTERVAL_SECONDS: Final = 10.0
"""What Missive's servers enforce (documented; the SDK cannot import the services)."""
KEEPALIVE_SECONDS: Final = 30.0
"""Time between pings on an idle connection."""
KEEPALIVE_TIMEOUT_SECONDS: Final = 10.0
"""A ping unanswered this long closes the connection (the stream then reconnects)."""
INITIAL_RECONNECT_BACKOFF_MS: Final = 100
MIN_RECONNECT_BACKOFF_MS: Final = 5_000
"""gRPC's minimum connect timeout: one connection attempt may take this long."""
MAX_RECONNECT_BACKOFF_MS: Final = 1_000

CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_time_ms", int(KEEPALIVE_SECONDS * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_SECONDS * 1000)),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
    ("grpc.min_reconnect_backoff_ms", MIN_RECONNECT_BACKOFF_MS),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
)
"""grpcio channel options (the blocking client)."""


def grpclib_configuration() -> Configuration:
    """The same keepalive for a grpclib channel (the asyncio client)."""
    return Configuration(
        _keepalive_time=KEEPALIVE_SECONDS,
        _keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        # grpclib otherwise waits 300 s between pings whatever _keepalive_time says.
        _http2_min_sent_ping_interval_without_data=KEEPALIVE_SECONDS,
    )
