"""Asynchronous execution of operation descriptions: grpclib channels, REST in ``_async_rest``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from betterproto2.grpclib.grpclib_client import ServiceStub
from grpclib.client import Channel
from grpclib.events import RecvTrailingMetadata, listen
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from missive_client._async_rest import AsyncRest
from missive_client._calls import (
    GRPC_SERVICES,
    REST_SERVICES,
    SERVICE_TITLES,
    Call,
    GrpcCall,
    ServiceName,
)
from missive_client._channel_options import grpclib_configuration
from missive_client._config import ClientConfig, address_hint, split_host_port
from missive_client._convert import notification_from_grpc
from missive_client._errors import (
    DeadlineExceeded,
    MissiveError,
    ServerError,
    Unavailable,
    from_grpc,
    parse_retry_after,
)
from missive_client._generated.grpc.missive.frontend import v1 as frontend_pb
from missive_client._generated.grpc.missive.message import v1 as message_pb
from missive_client._generated.grpc.missive.notification import v1 as notification_pb
from missive_client._generated.grpc.missive.user import v1 as user_pb
from missive_client._models import Notification, ServiceHealth
from missive_client._session import Session
from missive_client._wire import (
    HEALTH_CHECK_METHOD,
    HEALTH_STATUS_NAMES,
    HEALTH_TIMEOUT,
    HealthCheckRequest,
    HealthCheckResponse,
    client_closed,
    serving_status,
)

__all__ = ["AsyncTransport"]

T = TypeVar("T")

_STUBS: dict[ServiceName, Callable[[Channel], Any]] = {
    "user": user_pb.UserServiceAsyncStub,
    "message": message_pb.MessageServiceAsyncStub,
    "notification": notification_pb.NotificationServiceAsyncStub,
    "frontend": frontend_pb.FrontendServiceAsyncStub,
}
_TRAILERS: ContextVar[dict[str, str] | None] = ContextVar("missive_trailers", default=None)


class _HealthStub(ServiceStub):
    async def check(self, seconds: float) -> HealthCheckResponse:
        return await self._unary_unary(
            HEALTH_CHECK_METHOD, HealthCheckRequest(), HealthCheckResponse, timeout=seconds
        )


async def _remember_trailers(event: RecvTrailingMetadata) -> None:
    box = _TRAILERS.get()
    value = event.metadata.get("retry-after")
    if box is not None and value is not None:
        box["retry-after"] = str(value)


def _grpclib_error(
    exc: BaseException, service: ServiceName, address: str, trailers: dict[str, str]
) -> MissiveError:
    """The SDK exception for a failed grpclib call (raise it ``from exc``)."""
    title = SERVICE_TITLES[service]
    if isinstance(exc, GRPCError):
        return from_grpc(
            exc.status.name,
            exc.message or "",
            retry_after=parse_retry_after(trailers.get("retry-after")),
            service=service,
        )
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded(f"{title} at {address} did not answer in time", service=service)
    if isinstance(exc, OSError | StreamTerminatedError):
        return Unavailable(
            f"cannot reach {title} at {address}: {exc!s}; "
            + address_hint(service, f"{service}_grpc"),
            service=service,
        )
    return ServerError(f"{title} at {address} broke the protocol: {exc!s}", service=service)


_GRPCLIB_ERRORS = (GRPCError, StreamTerminatedError, ProtocolError, OSError)


class AsyncTransport:
    """Channels and HTTP clients of one :class:`AsyncClient`, created on first use."""

    def __init__(self, config: ClientConfig, session: Session) -> None:
        self.config = config
        self._session = session
        self._channels: dict[ServiceName, Channel] = {}
        self._stubs: dict[ServiceName, Any] = {}
        self._rest = AsyncRest(config, session)
        self._closed = False

    def grpc_address(self, service: ServiceName) -> str:
        """``host:port`` of ``service``'s gRPC server."""
        return cast("str", getattr(self.config, f"{service}_grpc"))

    def channel(self, service: ServiceName) -> Channel:
        """The grpclib channel to ``service`` (must be called inside the event loop)."""
        if self._closed:
            raise client_closed()
        if service not in self._channels:
            host, port = split_host_port(self.grpc_address(service), f"{service}_grpc")
            config = grpclib_configuration()
            channel = Channel(host, port, config=config)
            listen(channel, RecvTrailingMetadata, _remember_trailers)
            self._channels[service] = channel
        return self._channels[service]

    def _stub(self, service: ServiceName) -> Any:
        if service not in self._stubs:
            self._stubs[service] = _STUBS[service](self.channel(service))
        return self._stubs[service]

    def _metadata(self, auth: bool) -> dict[str, str]:
        metadata: dict[str, str] = {}
        authorization = self._session.authorization
        if auth and authorization:
            metadata["authorization"] = authorization
        return metadata

    async def execute(self, call: Call[T]) -> T:
        """Run one call once; any failure is a MissiveError."""
        if isinstance(call, GrpcCall):
            return await self._grpc(call)
        return await self._rest.execute(call)

    async def _grpc(self, call: GrpcCall[T]) -> T:
        method = getattr(self._stub(call.service), call.method)
        box: dict[str, str] = {}
        token = _TRAILERS.set(box)
        try:
            reply = await method(
                call.request, timeout=self.config.timeout, metadata=self._metadata(call.auth)
            )
        except _GRPCLIB_ERRORS as exc:
            address = self.grpc_address(call.service)
            raise _grpclib_error(exc, call.service, address, box) from exc
        finally:
            _TRAILERS.reset(token)
        return call.convert(reply)

    async def stream(self, email: str) -> AsyncGenerator[Notification, None]:
        """The notifications of one SubscribeNotifications call, as they arrive."""
        items: AsyncGenerator[Any, None] = self._stub("frontend").subscribe_notifications(
            frontend_pb.SubscribeNotificationsRequest(email=email),
            metadata=self._metadata(True),
        )
        box: dict[str, str] = {}
        try:
            while True:
                # Each step may run in another task's context (whoever awaits the next
                # item), so the trailers box is put in place again before every step.
                _TRAILERS.set(box)
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
                yield notification_from_grpc(item)
        except _GRPCLIB_ERRORS as exc:
            address = self.grpc_address("frontend")
            raise _grpclib_error(exc, "frontend", address, box) from exc
        finally:
            await items.aclose()

    async def health(self) -> list[ServiceHealth]:
        """The health of every gRPC server and REST API, checked concurrently.

        Each check may take ``HEALTH_TIMEOUT`` seconds at most (see the blocking client).
        """
        seconds = min(self.config.timeout, HEALTH_TIMEOUT)
        checks = [self._grpc_health(service, seconds) for service in GRPC_SERVICES]
        checks += [self._rest.health(service, seconds) for service in REST_SERVICES]
        return list(await asyncio.gather(*checks))

    async def _grpc_health(self, service: ServiceName, seconds: float) -> ServiceHealth:
        address = self.grpc_address(service)
        title = SERVICE_TITLES[service]
        try:
            reply = await _HealthStub(self.channel(service)).check(seconds)
        except _GRPCLIB_ERRORS as exc:
            error = _grpclib_error(exc, service, address, {})
            return ServiceHealth(title, "grpc", address, "UNREACHABLE", str(error))
        name = HEALTH_STATUS_NAMES.get(reply.status, "UNKNOWN")
        return ServiceHealth(title, "grpc", address, serving_status(name == "SERVING"), name)

    async def close(self) -> None:
        """Close every channel and HTTP client."""
        self._closed = True
        for channel in self._channels.values():
            channel.close()
        await self._rest.close()
        self._channels.clear()
        self._stubs.clear()
