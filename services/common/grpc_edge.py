"""The gRPC edge: authentication against the contract's access table, and error translation.

Every call passes one server interceptor that (1) finds the method in RPC_ACCESS (generated
from the `Auth:` lines of the .proto files; unknown methods are denied), (2) authenticates the
caller from metadata (`x-missive-service-token` for services, `authorization: Bearer` for
users) and checks it against the allowlist, (3) runs the servicer with the caller and the
request id in ContextVars, and (4) turns DomainError and Redis outages into a status with a
clear message. The request id is the caller's `x-request-id` metadata when it is a plain token,
else a new one: every log line written while the call is handled carries it. When tracing is
on, OpenTelemetry's gRPC server interceptor (installed by `services.common.tracing`) runs
outside this one, so the call's span (continuing the caller's `traceparent`) is current while
the servicer runs and carries the request id as `missive.request_id`.

Before any of that, a request that does not decode as its message type (invalid UTF-8 in a
string field, truncated bytes) fails with INVALID_ARGUMENT and a neutral message, on every
method including health and reflection, instead of gRPC's UNKNOWN naming the parser's
exception. A call with more than one `authorization` or service-credential entry is refused
(UNAUTHENTICATED), so no layer has to pick one; public methods ignore credentials entirely,
as the REST operations without a security requirement do.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import grpc
from missive.access import RPC_ACCESS, RpcAccess

from services.common.auth import TokenVerifier
from services.common.domain import (
    DomainError,
    PermissionDenied,
    Principal,
    RateLimited,
    Unauthenticated,
)
from services.common.grpc_client import SERVICE_TOKEN_HEADER
from services.common.logging import (
    REQUEST_ID_HEADER,
    accepted_request_id,
    request_id_scope,
    reset_request_id,
    set_request_id,
)
from services.common.redis import unavailable_reason
from services.common.sessions import Sessions
from services.common.tracing import tag_request_id

__all__ = [
    "SERVICE_TOKEN_HEADER",
    "UNDECODABLE_MESSAGE",
    "Context",
    "EdgeInterceptor",
    "caller",
]

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Metadata: TypeAlias = Iterable[tuple[str, Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # not subscriptable at run time

_caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "missive_caller", default=None
)
# Infrastructure services that stay open (health probes, grpcurl-style reflection).
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_CREDENTIAL_KEYS = ("authorization", SERVICE_TOKEN_HEADER)
UNDECODABLE_MESSAGE = "the request is not a valid message for this method"


class _Undecodable:
    """Stands in for a request whose bytes did not decode, so the handler can refuse it."""


_UNDECODABLE = _Undecodable()


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Any:
    if deserialize is None:
        return None
    inner = deserialize

    def safe(data: bytes) -> Any:
        try:
            return inner(data)
        except Exception:  # DecodeError, or anything a parser raises on hostile bytes
            return _UNDECODABLE

    return safe


async def _refuse_undecodable(request: Any, context: Context) -> None:
    if request is _UNDECODABLE:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE)


def caller() -> Principal:
    """The authenticated caller of the current RPC."""
    principal = _caller.get()
    if principal is None:
        raise Unauthenticated("this call requires credentials")
    return principal


@contextmanager
def _call_scope(principal: Principal | None, request_id: str) -> Iterator[None]:
    """The caller and request id of one call, for the code that handles it."""
    token = _caller.set(principal)
    try:
        with request_id_scope(request_id):
            tag_request_id(request_id)
            yield
    finally:
        _caller.reset(token)


def _status(error: DomainError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)


async def _abort_for(exc: BaseException, context: Context, method: str) -> None:
    if isinstance(exc, RateLimited):
        context.set_trailing_metadata((("retry-after", str(exc.retry_after)),))
    if isinstance(exc, DomainError):
        await context.abort(_status(exc), exc.message)
    reason = unavailable_reason(exc)
    if reason is not None:
        logger.warning("redis unavailable during %s: %s", method, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, reason)
    raise exc


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorises and translates errors for every RPC of one server.

    The handler it returns for a method is built once and reused: the per-call work
    (credentials, request id, the account check) runs when gRPC calls it, reading the call's
    metadata from its context. So no handler or closure is built per call, and the metrics
    interceptor outside this one finds its own wrapped handler cached too.
    """

    def __init__(self, verifier: TokenVerifier, sessions: Sessions | None = None) -> None:
        self.verifier = verifier
        self.sessions = sessions
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if method.startswith(_OPEN_PREFIXES):
            wrapped = _decoding_checked(handler)
        else:
            wrapped = self._wrapped(handler, method, RPC_ACCESS.get(method))
        self._handlers[method] = (handler, wrapped)
        return wrapped

    async def _admit(
        self, method: str, access: RpcAccess | None, metadata: Metadata
    ) -> Principal | None:
        """The caller of this call (None on a public method); DomainError if refused. Runs with
        the call's request id set."""
        principal = self._authenticate(method, access, metadata)
        if principal is not None and self.sessions is not None:
            await self.sessions.check(principal)  # expired, revoked or deleted: refused
        return principal

    def _authenticate(
        self, method: str, access: RpcAccess | None, metadata: Metadata
    ) -> Principal | None:
        if access is None:
            raise PermissionDenied(f"{method} is not part of the published contracts")
        credentials = _credentials(metadata)
        if access.public:
            # Open to anyone: credentials sent along are ignored, not checked (as on REST).
            return None
        service_token = credentials.get(SERVICE_TOKEN_HEADER)
        if service_token:
            principal = self.verifier.verify_service(service_token)
            if principal.name not in access.services:
                logger.warning("denied service %s calling %s", principal.name, method)
                raise PermissionDenied(f"service {principal.name} may not call {method}")
            return principal
        authorization = credentials.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if authorization and (scheme.lower() != "bearer" or not token.strip()):
            raise Unauthenticated("the authorization metadata must be `Bearer <access token>`")
        if token.strip():
            principal = self.verifier.verify_user(token.strip())
            if not access.users:
                raise PermissionDenied(f"{method} is internal to Missive's services")
            return principal
        raise Unauthenticated("this call requires an access token")

    def _wrapped(self, handler: Handler, method: str, access: RpcAccess | None) -> Handler:
        if handler.unary_unary is not None:
            return self._unary(handler, method, access)
        if handler.unary_stream is not None:
            return self._unary_stream(handler, method, access)
        return handler  # the contracts have no client-streaming methods

    def _unary(self, handler: Handler, method: str, access: RpcAccess | None) -> Handler:
        admit = self._admit
        inner: Any = handler.unary_unary

        async def unary(request: Any, context: Context) -> Any:
            metadata = context.invocation_metadata() or ()  # built anew by each call to it
            request_id = _request_id_of(metadata)
            rid_token = set_request_id(request_id)
            try:
                try:
                    principal = await admit(method, access, metadata)
                except DomainError as exc:
                    logger.info("rejected %s: %s", method, exc.message)
                    await _refuse_undecodable(request, context)
                    await context.abort(_status(exc), exc.message)
                if request is _UNDECODABLE:
                    await _refuse_undecodable(request, context)
                caller_token = _caller.set(principal)
                try:
                    tag_request_id(request_id)
                    logger.debug("handling %s", method)  # per call: DEBUG only
                    try:
                        return await inner(request, context)
                    except Exception as exc:  # translated once, here
                        await _abort_for(exc, context, method)
                finally:
                    _caller.reset(caller_token)
            finally:
                reset_request_id(rid_token)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _unary_stream(self, handler: Handler, method: str, access: RpcAccess | None) -> Handler:
        admit = self._admit
        inner: Any = handler.unary_stream

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            metadata = context.invocation_metadata() or ()
            request_id = _request_id_of(metadata)
            with request_id_scope(request_id):
                try:
                    principal = await admit(method, access, metadata)
                except DomainError as exc:
                    logger.info("rejected %s: %s", method, exc.message)
                    await _refuse_undecodable(request, context)
                    await context.abort(_status(exc), exc.message)
            await _refuse_undecodable(request, context)
            with _call_scope(principal, request_id):
                logger.debug("handling %s", method)
                try:
                    async for item in inner(request, context):
                        yield item
                except Exception as exc:
                    await _abort_for(exc, context, method)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _request_id_of(metadata: Metadata) -> str:
    """The caller's ``x-request-id`` (the last one sent) if it is a plain token, else a new id."""
    given: str | None = None
    for key, value in metadata:
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            given = value
    return accepted_request_id(given)


