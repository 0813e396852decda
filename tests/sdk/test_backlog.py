"""`missive status`'s backlog: where the metrics are, and reading a Prometheus exposition."""

from __future__ import annotations

import math

from missive_client import ClientConfig
from missive_client.cli._backlog import metrics_urls, parse_backlog, start_reading
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from services.common.metrics import start_metrics_server
from services.common.ports import free_port


def exposition(lag: float, live: int | None = None) -> str:
    registry = CollectorRegistry()
    labels = ("stream", "group")
    Gauge("missive_outbox_lag", "", labels, registry=registry).labels("outbox:x", "g").set(lag)
    Gauge("missive_outbox_pending", "", labels, registry=registry).labels("outbox:x", "g").set(3)
    Gauge("missive_outbox_oldest_pending_age_seconds", "", labels, registry=registry).labels(
        "outbox:x", "g"
    ).set(12.5)
    Gauge("missive_outbox_dead_letters", "", ("stream",), registry=registry).labels("outbox:x").set(
        2
    )
    if live is not None:
        Gauge("missive_frontend_live_streams", "", registry=registry).set(live)
    return generate_latest(registry).decode()


def test_an_outbox_is_read_from_its_gauges() -> None:
    backlog = parse_backlog("MessageService", "u", exposition(7))
    [outbox] = backlog.outboxes
    assert (outbox.stream, outbox.lag, outbox.pending) == ("outbox:x", 7, 3)
    assert (outbox.oldest_pending_age_seconds, outbox.dead_letters) == (12.5, 2)
    assert backlog.live_streams is None and backlog.error == ""
    unknown = parse_backlog("MessageService", "u", exposition(math.nan, live=4))
    assert unknown.outboxes[0].lag is None and unknown.live_streams == 4


def test_where_the_metrics_are() -> None:
    config = ClientConfig(
        user_url="http://u:1", message_url="http://m:2", frontend_grpc="[::1]:3030"
    )
    urls = metrics_urls(config, {})
    assert urls["UserService"] == "http://u:1/metrics"
    assert urls["MessageService"] == "http://m:2/metrics"
    assert urls["FrontendService"] == "http://[::1]:9464/metrics"
    assert metrics_urls(config, {"FRONTEND_METRICS_PORT": "9999"})["FrontendService"] == (
        "http://[::1]:9999/metrics"
    )
    elsewhere = {"MISSIVE_FRONTEND_METRICS_URL": "http://f:1/metrics"}
    assert metrics_urls(config, elsewhere)["FrontendService"] == "http://f:1/metrics"


def test_each_endpoint_is_read_or_says_why_not() -> None:
    server = start_metrics_server("127.0.0.1", 0)
    closed = free_port()
    try:
        config = ClientConfig(
            user_url=f"http://127.0.0.1:{closed}",
            message_url=f"http://127.0.0.1:{closed}",
            notification_url=f"http://127.0.0.1:{closed}",
            frontend_grpc="127.0.0.1:1",
        )
        futures = start_reading(config, {"FRONTEND_METRICS_PORT": str(server.port)})
        results = {item.service: item for item in (f.result(timeout=10) for f in futures)}
    finally:
        server.close()
    assert results["FrontendService"].error == ""
    assert results["FrontendService"].live_streams is not None
    assert results["UserService"].error.startswith(f"cannot read http://127.0.0.1:{closed}")
