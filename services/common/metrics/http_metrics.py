"""HTTP metrics and the ``/metrics`` endpoint: an ASGI middleware, and a standalone listener.

REST services wrap their ASGI app::

    app = MetricsMiddleware(app, routes=openapi_route_templates("openapi/user.yaml"))

which answers ``GET /metrics`` on the REST port and counts every other request by method,
route *template* (``/users/{email}``, never the raw path) and status. A path matching no
template is counted as route ``unmatched``. Without ``routes`` the Starlette route that
answered (``scope["route"]``) names the template.

A service without a REST port (FrontendService) serves the exposition on its own port with
:func:`start_metrics_server`; :func:`metrics_port` reads ``<SERVICE>_METRICS_PORT``.
"""

from __future__ import annotations

import errno
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import yaml
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server
from prometheus_client.registry import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import PortInUse, StartupError
from services.common.metrics import families as f
from services.common.settings import env_int

__all__ = [
    "FRONTEND_METRICS_PORT",
    "METRICS_PATH",
    "UNMATCHED_ROUTE",
    "HttpMetrics",
    "MetricsMiddleware",
    "MetricsServer",
    "RouteMatcher",
    "metrics_port",
    "metrics_port_env",
    "openapi_route_templates",
    "start_metrics_server",
]

METRICS_PATH: Final = "/metrics"
UNMATCHED_ROUTE: Final = "unmatched"
# FrontendService's default (it has no REST port); 9464 is the usual Prometheus exporter port.
FRONTEND_METRICS_PORT: Final = 9464
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PARAM: Final = re.compile(r"\{[^/{}]+\}")


class RouteMatcher:
    """Maps a request path to the route template it matches (or ``unmatched``)."""

    def __init__(self, templates: Iterable[str], prefix: str = "") -> None:
        self._literal: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for template in templates:
            full = prefix.rstrip("/") + template
            if _PARAM.search(full) is None:
                self._literal[full] = full
                continue
            parts = _PARAM.split(full)
            regex = "[^/]+".join(re.escape(part) for part in parts)
            self._patterns.append((re.compile(regex + r"\Z"), full))
        # Templates with fewer parameters first: /users/{email}/revoke_tokens beats /a/{x}/{y}.
        self._patterns.sort(key=lambda item: item[1].count("{"))

    def __call__(self, path: str) -> str:
        found = self._literal.get(path)
        if found is not None:
            return found
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return UNMATCHED_ROUTE

    @property
    def templates(self) -> list[str]:
        return [*self._literal, *(template for _, template in self._patterns)]


def openapi_route_templates(spec: Path | str | Mapping[str, Any]) -> list[str]:
    """The path templates of an OpenAPI document (a file or a loaded mapping)."""
    if not isinstance(spec, Mapping):
        spec = yaml.safe_load(Path(spec).read_text(encoding="utf-8"))
    paths = spec.get("paths") if isinstance(spec, Mapping) else None
    if not isinstance(paths, Mapping):
        raise ValueError("the OpenAPI document has no paths")
    return [str(path) for path in paths]


class HttpMetrics:
    """The HTTP RED metrics of one REST app and its ``/metrics`` exposition, for middlewares.

    :class:`MetricsMiddleware` is one on its own; the REST edge
    (:class:`services.common.rest_edge.RestEdge`) records with one alongside the request ids.
    """

    def __init__(
        self,
        routes: Iterable[str] | None = None,
        *,
        prefix: str = "",
        registry: CollectorRegistry = REGISTRY,
        path: str = METRICS_PATH,
    ) -> None:
        self._match = RouteMatcher(routes, prefix) if routes is not None else None
        self._registry = registry
        self._path = path
        self._children: dict[
            tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]
        ] = {}

    def is_exposition(self, scope: Scope) -> bool:
        """Whether an HTTP request asks for the exposition (``GET``/``HEAD /metrics``)."""
        return scope["path"] == self._path and scope["method"] in ("GET", "HEAD")

    def _route(self, scope: Scope) -> str:
        if self._match is not None:
            return self._match(scope["path"])
        route = scope.get("route")
        template = getattr(route, "path", None)
        return template if isinstance(template, str) else UNMATCHED_ROUTE

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one answered request (by method, route template and status) and its time."""
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (method, self._route(scope), status)
        children = self._children.get(key)
        if children is None:  # bounded: methods x templates x statuses
            labels = (method, key[1], str(status))
            children = (
                f.HTTP_REQUESTS.labels(*labels).inc,
                f.HTTP_DURATION.labels(*labels).observe,
            )
            self._children[key] = children
        children[0]()
        children[1](seconds)

    async def exposition(self, scope: Scope, send: Send) -> None:
        """Answer with the exposition of the registry."""
        body = generate_latest(self._registry)
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        empty = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if empty else body})


class MetricsMiddleware:
    """ASGI middleware: serves the exposition at ``/metrics`` and records HTTP RED metrics."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[str] | None = None,
        *,
        prefix: str = "",
        registry: CollectorRegistry = REGISTRY,
        path: str = METRICS_PATH,
    ) -> None:
        self.app = app
        self.metrics = HttpMetrics(routes, prefix=prefix, registry=registry, path=path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        if metrics.is_exposition(scope):
            await metrics.exposition(scope, send)
            return
        status = 500  # an exception before the response started becomes a 500
        start = perf_counter()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            metrics.record(scope, status, perf_counter() - start)


def metrics_port_env(service: str) -> str:
    """The variable naming a service's metrics port: ``USER_METRICS_PORT``, ..."""
    return f"{service.upper()}_METRICS_PORT"


def metrics_port(environ: Mapping[str, str], service: str, default: int | None) -> int | None:
    """The port of a service's standalone metrics listener, or None to serve none.

    ``default`` None (REST services, whose REST port serves ``/metrics``): a listener only when
    ``<SERVICE>_METRICS_PORT`` is set. 0 picks a free port.
    """
    name = metrics_port_env(service)
    if default is None and not environ.get(name, "").strip():
        return None
    return env_int(environ, name, default, min=0, max=65535)


@dataclass
class MetricsServer:
    """A running standalone exposition listener (a daemon thread; scrapes never touch the loop)."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    host: str, port: int, env_var: str = "", registry: CollectorRegistry = REGISTRY
) -> MetricsServer:
    """Serve the exposition at ``http://host:port/metrics`` (any path answers it, as usual)."""
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port, env_var) from exc
        raise StartupError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    return MetricsServer(httpd, thread)
