"""FrontendService's metrics: live streams, notifications pushed, streams ended for slowness.

``missive_frontend_live_streams`` reads the hub's count when scraped (nothing per stream);
:func:`live_pushed` counts a live notification handed to its stream and records how long after
``SendMessage`` it got there (``missive_delivery_latency_seconds{hop="live_stream"}``).
The exposition is served on FRONTEND_METRICS_PORT (see :func:`metrics_background`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.common.metrics import (
    HOP_LIVE_STREAM,
    observe_delivery_latency,
    stream_ended_slow,
    stream_pushed,
    streams_open,
)
from services.common.metrics.mounting import Background, metrics_listener
from services.frontend.settings import METRICS_PORT_ENV

if TYPE_CHECKING:
    from services.frontend.hub import Hub
    from services.notification.models import Notification

__all__ = ["live_pushed", "metrics_background", "stream_ended_slow"]


def live_pushed(notification: Notification) -> Notification:
    """Count ``notification`` as pushed to a live stream and observe its latency; returns it."""
    stream_pushed()
    observe_delivery_latency(HOP_LIVE_STREAM, notification.timestamp)
    return notification


def metrics_background(host: str, port: int, hub: Hub, *, required: bool = True) -> Background:
    """The task serving ``/metrics`` on ``host:port``, with the hub's open streams as a gauge
    (``required``: a taken port stops the service; otherwise it is logged and skipped)."""
    streams_open.set_function(hub.open_streams)
    return metrics_listener(host, port, METRICS_PORT_ENV, required=required)
