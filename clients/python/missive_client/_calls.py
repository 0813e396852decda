"""What an operation is, transport-neutral: a :class:`GrpcCall` or a :class:`RestCall`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import betterproto2

T = TypeVar("T")
ServiceName = Literal["user", "message", "notification", "frontend"]

GRPC_SERVICES: tuple[ServiceName, ...] = ("user", "message", "notification", "frontend")
REST_SERVICES: tuple[ServiceName, ...] = ("user", "message", "notification")
SERVICE_TITLES: Mapping[ServiceName, str] = {
    "user": "UserService",
    "message": "MessageService",
    "notification": "NotificationService",
    "frontend": "FrontendService",
}


@dataclass(frozen=True, slots=True)
class GrpcCall(Generic[T]):
    """Call ``method`` (the same name on the generated sync and async stubs) of ``service``."""

    service: ServiceName
    method: str
    request: betterproto2.Message
    convert: Callable[[Any], T]
    auth: bool = True
    retry_safe: bool = True


@dataclass(frozen=True, slots=True)
class RestCall(Generic[T]):
    """Call one generated REST endpoint (its ``sync_detailed`` or ``asyncio_detailed``)."""

    service: ServiceName
    sync: Callable[..., Any]
    asyncio: Callable[..., Awaitable[Any]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], T] = field(default=lambda parsed: parsed)
    auth: bool = True
    retry_safe: bool = True


Call = GrpcCall[T] | RestCall[T]


def rest_call(
    service: ServiceName,
    endpoint: Any,
    convert: Callable[[Any], T],
    *,
    auth: bool = True,
    retry_safe: bool = True,
    **kwargs: Any,
) -> RestCall[T]:
    return RestCall(
        service,
        endpoint.sync_detailed,
        endpoint.asyncio_detailed,
        kwargs,
        convert,
        auth=auth,
        retry_safe=retry_safe,
    )
