"""RED metrics of gRPC: a grpc.aio server interceptor and a client interceptor.

Server: ``grpc.aio.server(interceptors=[ServerMetricsInterceptor()])``.
Channels: ``grpc.aio.insecure_channel(target, interceptors=client_interceptors())``.

Per call they cost two counter increments and one histogram observation on children looked up
once per method and status code (see README, Operations → Metrics, for the measured cost).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any, Final, TypeAlias

import grpc
import grpc.aio
from prometheus_client import Counter, Histogram

from services.common.metrics import families as f

__all__ = [
    "ServerMetricsInterceptor",
    "StreamClientMetricsInterceptor",
    "UnaryClientMetricsInterceptor",
    "client_interceptors",
    "split_method",
]

UNARY: Final = "unary"
SERVER_STREAM: Final = "server_stream"
CLIENT_STREAM: Final = "client_stream"
BIDI_STREAM: Final = "bidi_stream"

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_CODE_NAMES: Final = {code.value[0]: code.name for code in grpc.StatusCode}


def split_method(full_method: str | bytes) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``); anything else → ("unknown", it)."""
    name = full_method.decode() if isinstance(full_method, bytes) else full_method
    service, sep, method = name.lstrip("/").rpartition("/")
    return (service, method) if sep and service else ("unknown", "unknown")


def _code_name(code: object) -> str:
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _CODE_NAMES.get(code, "UNKNOWN")
    return "UNKNOWN"


class _MethodMetrics:
    """The label children of one method, resolved once (``labels()`` costs about a microsecond)."""

    __slots__ = ("_handled", "_handled_children", "_labels", "observe", "sent", "started")

    def __init__(
        self,
        started: Counter,
        handled: Counter,
        handling: Histogram,
        sent: Counter | None,
        labels: tuple[str, str, str],
    ) -> None:
        self._labels = labels
        self._handled = handled
        self._handled_children: dict[str, Counter] = {}
        self.started: Callable[[], None] = started.labels(*labels).inc
        self.observe: Callable[[float], None] = handling.labels(*labels).observe
        self.sent: Callable[[], None] | None = sent.labels(*labels).inc if sent else None

    def handled(self, code: str) -> None:
        child = self._handled_children.get(code)
        if child is None:
            child = self._handled.labels(*self._labels, code)
            self._handled_children[code] = child
        child.inc()


def _rpc_type(handler: _Handler) -> str:
    if handler.request_streaming:
        return BIDI_STREAM if handler.response_streaming else CLIENT_STREAM
    return SERVER_STREAM if handler.response_streaming else UNARY


def _server_code(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, grpc.aio.AbortError):  # context.abort(): the code is set on the context
        return _code_name(context.code())
    return "UNKNOWN"  # what grpc answers for an exception out of a handler


def _wrap_coroutine(
    behavior: Callable[..., Awaitable[Any]], m: _MethodMetrics
) -> Callable[..., Awaitable[Any]]:
    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        m.started()
        start = perf_counter()
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            m.handled(_server_code(exc, context))
            raise
        else:
            m.handled(_code_name(context.code()))
            return response
        finally:
            m.observe(perf_counter() - start)

    return observed


def _wrap_generator(
    behavior: Callable[..., AsyncIterator[Any]], m: _MethodMetrics
) -> Callable[..., AsyncIterator[Any]]:
    sent = m.sent

    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        m.started()
        start = perf_counter()
        try:
            async for item in behavior(request, context):
                if sent is not None:
                    sent()
                yield item
        except BaseException as exc:
            m.handled(_server_code(exc, context))
            raise
        else:
            m.handled(_code_name(context.code()))
        finally:
            m.observe(perf_counter() - start)

    return observed


_FACTORIES: Final = {
    UNARY: grpc.unary_unary_rpc_method_handler,
    SERVER_STREAM: grpc.unary_stream_rpc_method_handler,
    CLIENT_STREAM: grpc.stream_unary_rpc_method_handler,
    BIDI_STREAM: grpc.stream_stream_rpc_method_handler,
}


