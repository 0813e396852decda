"""Connexion's middleware stack, with the per-request work done once per operation instead.

The stack is Connexion's default one, in its order, with some of its middlewares replaced by
subclasses that answer the same:

- :class:`SwaggerUIPaths` hands a request straight to the next middleware unless its path is
  one the Swagger UI middleware serves (``/openapi.json``, ``/ui``...), rather than matching
  every API request against the UI's routes first;
- :class:`OperationPipelines` is Connexion's routing middleware handing a request it routes
  to its operation's pipeline: one frame doing, with their own operation objects, what the
  security, request validation, response validation, lifespan and context middlewares and the
  app's router would do for it in turn (each a coroutine frame, each wrapping ``send``), then
  calling the view. A request no operation matches in full (404, 405, a trailing slash) goes
  through Connexion's chain as before;
- :class:`PreparedRequestValidation` builds each operation's parameter validator, URI parser
  and accepted media types when the app starts, rather than on every request, and remembers
  the content types it has seen;
- :class:`PreparedResponseValidation` looks each response's schema, validator and required
  headers up once per (status, media type), rather than on every response.

:class:`PreparedURIParser` is Connexion's OpenAPI 3 URI parser with the parameters' schemas
collected once. :func:`prepare_views` has the app decorate each view (parameters in, response
out) once, on its first request, where Connexion decorates it anew on every request (inspecting
its signature each time); the view's arguments come from the query the parameter validator
parsed, with the query parameters' definitions and defaults collected once.

:func:`middleware_stack` adds :class:`~.guards.RequestGuards` before the exception middleware,
and any middleware of the app (``outermost``) before everything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import _context, _operation, _receive, _scope, context
from connexion.datastructures import MediaTypeDict
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import (
    CONTEXT_NAME,
    AsyncParameterDecorator,
    _get_body_argument,
    _get_file_arguments,
    _get_path_arguments,
    _get_query_defaults,
    _query_args_helper,
    inspect_function_arguments,
    prep_kwargs,
    pythonic,
    sanitized,
    unwrap_decorators,
)
from connexion.exceptions import NonConformingResponseHeaders, UnsupportedMediaTypeProblem
from connexion.http_facts import FORM_CONTENT_TYPES
from connexion.lifecycle import ConnexionRequest
from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.middleware.context import ContextMiddleware, ContextOperation
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.middleware.response_validation import (
    ResponseValidationAPI,
    ResponseValidationMiddleware,
    ResponseValidationOperation,
)
from connexion.middleware.routing import RoutingMiddleware, RoutingOperation
from connexion.middleware.security import SecurityMiddleware, SecurityOperation
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import AbstractOperation, OpenAPIOperation
from connexion.spec import Specification
from connexion.uri_parsing import OpenAPIURIParser
from connexion.utils import deep_merge, is_nullable
from starlette.responses import Response
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .guards import RequestGuards
from .validators import QUERY_PARAMS_KEY

logger = logging.getLogger(__name__)


class SwaggerUIPaths(SwaggerUIMiddleware):  # type: ignore[misc]
    """Connexion's Swagger UI middleware, consulted only for the paths it serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefixes: tuple[str, ...] = ()

    def add_api(self, specification: Specification, **kwargs: Any) -> None:
        super().add_api(specification, **kwargs)
        prefixes = []
        for mount in self.router.routes:
            if isinstance(mount, Mount):
                # Its routes are literal paths and mounts: a path not starting with one of them
                # reaches the next middleware whatever the router does with it.
                prefixes += [mount.path + getattr(route, "path", "") for route in mount.routes]
        self._prefixes = tuple(sorted(set(prefixes)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if not path.startswith(self._prefixes):
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_CACHED = 32
"""Bound of each operation's tables of content types seen (emptied when full)."""


def _content_type_header(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The first Content-Type header's value, as `connexion.utils.extract_content_type` finds
    it (ASGI header names are lower case; no latin-1 letter lowers to an ASCII one)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return value
    return None


class _ContentTypes:
    """An operation's `extract_content_type` and `validate_mime_type` answering from a table
    of the content types it has seen: the same few come back on every request."""

    _split: dict[bytes | None, tuple[str, str]]
    _accepted: set[str]

    def _prepare_content_types(self) -> None:
        self._split = {}
        self._accepted = set()

    def extract_content_type(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, str]:
        value = _content_type_header(headers)
        found = self._split.get(value)
        if found is None:
            found = super().extract_content_type(headers)  # type: ignore[misc]
            if len(self._split) >= _CACHED:
                self._split.clear()
            self._split[value] = found
        return found

    def validate_mime_type(self, mime_type: str) -> None:
        if mime_type in self._accepted:
            return
        self._check_mime_type(mime_type)  # raises for one the operation does not take
        if len(self._accepted) >= _CACHED:
            self._accepted.clear()
        self._accepted.add(mime_type)

    def _check_mime_type(self, mime_type: str) -> None:
        raise NotImplementedError


class PreparedURIParser(OpenAPIURIParser):  # type: ignore[misc]
    """Connexion's OpenAPI 3 URI parser with the parameters' schemas collected once: Connexion
    collects them anew for every parameter of every request it parses."""

    @functools.cached_property
    def param_schemas(self) -> dict[str, Any]:
        return {name: defn.get("schema", {}) for name, defn in self.param_defns.items()}

    @functools.cached_property
    def form_defns(self) -> dict[str, Any]:
        return dict(self._body_schema.get("properties", {}).items())


class _PreparedValidation(_ContentTypes, RequestValidationOperation):  # type: ignore[misc]
    """An operation's request validation with its validators built once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        operation = self._operation
        uri_parser = operation._uri_parser_class(operation.parameters, operation.body_definition())
        self._parameters = self._validator_map["parameter"](
            operation.parameters,
            uri_parser=uri_parser,
            strict_validation=self.strict_validation,
            security_query_params=self.security_query_params,
        )
        self._consumes = (
            MediaTypeDict([(c.lower(), None) for c in operation.consumes])
            if operation.consumes
            else None
        )
        self._bodies: dict[str, Any] = {}
        self._prepare_content_types()

    def _check_mime_type(self, mime_type: str) -> None:
        if self._consumes is not None and mime_type.lower() not in self._consumes:
            raise UnsupportedMediaTypeProblem(
                detail=f"Invalid Content-type ({mime_type}), expected {self._operation.consumes}"
            )

    def _body(self, mime_type: str) -> Any:
        """(schema, validator class, required, nullable) of a body of `mime_type`, or None."""
        try:
            return self._bodies[mime_type]
        except KeyError:
            pass
        operation = self._operation
        schema = operation.body_schema(mime_type)
        found = None
        if schema:
            try:
                validator = self._validator_map["body"][mime_type]
            except KeyError:
                validator = None
            found = (
                schema,
                validator,
                operation.request_body.get("required", False),
                is_nullable(operation.body_definition(mime_type)),
            )
        if len(self._bodies) < 32:
            self._bodies[mime_type] = found
        return found

    async def validated(self, scope: Scope, receive: Receive) -> tuple[Scope, Receive] | None:
        """Validate the request's parameters, media type and body: the scope and receive channel
        to go on with (the body read and checked), or None for a body of a media type this
        operation has no validator for (Connexion's own operation handles that request)."""
        self._parameters.validate(scope)
        mime_type, encoding = self.extract_content_type(scope["headers"])
        self.validate_mime_type(mime_type)
        body = self._body(mime_type)
        if body is not None:
            schema, validator_class, required, nullable = body
            if validator_class is None:
                return None
            operation = self._operation
            validator = validator_class(
                schema=schema,
                required=required,
                nullable=nullable,
                encoding=encoding,
                strict_validation=self.strict_validation,
                uri_parser=operation.uri_parser_class(
                    operation.parameters, operation.body_definition()
                ),
            )
            receive, scope = await validator.wrap_receive(receive, scope=scope)
        return scope, receive

    async def connexion_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Connexion's own validation of a request, then the next middleware."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        validated = await self.validated(scope, receive)
        if validated is None:
            # What Connexion does for a media type it has no validator for.
            await self.connexion_call(scope, receive, send)
            return
        scope, receive = validated
        await self.next_app(scope, receive, send)


class _PreparedValidationAPI(RequestValidationAPI):  # type: ignore[misc]
    def make_operation(self, operation: AbstractOperation) -> RequestValidationOperation:
        return _PreparedValidation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class PreparedRequestValidation(RequestValidationMiddleware):  # type: ignore[misc]
    """Connexion's request validation middleware, each operation's validators built once."""

    api_cls = _PreparedValidationAPI


class _PreparedResponses(_ContentTypes, ResponseValidationOperation):  # type: ignore[misc]
    """An operation's response validation with what each (status, media type) needs looked up
    once: its schema, whether null is allowed, its validator class and required headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        produces = self._operation.produces
        self._produces = MediaTypeDict([(p.lower(), None) for p in produces]) if produces else None
        self._responses: dict[tuple[str, str], Any] = {}
        self._prepare_content_types()

    def _check_mime_type(self, mime_type: str) -> None:
        if self._produces is not None and mime_type.lower() not in self._produces:
            raise NonConformingResponseHeaders(
                detail=f"Invalid Response Content-type ({mime_type}), "
                f"expected {self._operation.produces}",
            )

    def _response(self, status: str, mime_type: str) -> Any:
        """(definition, validator class or None, schema, nullable, whether it requires headers)
        of a response."""
        key = (status, mime_type)
        found = self._responses.get(key)
        if found is None:
            operation = self._operation
            definition = operation.response_definition(status, mime_type)
            try:
                validator = self._validator_map["response"][mime_type]
            except KeyError:
                validator = None
            found = (
                definition,
                validator,
                operation.response_schema(status, mime_type),
                is_nullable(definition),
                any(h.get("required", False) for h in definition.get("headers", {}).values()),
            )
            if len(self._responses) < 64:
                self._responses[key] = found
        return found

    def wrap_send(self, scope: Scope, send: Send) -> Send:
        """`send` validating the response against the operation's contract."""

        async def wrapped_send(message: MutableMapping[str, Any]) -> None:
            nonlocal send
            if message["type"] == "http.response.start":
                headers = message["headers"]
                mime_type, encoding = self.extract_content_type(headers)
                if message["status"] < 400:
                    self.validate_mime_type(mime_type)
                status = str(message["status"])
                definition, validator, schema, nullable, required = self._response(
                    status, mime_type
                )
                if required:
                    self.validate_required_headers(headers, definition)
                if validator is None:
                    logger.info(
                        "Skipping validation. No validator registered for content type: %s.",
                        mime_type,
                    )
                else:
                    send = validator(
                        scope, schema=schema, nullable=nullable, encoding=encoding
                    ).wrap_send(send)
            await send(message)

        return wrapped_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.next_app(scope, receive, self.wrap_send(scope, send))


class _PreparedResponsesAPI(ResponseValidationAPI):  # type: ignore[misc]
    def make_operation(self, operation: AbstractOperation) -> Any:
        if self.validate_responses:
            return _PreparedResponses(
                self.next_app, operation=operation, validator_map=self.validator_map
            )
        return self.next_app


class PreparedResponseValidation(ResponseValidationMiddleware):  # type: ignore[misc]
    """Connexion's response validation middleware, each response's look-ups done once."""

    api_cls = _PreparedResponsesAPI


_IMMUTABLE = (str, int, float, bool, type(None))


class _Arguments(AsyncParameterDecorator):  # type: ignore[misc]
    """Connexion's parameter decorator (`prep_kwargs` makes the view's arguments) without its
    per-request work that gives nothing here: the query is the one the parameter validator
    parsed, and a request that is not a form has no files (Connexion asks Starlette anyway).
    Parameter names are sanitised once each (Connexion runs three regular expressions over
    every argument's name on every request), the query parameters' definitions and defaults
    are collected once per operation (Connexion collects them, and deep-copies the defaults, on
    every request; a copy of scalars is the scalars), and whether the view takes the body is
    known once (Connexion reads the request's content type to find its name)."""

    def __init__(self, *, framework: Any, pythonic_params: bool = False) -> None:
        super().__init__(framework=framework, pythonic_params=pythonic_params)
        # Connexion's choice of sanitiser, remembering its answers.
        sanitize = pythonic if pythonic_params else sanitized
        self.sanitize_fn = functools.lru_cache(maxsize=256)(sanitize)

    def _body_reader(
        self, operation: Any, arguments: list[str], has_kwargs: bool
    ) -> Callable[[Any], Any]:
        """`_maybe_get_body` for a view of `operation`: an OpenAPI 3 operation names its body
        whatever the media type (Connexion asks the request's content type, then ignores it),
        so whether the view takes the body is known once."""
        if not isinstance(operation, OpenAPIOperation):
            return functools.partial(
                self._maybe_get_body, arguments=arguments, has_kwargs=has_kwargs
            )
        if self.sanitize_fn(operation.body_name("")) in arguments or has_kwargs:
            return lambda request: request.get_body()
        return lambda _request: None

    def __call__(self, function: Callable[..., Any]) -> Callable[[Any], Awaitable[Any]]:
        arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
        sanitize = self.sanitize_fn
        # Decorated within the operation's first request (see _PreparedDecorator).
        operation = _operation.get()
        query_definitions = {p["name"]: p for p in operation.parameters if p["in"] == "query"}
        defaults = _get_query_defaults(query_definitions)
        prepared = all(isinstance(value, _IMMUTABLE) for value in defaults.values())
        trace = operation.method.upper() == "TRACE"
        read_body = self._body_reader(operation, arguments, has_kwargs)

        def prepare(request: Any, body: Any, files: dict[str, Any], mimetype: str) -> Any:
            """`prep_kwargs` (`get_arguments`) with the query's definitions known."""
            if not prepared:
                return prep_kwargs(
                    request,
                    request_body=body,
                    files=files,
                    arguments=arguments,
                    has_kwargs=has_kwargs,
                    sanitize=sanitize,
                )
            found = _get_path_arguments(request.path_params, operation=operation, sanitize=sanitize)
            query = deep_merge(dict(defaults), request.query_params)
            found.update(
                _query_args_helper(query_definitions, query, arguments, has_kwargs, sanitize)
            )
            if not trace:
                found.update(
                    _get_body_argument(
                        body,
                        operation=operation,
                        arguments=arguments,
                        has_kwargs=has_kwargs,
                        sanitize=sanitize,
                        content_type=mimetype,
                    )
                )
                body_schema = operation.body_schema(mimetype)
                found.update(_get_file_arguments(files, arguments, body_schema, has_kwargs))
            kwargs = {sanitize(k): v for k, v in found.items()}
            for key, value in context.items():
                if has_kwargs or key in arguments:
                    kwargs[key] = value
            if CONTEXT_NAME in arguments:
                kwargs[CONTEXT_NAME] = context
            return kwargs

        @functools.wraps(function)
        async def wrapper(request: Any) -> Any:
            body = read_body(request)
            while asyncio.iscoroutine(body):
                body = await body
            mimetype = request.mimetype
            files = await request.files() if mimetype in FORM_CONTENT_TYPES else {}
            return await function(**prepare(request, body, files, mimetype))

        return wrapper


class _PreparedDecorator(StarletteDecorator):  # type: ignore[misc]
    """Connexion's view decorator, decorating its view once rather than on every call."""

    @property
    def _parameter_decorator_cls(self) -> type[AsyncParameterDecorator]:
        return _Arguments

    @property
    def _sync_async_decorator(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Connexion's, for a view that is not a coroutine function; a coroutine function as
        it is (Connexion's wrapper asks on every call whether it is one, then awaits it)."""
        connexion_decorator = super()._sync_async_decorator

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            if asyncio.iscoroutinefunction(function):
                return function
            return connexion_decorator(function)  # type: ignore[no-any-return]

        return decorator

    def __call__(self, function: Callable[..., Any]) -> Callable[[], Awaitable[Response]]:
        prepared: list[tuple[Any, Callable[[Any], Awaitable[Response]]]] = []

        @functools.wraps(function)
        async def view() -> Response:
            if not prepared:
                # The URI parser needs the operation, known in a request's context only;
                # an operation's view always serves the same one.
                prepared.append((self.uri_parser, self.decorate(function)))
            uri_parser, decorated = prepared[0]
            scope = _scope.get()
            request = self.framework.get_request(
                uri_parser=uri_parser, scope=scope, receive=_receive.get()
            )
            query = scope.get(QUERY_PARAMS_KEY)
            if query is not None:
                request._query_params = query  # what it would parse again, with the same parser
            return await decorated(request)

        return view


class _PreparedView(AsyncOperation):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._view = _PreparedDecorator(
            pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )(self._fn)

    @property
    def fn(self) -> Callable[[], Awaitable[Response]]:
        return self._view


class _PreparedViews(AsyncApi):  # type: ignore[misc]
    def make_operation(self, operation: AbstractOperation) -> AsyncOperation:
        return _PreparedView.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


class _Pipeline:
    """One operation's request handling, in one frame: what Connexion's routing, security,
    request validation, response validation and context middlewares do for it, through their
    own operation objects, then its view."""

    __slots__ = ("context", "operation_id", "responses", "security", "validation", "view")

    def __init__(
        self,
        operation_id: str,
        security: SecurityOperation,
        validation: _PreparedValidation,
        responses: _PreparedResponses | None,
        context: ContextOperation,
        view: _PreparedView,
    ) -> None:
        self.operation_id = operation_id
        self.security = security
        self.validation = validation
        self.responses = responses
        self.context = context
        self.view = view

    async def __call__(
        self, scope: Scope, path_params: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        # RoutingOperation: the path parameters and the operation in the routed scope (a copy
        # of the request's scope before routing, `OperationPipelines`).
        scope.setdefault("path_params", {}).update(path_params)
        extensions = scope.setdefault("extensions", {})
        extensions.setdefault(ROUTING_CONTEXT, {}).update(
            {"api_base_path": "", "operation_id": self.operation_id}
        )
        # SecurityOperation: the checks of the operation's security requirements.
        if self.security.security:
            await self.security.verification_fn(ConnexionRequest(scope))
        # Request validation: parameters, media type, body.
        validated = await self.validation.validated(scope, receive)
        if validated is None:
            # A body of a media type without a validator: Connexion's own path from here on.
            await self.validation.connexion_call(scope, receive, send)
            return
        scope, receive = validated
        # Response validation wraps `send`; the lifespan middleware passes HTTP on.
        if self.responses is not None:
            send = self.responses.wrap_send(scope, send)
        # ContextOperation: the request's context for the view (`connexion.context`).
        _context.set(scope.get("extensions", {}).get("connexion_context", {}))
        _operation.set(self.context.operation)
        _receive.set(receive)
        _scope.set(scope)
        await self.view(scope, receive, send)


class OperationPipelines(RoutingMiddleware):  # type: ignore[misc]
    """Connexion's routing middleware, handing each request it routes to its operation's
    :class:`_Pipeline` instead of the next middlewares.

    The pipelines are built, on the first request, from the operation objects of the
    middlewares after this one (security, request validation, response validation, context,
    the app's views), so a request is checked exactly as those middlewares check it, by the
    same code, without passing through each of them (twice: in and out). What the pipelines do
    not cover goes through Connexion's chain as before: a path no operation matches in full
    (404, 405, redirects), a root path, another layout of middlewares or APIs.
    """

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self._pipelines: list[tuple[Route, _Pipeline]] | None = None

    def _build(self) -> list[tuple[Route, _Pipeline]]:
        """(route, pipeline) of every operation in routing order; [] to use Connexion's chain."""
        security, validation = self.app, getattr(self.app, "app", None)
        responses = getattr(validation, "app", None)
        lifespan = getattr(responses, "app", None)
        context = getattr(lifespan, "next_app", None)
        views = getattr(context, "app", None)
        layout = (
            isinstance(security, SecurityMiddleware)
            and isinstance(validation, PreparedRequestValidation)
            and isinstance(responses, PreparedResponseValidation)
            and isinstance(lifespan, LifespanMiddleware)
            and isinstance(context, ContextMiddleware)
            and isinstance(views, AsyncASGIApp)
        )
        mounts = self.router.routes
        if not layout or len(mounts) != 1 or not isinstance(mounts[0], Mount) or mounts[0].path:
            logger.info("REST operations routed through every middleware: unexpected layout")
            return []
        middlewares = (security, validation, responses, context, views)
        apis = [middleware.apis.get("", []) for middleware in middlewares]  # type: ignore[union-attr]
        if any(len(found) != 1 for found in apis):
            return []
        security_ops, validation_ops, response_ops, context_ops, view_ops = (
            found[0].operations for found in apis
        )
        pipelines = []
        for route in mounts[0].routes:
            routed = getattr(route, "endpoint", None)
            if not isinstance(route, Route) or not isinstance(routed, RoutingOperation):
                return []
            operation_id = routed.operation_id
            responses_op = response_ops.get(operation_id)
            pipeline = _Pipeline(
                operation_id,
                security_ops.get(operation_id),
                validation_ops.get(operation_id),
                responses_op if isinstance(responses_op, _PreparedResponses) else None,
                context_ops.get(operation_id),
                view_ops.get(operation_id),
            )
            if not (
                isinstance(pipeline.security, SecurityOperation)
                and isinstance(pipeline.validation, _PreparedValidation)
                and isinstance(pipeline.context, ContextOperation)
                and isinstance(pipeline.view, _PreparedView)
                and (responses_op is pipeline.responses or responses_op is lifespan)
            ):
                return []
            pipelines.append((route, pipeline))
        return pipelines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pipelines = self._pipelines
        if pipelines is None:
            pipelines = self._pipelines = self._build()
        if scope["type"] == "http" and pipelines and not scope.get("root_path"):
            # Starlette's router takes the first route matching in full.
            for route, pipeline in pipelines:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    routed = dict(scope)
                    # What Starlette's routers leave in the request's scope, as before.
                    if "router" not in scope:
                        scope["router"] = self.router
                    scope.setdefault("app_root_path", "")
                    scope.setdefault("root_path", "")
                    scope["route"] = route
                    scope.update(child)
                    await pipeline(routed, child["path_params"], receive, send)
                    return
        await super().__call__(scope, receive, send)


def prepare_views(app: AsyncApp) -> None:
    """Have `app` (not started yet) decorate each of its views once (see the module)."""
    app.middleware.app.api_cls = _PreparedViews


def middleware_stack(max_body_bytes: int, outermost: Sequence[Any] = ()) -> list[Any]:
    """The middlewares of a generated app, outermost first (Connexion's ``middlewares=``)."""
    return [
        *outermost,
        ServerErrorMiddleware,
        functools.partial(RequestGuards, max_bytes=max_body_bytes),
        ExceptionMiddleware,
        SwaggerUIPaths,
        OperationPipelines,
        SecurityMiddleware,
        PreparedRequestValidation,
        PreparedResponseValidation,
        LifespanMiddleware,
        ContextMiddleware,
    ]
