"""Prometheus metrics of the Missive services (see README, Operations → Metrics).

Import what an edge needs from here:

* gRPC: :class:`ServerMetricsInterceptor` (``grpc.aio.server(interceptors=[...])``) and
  :func:`client_interceptors` (``grpc.aio.*_channel(..., interceptors=...)``);
* REST: :class:`MetricsMiddleware` (``/metrics`` plus HTTP metrics by route template);
* FrontendService: :func:`start_metrics_server` on :func:`metrics_port` (``FRONTEND_METRICS_PORT``);
* delivery: :class:`OutboxMetrics`, :func:`observe_delivery_latency`, :class:`OutboxCollector`;
* Redis: :func:`instrument_redis`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from services.common.metrics.delivery import (
    HOP_FRONTEND,
    HOP_LIVE_STREAM,
    HOP_NOTIFICATION,
    OutboxCollector,
    OutboxMetrics,
    OutboxSnapshot,
    observe_delivery_latency,
    stream_ended_slow,
    stream_pushed,
    streams_open,
)
from services.common.metrics.grpc_interceptors import (
    ServerMetricsInterceptor,
    StreamClientMetricsInterceptor,
    UnaryClientMetricsInterceptor,
    client_interceptors,
)
from services.common.metrics.http_metrics import (
    FRONTEND_METRICS_PORT,
    METRICS_PATH,
    MetricsMiddleware,
    MetricsServer,
    RouteMatcher,
    metrics_port,
    metrics_port_env,
    openapi_route_templates,
    start_metrics_server,
)
from services.common.metrics.redis_hooks import instrument_redis

__all__ = [
    "FRONTEND_METRICS_PORT",
    "HOP_FRONTEND",
    "HOP_LIVE_STREAM",
    "HOP_NOTIFICATION",
    "METRICS_PATH",
    "REGISTRY",
    "MetricsMiddleware",
    "MetricsServer",
    "OutboxCollector",
    "OutboxMetrics",
    "OutboxSnapshot",
    "RouteMatcher",
    "ServerMetricsInterceptor",
    "StreamClientMetricsInterceptor",
    "UnaryClientMetricsInterceptor",
    "client_interceptors",
    "generate_latest",
    "instrument_redis",
    "metrics_port",
    "metrics_port_env",
    "observe_delivery_latency",
    "openapi_route_templates",
    "start_metrics_server",
    "stream_ended_slow",
    "stream_pushed",
    "streams_open",
]
