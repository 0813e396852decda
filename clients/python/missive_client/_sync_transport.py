"""Blocking execution of operation descriptions: grpcio channels, REST in ``_rest``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from functools import partial
from typing import Any, TypeVar, cast

import grpc

from missive_client._calls import (
    GRPC_SERVICES,
    REST_SERVICES,
    SERVICE_TITLES,
    Call,
    GrpcCall,
    ServiceName,
)
from missive_client._config import ClientConfig, address_hint
from missive_client._convert import notification_from_grpc
from missive_client._errors import MissiveError, ServerError, from_grpc, parse_retry_after
from missive_client._generated.grpc.missive.frontend import v1 as frontend_pb
from missive_client._generated.grpc.missive.message import v1 as message_pb
from missive_client._generated.grpc.missive.notification import v1 as notification_pb
from missive_client._generated.grpc.missive.user import v1 as user_pb
from missive_client._models import Notification, ServiceHealth
from missive_client._rest import SyncRest
from missive_client._session import Session
from missive_client._wire import (
    GRPC_OPTIONS,
    HEALTH_CHECK_METHOD,
    HEALTH_STATUS_NAMES,
    HEALTH_TIMEOUT,
    SEND_TOKEN,
    HealthCheckRequest,
    HealthCheckResponse,
    client_closed,
    serving_status,
)

__all__ = ["LiveStream", "SyncTransport", "grpc_error"]

T = TypeVar("T")

_STUBS: dict[ServiceName, Callable[[grpc.Channel], Any]] = {
    "user": user_pb.UserServiceStub,
    "message": message_pb.MessageServiceStub,
    "notification": notification_pb.NotificationServiceStub,
    "frontend": frontend_pb.FrontendServiceStub,
}


def grpc_error(exc: grpc.RpcError, service: ServiceName, address: str) -> MissiveError:
    """The SDK exception for a failed grpcio call (raise it ``from exc``)."""
    title = SERVICE_TITLES[service]
    if not isinstance(exc, grpc.Call):
        return ServerError(f"{title}: {exc!r}", service=service)
    retry_after = None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            retry_after = parse_retry_after(value)
    code = exc.code().name
    details = exc.details() or ""
    if code == "UNAVAILABLE" and details.startswith("failed to connect"):
        # grpc's own connectivity error, not a server's message: say which service it was.
        details = f"cannot reach {title} at {address}: {details}; " + address_hint(
            service, f"{service}_grpc"
        )
    return from_grpc(code, details, retry_after=retry_after, service=service)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        base: grpc.ClientCallDetails,
        timeout: float | None,
        metadata: tuple[tuple[str, str | bytes], ...],
    ) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


class _AuthInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the session's token and the call timeout, which the generated sync stubs cannot."""

    def __init__(self, session: Session, timeout: float) -> None:
        self._session = session
        self._timeout = timeout

    def _details(self, details: grpc.ClientCallDetails, timeout: float | None) -> _CallDetails:
        metadata: tuple[tuple[str, str | bytes], ...] = tuple(details.metadata or ())
        authorization = self._session.authorization
        if authorization and SEND_TOKEN.get():
            metadata += (("authorization", authorization),)
        return _CallDetails(details, details.timeout or timeout, metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, self._timeout), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, None), request)


