"""Pieces both transports share: bearer auth, REST error hook, health messages, backoff, dedupe."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Generator
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import betterproto2
import httpx

from missive_client._calls import SERVICE_TITLES, ServiceName
from missive_client._channel_options import CHANNEL_OPTIONS
from missive_client._config import address_hint
from missive_client._errors import DeadlineExceeded, MissiveError, Unavailable, from_http
from missive_client._generated.rest.message import client as message_rest
from missive_client._generated.rest.message.api.health import health as message_health
from missive_client._generated.rest.notification import client as notification_rest
from missive_client._generated.rest.notification.api.health import health as notification_health
from missive_client._generated.rest.user import client as user_rest
from missive_client._generated.rest.user.api.health import health as user_health
from missive_client._models import HealthStatus
from missive_client._session import Session

__all__ = [
    "GRPC_OPTIONS",
    "HEALTH_TIMEOUT",
    "SEND_TOKEN",
    "USER_AGENT",
    "BearerAuth",
    "HealthCheckRequest",
    "HealthCheckResponse",
    "SeenIds",
    "backoff",
    "client_closed",
    "http_transport_error",
    "new_rest_client",
    "problem_error",
    "rest_health_endpoint",
    "serving_status",
]

try:
    USER_AGENT = f"missive-client/{version('missive-client')}"
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    USER_AGENT = "missive-client"

SEND_TOKEN: ContextVar[bool] = ContextVar("missive_send_token", default=True)
"""False while a public call (login) runs: a stale token must not be sent with it."""

GRPC_OPTIONS: tuple[tuple[str, int | str], ...] = (
    # Keepalive within the servers' ping policy and a short reconnect backoff.
    *CHANNEL_OPTIONS,
    ("grpc.primary_user_agent", USER_AGENT),
)

# The httpx client given to set_httpx_client carries the real base URL.
_REST_PLACEHOLDER = "http://missive.invalid"

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


@dataclass(eq=False, repr=False)
class HealthCheckRequest(betterproto2.Message):
    """grpc.health.v1.HealthCheckRequest (the standard protocol, not one of Missive's contracts)."""

    service: str = betterproto2.field(1, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class HealthCheckResponse(betterproto2.Message):
    """grpc.health.v1.HealthCheckResponse; ``status`` is the ServingStatus enum's number."""

    status: int = betterproto2.field(1, betterproto2.TYPE_INT32)


class BearerAuth(httpx.Auth):
    """Adds the session's current token to each request (read per request, so renewals apply)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        authorization = self._session.authorization
        if authorization and SEND_TOKEN.get():
            request.headers["Authorization"] = authorization
        yield request


def serving_status(serving: bool) -> HealthStatus:
    """``"SERVING"`` or ``"NOT_SERVING"``."""
    return "SERVING" if serving else "NOT_SERVING"


def new_rest_client(service: ServiceName) -> Any:
    """The generated ``AuthenticatedClient`` of ``service`` (its httpx client is set after)."""
    classes = {
        "user": user_rest.AuthenticatedClient,
        "message": message_rest.AuthenticatedClient,
        "notification": notification_rest.AuthenticatedClient,
    }
    return classes[service](base_url=_REST_PLACEHOLDER, token="")


HEALTH_TIMEOUT = 2.0
"""Seconds one health check may take (at most the client's ``timeout``): a service that has not
answered by then is reported as not answering, so ``status`` stays quick when one hangs."""


def rest_health_endpoint(service: ServiceName) -> Any:
    """The generated ``GET /health`` module of ``service``."""
    return {"user": user_health, "message": message_health, "notification": notification_health}[
        service
    ]


def problem_error(response: httpx.Response) -> MissiveError | None:
    """The exception for a non-2xx response (its body must have been read), else None."""
    if response.is_success:
        return None
    return from_http(response.status_code, response.content, response.headers)


def http_transport_error(exc: httpx.TransportError, service: ServiceName, url: str) -> MissiveError:
    """A REST call that got no HTTP response at all."""
    title = SERVICE_TITLES[service]
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(
            f"{title} at {url} did not answer in time ({exc!s})", service=service
        )
    return Unavailable(
        f"cannot reach {title} at {url}: {exc!s}; " + address_hint(service, f"{service}_url"),
        service=service,
    )


def client_closed() -> MissiveError:
    """The error of a call made on a closed client."""
    return MissiveError("the client is closed", code="CANCELLED")


def backoff(attempt: int, *, base: float = 0.2, cap: float = 5.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential with jitter."""
    ceiling: float = min(cap, base * (2 ** min(attempt, 16)))
    return ceiling * random.uniform(0.5, 1.0)


class SeenIds:
    """The notification ids one watch has yielded, bounded (oldest forgotten first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, notification_id: str) -> bool:
        """Remember ``notification_id``; False if it was already seen."""
        if notification_id in self._ids:
            self._ids.move_to_end(notification_id)
            return False
        self._ids[notification_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True
