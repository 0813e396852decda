"""The delivery backlog of ``missive status``, read from each service's Prometheus ``/metrics``.

Where the metrics are: UserService, MessageService and NotificationService serve them on their
REST port (``<REST base URL>/metrics``, the URLs the client already uses); FrontendService on
its metrics port, ``FRONTEND_METRICS_PORT`` (default 9464) on the host of its gRPC address, or
wherever ``MISSIVE_FRONTEND_METRICS_URL`` says. Each service's outbox shows its consumer-group
lag, pending entries, the age of the oldest pending one and its dead letters, as the service's
collector last read them (every ``METRICS_OUTBOX_INTERVAL`` seconds, 10 by default).
FrontendService has no outbox: its row shows its open live streams.

Every endpoint is read in parallel with the health checks, each within the health deadline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from missive_client._calls import SERVICE_TITLES
from missive_client._config import ClientConfig, split_host_port
from missive_client._wire import HEALTH_TIMEOUT

__all__ = [
    "FRONTEND_METRICS_PORT",
    "FRONTEND_METRICS_PORT_VAR",
    "FRONTEND_METRICS_URL_VAR",
    "OutboxBacklog",
    "ServiceBacklog",
    "backlog_rows",
    "backlog_table",
    "metrics_urls",
    "parse_backlog",
    "start_reading",
]

FRONTEND_METRICS_PORT = 9464
FRONTEND_METRICS_PORT_VAR = "FRONTEND_METRICS_PORT"
FRONTEND_METRICS_URL_VAR = "MISSIVE_FRONTEND_METRICS_URL"


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """One outbox as its owner's collector last read it (``lag`` None: the server cannot tell)."""

    stream: str
    lag: int | None
    pending: int
    oldest_pending_age_seconds: float
    dead_letters: int


@dataclass(frozen=True, slots=True)
class ServiceBacklog:
    """What one service's ``/metrics`` says about delivery; ``error`` when it could not be read."""

    service: str
    metrics_url: str
    outboxes: tuple[OutboxBacklog, ...] = ()
    live_streams: int | None = None
    error: str = ""


def metrics_urls(config: ClientConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each service's title and the URL of its ``/metrics``."""
    env = os.environ if environ is None else environ
    frontend = env.get(FRONTEND_METRICS_URL_VAR, "").strip()
    if not frontend:
        host, _ = split_host_port(config.frontend_grpc, "frontend_grpc")
        raw_port = env.get(FRONTEND_METRICS_PORT_VAR, "").strip()
        port = int(raw_port) if raw_port.isdigit() else FRONTEND_METRICS_PORT
        host = f"[{host}]" if ":" in host else host
        frontend = f"http://{host}:{port}/metrics"
    return {
        SERVICE_TITLES["user"]: f"{config.user_url}/metrics",
        SERVICE_TITLES["message"]: f"{config.message_url}/metrics",
        SERVICE_TITLES["notification"]: f"{config.notification_url}/metrics",
        SERVICE_TITLES["frontend"]: frontend,
    }


def _count(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


def parse_backlog(service: str, url: str, text: str) -> ServiceBacklog:
    """The backlog in a Prometheus text exposition; ValueError if it is not one."""
    lag: dict[str, float] = {}
    pending: dict[str, float] = {}
    age: dict[str, float] = {}
    dead: dict[str, float] = {}
    live: int | None = None
    by_name = {
        "missive_outbox_lag": lag,
        "missive_outbox_pending": pending,
        "missive_outbox_oldest_pending_age_seconds": age,
        "missive_outbox_dead_letters": dead,
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            target = by_name.get(sample.name)
            if target is not None and "stream" in sample.labels:
                target[sample.labels["stream"]] = sample.value
            elif sample.name == "missive_frontend_live_streams":
                live = int(sample.value)
    outboxes = tuple(
        OutboxBacklog(
            stream,
            _count(lag[stream]),
            int(pending.get(stream, 0)),
            age.get(stream, 0.0),
            int(dead.get(stream, 0)),
        )
        for stream in sorted(lag)
    )
    return ServiceBacklog(service, url, outboxes, live)


def _read(service: str, url: str, seconds: float) -> ServiceBacklog:
    try:
        response = httpx.get(url, timeout=seconds)
    except httpx.HTTPError as exc:
        return ServiceBacklog(service, url, error=f"cannot read {url}: {type(exc).__name__}")
    if response.status_code != 200:
        return ServiceBacklog(service, url, error=f"{url} answered {response.status_code}")
    try:
        return parse_backlog(service, url, response.text)
    except ValueError as exc:
        return ServiceBacklog(service, url, error=f"{url} is not Prometheus metrics: {exc}")


def start_reading(
    config: ClientConfig, environ: Mapping[str, str] | None = None
) -> list[Future[ServiceBacklog]]:
    """Read every service's ``/metrics`` in the background, within the health deadline each."""
    seconds = min(config.timeout, HEALTH_TIMEOUT)
    urls = metrics_urls(config, environ)
    pool = ThreadPoolExecutor(len(urls), thread_name_prefix="missive-metrics")
    futures = [pool.submit(_read, service, url, seconds) for service, url in urls.items()]
    pool.shutdown(wait=False)
    return futures


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def backlog_table(backlog: Sequence[ServiceBacklog]) -> Table:
    """The backlog table printed under the health table."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("service", "outbox", "lag", "pending", "oldest pending", "dead letters"):
        table.add_column(column, overflow="fold")
    for item in backlog:
        if item.error:
            table.add_row(item.service, "-", "-", "-", "-", "-", end_section=False)
            table.add_row("", item.error)
            continue
        if not item.outboxes:
            streams = "" if item.live_streams is None else f" ({item.live_streams} live streams)"
            table.add_row(item.service, f"none{streams}", "-", "-", "-", "-")
        for outbox in item.outboxes:
            table.add_row(
                item.service,
                outbox.stream,
                "?" if outbox.lag is None else str(outbox.lag),
                str(outbox.pending),
                _age(outbox.oldest_pending_age_seconds) if outbox.pending else "-",
                str(outbox.dead_letters),
            )
    return table


def backlog_rows(
    rows: list[dict[str, object]], backlog: Sequence[ServiceBacklog]
) -> list[dict[str, object]]:
    """The JSON rows of ``missive status --json``, each with its service's ``backlog``."""
    by_service = {item.service: asdict(item) for item in backlog}
    return [{**row, "backlog": by_service.get(str(row.get("service")))} for row in rows]