def _credentials(metadata: Metadata) -> dict[str, str]:
    """The credential metadata of a call; Unauthenticated when one is sent more than once."""
    found: dict[str, str] = {}
    for key, value in metadata:
        if key in _CREDENTIAL_KEYS and isinstance(value, str):
            if key in found:
                raise Unauthenticated(f"the call carries more than one `{key}` metadata entry")
            found[key] = value
    return found


def _decoding_checked(handler: Handler) -> Handler:
    """`handler` with requests that do not decode refused as INVALID_ARGUMENT."""
    if handler.unary_unary is not None:
        return _checked_unary(handler)
    if handler.unary_stream is not None:
        return _checked_unary_stream(handler)
    if handler.stream_stream is not None:
        return _checked_bidi(handler)
    return handler


def _checked_unary(handler: Handler) -> Handler:
    inner: Any = handler.unary_unary

    async def unary(request: Any, context: Context) -> Any:
        await _refuse_undecodable(request, context)
        return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=_safe_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


def _checked_unary_stream(handler: Handler) -> Handler:
    inner: Any = handler.unary_stream
    stream: Any
    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await _refuse_undecodable(request, context)
            async for item in inner(request, context):
                yield item

    else:  # a coroutine writing with context.write (the stock health Watch)

        async def stream(request: Any, context: Context) -> Any:
            await _refuse_undecodable(request, context)
            return await inner(request, context)

    return grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=_safe_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


def _checked_bidi(handler: Handler) -> Handler:
    inner: Any = handler.stream_stream

    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            await _refuse_undecodable(request, context)
            yield request

    bidi: Any
    if inspect.isasyncgenfunction(inner):

        async def bidi(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for item in inner(checked(requests, context), context):
                yield item

    else:

        async def bidi(requests: AsyncIterator[Any], context: Context) -> Any:
            return await inner(checked(requests, context), context)

    return grpc.stream_stream_rpc_method_handler(
        bidi,
        request_deserializer=_safe_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