class _StreamRecorder:
    """Hands the generated stub a channel whose streaming calls it remembers, to cancel them."""

    def __init__(self, channel: grpc.Channel, cancelled: threading.Event) -> None:
        self._channel = channel
        self._cancelled = cancelled
        self.call: Any = None

    def unary_stream(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        multicallable = self._channel.unary_stream(*args, **kwargs)

        def invoke(request: Any, **call_kwargs: Any) -> Any:
            call = multicallable(request, **call_kwargs)
            self.call = call
            if self._cancelled.is_set():  # cancel() ran before the call existed
                call.cancel()
            return call

        return invoke


class LiveStream:
    """One SubscribeNotifications call: iterate for notifications, ``cancel()`` from any thread."""

    def __init__(self, channel: grpc.Channel, email: str, address: str) -> None:
        self._address = address
        self._cancelled = threading.Event()
        self._recorder = _StreamRecorder(channel, self._cancelled)
        # The generated stub only uses unary_stream on its channel for this method.
        stub = frontend_pb.FrontendServiceStub(cast("grpc.Channel", self._recorder))
        self._items = stub.subscribe_notifications(
            frontend_pb.SubscribeNotificationsRequest(email=email)
        )

    def __iter__(self) -> Iterator[Notification]:
        try:
            for item in self._items:
                yield notification_from_grpc(item)
        except grpc.RpcError as exc:
            raise grpc_error(exc, "frontend", self._address) from exc

    def cancel(self) -> None:
        """End the call; the iteration then stops with an error the caller ignores."""
        self._cancelled.set()
        call = self._recorder.call
        if call is not None:
            call.cancel()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancelled.is_set()


class SyncTransport:
    """Channels and HTTP clients of one :class:`Client`, created on first use."""

    def __init__(self, config: ClientConfig, session: Session) -> None:
        self.config = config
        self._session = session
        self._lock = threading.Lock()
        self._channels: dict[ServiceName, grpc.Channel] = {}
        self._raw_channels: dict[ServiceName, grpc.Channel] = {}
        self._stubs: dict[ServiceName, Any] = {}
        self._rest = SyncRest(config, session)
        self._closed = False

    def grpc_address(self, service: ServiceName) -> str:
        """``host:port`` of ``service``'s gRPC server."""
        return cast("str", getattr(self.config, f"{service}_grpc"))

    def channel(self, service: ServiceName) -> grpc.Channel:
        """The intercepted channel to ``service`` (token and timeout added per call)."""
        with self._lock:
            if self._closed:
                raise client_closed()
            if service not in self._channels:
                raw = grpc.insecure_channel(self.grpc_address(service), options=GRPC_OPTIONS)
                self._raw_channels[service] = raw
                interceptor = _AuthInterceptor(self._session, self.config.timeout)
                self._channels[service] = grpc.intercept_channel(raw, interceptor)
            return self._channels[service]

    def _stub(self, service: ServiceName) -> Any:
        channel = self.channel(service)
        with self._lock:
            if service not in self._stubs:
                self._stubs[service] = _STUBS[service](channel)
            return self._stubs[service]

    def execute(self, call: Call[T]) -> T:
        """Run one call once; any failure is a MissiveError."""
        if not isinstance(call, GrpcCall):
            return self._rest.execute(call)
        token = SEND_TOKEN.set(call.auth)
        try:
            return self._grpc(call)
        finally:
            SEND_TOKEN.reset(token)

    def _grpc(self, call: GrpcCall[T]) -> T:
        method = getattr(self._stub(call.service), call.method)
        try:
            reply = method(call.request)
        except grpc.RpcError as exc:
            raise grpc_error(exc, call.service, self.grpc_address(call.service)) from exc
        return call.convert(reply)

    def open_stream(self, email: str) -> LiveStream:
        """Start a SubscribeNotifications call for ``email``."""
        token = SEND_TOKEN.set(True)
        try:
            return LiveStream(self.channel("frontend"), email, self.grpc_address("frontend"))
        finally:
            SEND_TOKEN.reset(token)

    def health(self) -> list[ServiceHealth]:
        """The health of every gRPC server and REST API, checked in parallel (each once).

        Each check may take ``HEALTH_TIMEOUT`` seconds at most, so one hung service delays the
        answer by that much, not by the sum of every check's wait.
        """
        seconds = min(self.config.timeout, HEALTH_TIMEOUT)
        checks: list[Callable[[], ServiceHealth]] = [
            *(partial(self._grpc_health, service, seconds) for service in GRPC_SERVICES),
            *(partial(self._rest.health, service, seconds) for service in REST_SERVICES),
        ]
        with ThreadPoolExecutor(len(checks), thread_name_prefix="missive-health") as pool:
            futures = [pool.submit(copy_context().run, check) for check in checks]
            return [future.result() for future in futures]

    def _grpc_health(self, service: ServiceName, seconds: float) -> ServiceHealth:
        address = self.grpc_address(service)
        self.channel(service)
        check = self._raw_channels[service].unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        try:
            reply = check(HealthCheckRequest(), timeout=seconds)
        except grpc.RpcError as exc:
            error = grpc_error(exc, service, address)
            title = SERVICE_TITLES[service]
            return ServiceHealth(title, "grpc", address, "UNREACHABLE", str(error))
        name = HEALTH_STATUS_NAMES.get(reply.status, "UNKNOWN")
        title = SERVICE_TITLES[service]
        return ServiceHealth(title, "grpc", address, serving_status(name == "SERVING"), name)

    def close(self) -> None:
        """Close every channel and HTTP client."""
        with self._lock:
            self._closed = True
            for channel in self._raw_channels.values():
                channel.close()
            self._channels.clear()
            self._raw_channels.clear()
            self._stubs.clear()
        self._rest.close()
