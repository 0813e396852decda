"""The app's views decorated once (part of :mod:`.stack`, which explains the whole stack).

:func:`prepare_views` has the app decorate each view (parameters in, response out) once, on its
first request, where Connexion decorates it anew on every request (inspecting its signature
each time); the view's arguments come from the query the parameter validator parsed, with the
query parameters' definitions and defaults collected once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.context import _operation, _receive, _scope, context
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
from connexion.http_facts import FORM_CONTENT_TYPES
from connexion.operations import AbstractOperation, OpenAPIOperation
from connexion.utils import deep_merge
from starlette.responses import Response

from .validators import QUERY_PARAMS_KEY

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


class PreparedView(AsyncOperation):  # type: ignore[misc]
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
        return PreparedView.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


def prepare_views(app: AsyncApp) -> None:
    """Have `app` (not started yet) decorate each of its views once (see the module)."""
    app.middleware.app.api_cls = _PreparedViews
