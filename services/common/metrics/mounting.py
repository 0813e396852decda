"""How the services mount their metrics (see README, Operations → Metrics).

Each is used at one place: the service shell (:mod:`services.common.app`), FrontendService's
wiring, the relays' receivers.

* :func:`with_metrics` wraps a REST app: ``/metrics`` on the REST port and HTTP metrics by the
  route templates of the app's OpenAPI document(s);
* :func:`outbox_collector` is the background task reading one outbox's backlog every
  ``METRICS_OUTBOX_INTERVAL`` seconds;
* :func:`metrics_listener` serves the exposition on a port of its own (FrontendService's
  ``FRONTEND_METRICS_PORT``) for as long as the service runs;
* :func:`observe_timestamp` records the delivery latency of a protobuf ``Timestamp``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp
from starlette.types import ASGIApp

from services.common.errors import PortInUse
from services.common.metrics.delivery import (
    OutboxCollector,
    OutboxLike,
    observe_delivery_latency,
)
from services.common.metrics.http_metrics import (
    HttpMetrics,
    MetricsMiddleware,
    openapi_route_templates,
    start_metrics_server,
)
from services.common.redis import RedisClient

__all__ = [
    "DEFAULT_OUTBOX_INTERVAL",
    "OUTBOX_INTERVAL_ENV",
    "metrics_listener",
    "observe_timestamp",
    "outbox_collector",
    "rest_route_templates",
    "with_metrics",
]

logger = logging.getLogger(__name__)

OUTBOX_INTERVAL_ENV: Final = "METRICS_OUTBOX_INTERVAL"
DEFAULT_OUTBOX_INTERVAL: Final = 10.0

Background = Callable[[], Coroutine[Any, Any, object]]


def rest_route_templates(app: object) -> list[str] | None:
    """The path templates of the OpenAPI documents a Connexion app serves (None: not one)."""
    apis = getattr(getattr(app, "middleware", None), "apis", None)
    if not apis:
        return None
    templates: list[str] = []
    for api in apis:
        spec = api.specification
        if not isinstance(spec, Path | str | Mapping):
            return None
        prefix = (api.base_path or "").rstrip("/")
        templates.extend(prefix + template for template in openapi_route_templates(spec))
    return templates


def with_metrics(app: ASGIApp | None) -> ASGIApp | None:
    """``app`` serving ``/metrics`` and counted by route template (None stays None).

    A Connexion app with the REST edge (:func:`services.common.rest_edge.install_edge`) records
    them in that edge, its outermost middleware; any other app is wrapped in a
    :class:`MetricsMiddleware`.
    """
    if app is None:
        return None
    # Imported here: the REST edge loads Connexion, which gRPC-only processes need not pay for.
    from services.common.rest_edge import attach_metrics

    routes = rest_route_templates(app)
    if attach_metrics(app, HttpMetrics(routes)):
        return app
    return MetricsMiddleware(app, routes=routes)


def outbox_collector(
    client: RedisClient, outbox: OutboxLike, interval: float = DEFAULT_OUTBOX_INTERVAL
) -> Background:
    """A background task reading ``outbox``'s lag, pending entries and dead letters."""
    collector = OutboxCollector(client, [outbox], interval)
    return collector.run


def metrics_listener(host: str, port: int, env_var: str, *, required: bool = True) -> Background:
    """A background task serving ``/metrics`` on ``host:port`` until cancelled.

    The port is bound when the task starts. A taken port raises ``PortInUse`` naming
    ``env_var``, which stops the service like any failed background task — when the operator
    asked for that port (``required``); on the default port it is logged and the service runs
    on without ``/metrics`` (metrics are worth less than delivering messages)."""

    async def serve() -> None:
        try:
            server = start_metrics_server(host, port, env_var)
        except PortInUse as exc:
            if required:
                raise
            logger.error("%s; serving without /metrics", exc)
            await asyncio.Event().wait()
            return
        logger.info("metrics on http://%s:%d/metrics", host, server.port)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(server.close)

    return serve


def observe_timestamp(hop: str, timestamp: Timestamp) -> None:
    """Record the delivery latency at ``hop`` of an event created at ``timestamp`` (if set)."""
    if timestamp.seconds or timestamp.nanos:
        observe_delivery_latency(hop, timestamp.seconds + timestamp.nanos / 1e9)
