"""Every metric family a Missive service exports, registered once in the default registry.

Names follow the Prometheus conventions (base units, ``_total`` counters) and, for gRPC, the
names of go-grpc-prometheus / py-grpc-prometheus, so existing dashboards and alerts apply.
Every label value comes from a bounded set: gRPC methods of the registered services, status
code names, HTTP route templates, outbox stream names and hop names fixed in code, Redis command
names from a fixed list. Never an email, an id or a raw path.

The default registry also carries prometheus-client's process and Python collectors
(``process_*``, ``python_gc_*``, ``python_info``).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "DELIVERY_LATENCY_BUCKETS",
    "LATENCY_BUCKETS",
    "REGISTRY",
]

# No ``*_created`` series: they double the exposition and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds; RPCs and REST requests of this system take from a fraction of a millisecond
# (reads) to a few hundred milliseconds (password hashing).
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# End-to-end delivery: milliseconds when healthy, minutes when a peer is down.
DELIVERY_LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip

_GRPC: Final = ("grpc_type", "grpc_service", "grpc_method")
_GRPC_CODE: Final = (*_GRPC, "grpc_code")

# --- gRPC server -------------------------------------------------------------------------------
GRPC_SERVER_STARTED: Final = Counter(
    "grpc_server_started_total", "RPCs started on the server.", _GRPC
)
GRPC_SERVER_HANDLED: Final = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", _GRPC_CODE
)
GRPC_SERVER_HANDLING: Final = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, on the server.",
    _GRPC,
    buckets=LATENCY_BUCKETS,
)
GRPC_SERVER_MSG_SENT: Final = Counter(
    "grpc_server_msg_sent_total", "Messages sent by the server on server-streaming RPCs.", _GRPC
)

# --- gRPC client -------------------------------------------------------------------------------
GRPC_CLIENT_STARTED: Final = Counter(
    "grpc_client_started_total", "RPCs started by this process's channels.", _GRPC
)
GRPC_CLIENT_HANDLED: Final = Counter(
    "grpc_client_handled_total", "RPCs completed by this process's channels.", _GRPC_CODE
)
GRPC_CLIENT_HANDLING: Final = Histogram(
    "grpc_client_handling_seconds",
    "Time from the start of an RPC to its status, on the client.",
    _GRPC,
    buckets=LATENCY_BUCKETS,
)

# --- HTTP (REST edges) -------------------------------------------------------------------------
HTTP_REQUESTS: Final = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
)
HTTP_DURATION: Final = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ("method", "route", "status"),
    buckets=LATENCY_BUCKETS,
)

# --- Delivery (transactional outboxes and their relays) -----------------------------------------
OUTBOX_ADDED: Final = Counter(
    "missive_outbox_added_total", "Events appended to an outbox stream.", ("stream",)
)
OUTBOX_DELIVERED: Final = Counter(
    "missive_outbox_delivered_total", "Outbox events delivered and acknowledged.", ("stream",)
)
OUTBOX_RETRIED: Final = Counter(
    "missive_outbox_retried_total", "Delivery attempts of outbox events retried.", ("stream",)
)
OUTBOX_DEAD_LETTERED: Final = Counter(
    "missive_outbox_dead_lettered_total",
    "Outbox events moved to the dead-letter stream.",
    ("stream",),
)
OUTBOX_LAG: Final = Gauge(
    "missive_outbox_lag",
    "Entries of the outbox stream not yet read by the relay's consumer group.",
    ("stream", "group"),
)
OUTBOX_PENDING: Final = Gauge(
    "missive_outbox_pending",
    "Entries read by the relay's consumer group and not yet acknowledged.",
    ("stream", "group"),
)
OUTBOX_OLDEST_PENDING_AGE: Final = Gauge(
    "missive_outbox_oldest_pending_age_seconds",
    "Age (since it was appended) of the oldest entry read and not yet acknowledged.",
    ("stream", "group"),
)
OUTBOX_LENGTH: Final = Gauge(
    "missive_outbox_length", "Entries held in the outbox stream (XLEN).", ("stream",)
)
OUTBOX_DEAD_LETTERS: Final = Gauge(
    "missive_outbox_dead_letters",
    "Entries held in the outbox's dead-letter stream (XLEN).",
    ("stream",),
)
OUTBOX_COLLECTOR_ERRORS: Final = Counter(
    "missive_outbox_collector_errors_total",
    "Failed reads of an outbox's backlog by the periodic collector.",
    ("stream",),
)
DELIVERY_LATENCY: Final = Histogram(
    "missive_delivery_latency_seconds",
    "Time from an event's creation (its timestamp) to its delivery at each hop.",
    ("hop",),
    buckets=DELIVERY_LATENCY_BUCKETS,
)

# --- FrontendService live streams ----------------------------------------------------------------
FRONTEND_LIVE_STREAMS: Final = Gauge(
    "missive_frontend_live_streams", "Notification streams open on this FrontendService."
)
FRONTEND_PUSHED: Final = Counter(
    "missive_frontend_notifications_pushed_total",
    "Notifications written to a subscriber's live stream.",
)
FRONTEND_ENDED_SLOW: Final = Counter(
    "missive_frontend_streams_ended_slow_total",
    "Live streams ended because the subscriber read too slowly.",
)

# --- Redis -------------------------------------------------------------------------------------
REDIS_DURATION: Final = Histogram(
    "missive_redis_command_duration_seconds",
    "Round trip of a Redis command (a pipeline counts once, as PIPELINE or MULTI).",
    ("command",),
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS: Final = Counter(
    "missive_redis_command_errors_total",
    "Redis commands that failed, by command and error kind.",
    ("command", "error"),
)