def _behavior(handler: _Handler) -> Callable[..., Any] | None:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC of the server it is added to.

    Put it after the drain gate and before the authenticating edge interceptor: it then sees
    every call the service accepts, including those the edge refuses (UNAUTHENTICATED, ...).
    A method's label children are resolved once; its wrapped handler is reused while the server
    returns the same handler (an inner interceptor that builds a handler per call costs one
    closure per call). Handlers that are neither coroutines nor async generators pass through
    unobserved (the services have none).
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}
        self._methods: dict[tuple[str, str], _MethodMetrics] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED, no label is created
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _method_metrics(self, method: str, handler: _Handler) -> _MethodMetrics:
        rpc_type = _rpc_type(handler)
        m = self._methods.get((method, rpc_type))
        if m is None:
            service, name = split_method(method)
            m = _MethodMetrics(
                f.GRPC_SERVER_STARTED,
                f.GRPC_SERVER_HANDLED,
                f.GRPC_SERVER_HANDLING,
                f.GRPC_SERVER_MSG_SENT if handler.response_streaming else None,
                (rpc_type, service, name),
            )
            self._methods[(method, rpc_type)] = m
        return m

    def _wrap(self, method: str, handler: _Handler) -> _Handler:
        behavior = _behavior(handler)
        if inspect.isasyncgenfunction(behavior):
            observed: Callable[..., Any] = _wrap_generator(
                behavior, self._method_metrics(method, handler)
            )
        elif inspect.iscoroutinefunction(behavior):
            observed = _wrap_coroutine(behavior, self._method_metrics(method, handler))
        else:
            return handler
        return _FACTORIES[_rpc_type(handler)](
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _ClientMetrics:
    def __init__(self) -> None:
        self._methods: dict[tuple[str | bytes, str], _MethodMetrics] = {}

    def _metrics(self, method: str | bytes, rpc_type: str) -> _MethodMetrics:
        m = self._methods.get((method, rpc_type))
        if m is None:
            service, name = split_method(method)
            m = _MethodMetrics(
                f.GRPC_CLIENT_STARTED,
                f.GRPC_CLIENT_HANDLED,
                f.GRPC_CLIENT_HANDLING,
                None,
                (rpc_type, service, name),
            )
            self._methods[(method, rpc_type)] = m
        return m


class UnaryClientMetricsInterceptor(_ClientMetrics, grpc.aio.UnaryUnaryClientInterceptor):
    """Counts and times the unary RPCs of a channel; a call is observed when its status arrives."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        m = self._metrics(client_call_details.method, UNARY)
        m.started()
        start = perf_counter()
        try:
            call = await continuation(client_call_details, request)
            code = await call.code()
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            m.handled("CANCELLED" if cancelled else "UNKNOWN")
            raise
        finally:
            m.observe(perf_counter() - start)
        m.handled(_code_name(code))
        return call


class StreamClientMetricsInterceptor(_ClientMetrics, grpc.aio.UnaryStreamClientInterceptor):
    """Counts and times the server-streaming RPCs of a channel, observed when a stream ends.

    A task awaits the stream's status, so observing a stream never delays its messages.
    """

    def __init__(self) -> None:
        super().__init__()
        self._streams: set[asyncio.Task[None]] = set()

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        m = self._metrics(client_call_details.method, SERVER_STREAM)
        m.started()
        start = perf_counter()
        call = await continuation(client_call_details, request)
        task = asyncio.get_running_loop().create_task(self._finish(call, m, start))
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)
        return call

    @staticmethod
    async def _finish(call: Any, m: _MethodMetrics, start: float) -> None:
        try:
            code = _code_name(await call.code())
        except asyncio.CancelledError:
            m.handled("CANCELLED")
            raise
        finally:
            m.observe(perf_counter() - start)
        m.handled(code)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors to give a channel (grpc.aio files each object under one call type only)."""
    return [UnaryClientMetricsInterceptor(), StreamClientMetricsInterceptor()]
