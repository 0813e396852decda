"""The Connexion app of a generated REST package: routing, security, validation, guards."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from connexion import AsyncApp
from connexion.exceptions import OAuthProblem, OAuthResponseProblem
from connexion.jsonifier import Jsonifier
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.security import NO_VALUE, BearerSecurityHandler

from .errors import add_error_handlers
from .guards import DEFAULT_MAX_BODY_BYTES
from .json_codec import FastJSON
from .prepared import PreparedURIParser
from .stack import middleware_stack
from .validators import validator_map
from .views import prepare_views

TokenInfo = dict[str, Any]
"""Claims of a verified bearer token, as returned by the app's token verifier."""

TokenVerifier = Callable[[str], Awaitable[TokenInfo | None]]
"""Checks a bearer token; returns its claims, or None when the token is not valid."""

Lifespan = Callable[[Any], Any]


def _bearer_handler(verify: TokenVerifier) -> type[BearerSecurityHandler]:
    class _Handler(BearerSecurityHandler):  # type: ignore[misc]
        def _resolve_func(self, security_scheme: Any) -> TokenVerifier:
            return verify

        def _get_verify_func(self, token_info_func: Any) -> Any:
            # Connexion's bearer check, answering alike, without its per-request look-ups of
            # what the verifier accepts and without building the request's headers.
            async def check(request: Any) -> Any:
                authorization = _authorization(request.scope)
                if not authorization:
                    return NO_VALUE
                try:
                    auth_type, token = authorization.split(maxsplit=1)
                except ValueError:
                    raise OAuthProblem(detail="Invalid authorization header") from None
                if auth_type.lower() != "bearer":
                    return NO_VALUE
                token_info = await verify(token)
                if token_info is None:
                    raise OAuthResponseProblem(detail="Provided token is not valid")
                return token_info

            return check

    return _Handler


def _authorization(scope: Mapping[str, Any]) -> str | None:
    """The request's (first) Authorization header, as Starlette would decode it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def build_app(
    *,
    import_name: str,
    spec: Path,
    operations: Mapping[str, Callable[..., Awaitable[Any]]],
    verify_token: TokenVerifier,
    lifespan: Lifespan | None = None,
    validate_responses: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    middlewares: Sequence[Any] = (),
) -> AsyncApp:
    """Build a Connexion AsyncApp routing each operationId to `operations[operationId]`.

    Request and response validation are on, Swagger UI is served at /ui/, the
    OpenAPI document at /openapi.json, and every error is application/problem+json.
    """
    app = AsyncApp(
        import_name,
        lifespan=lifespan,
        jsonifier=Jsonifier(FastJSON),
        # Connexion's stack with the guards before its exception middleware (so an oversized
        # body is refused before anything reads it); see `stack`.
        middlewares=middleware_stack(max_body_bytes),
    )
    prepare_views(app)
    app.add_api(
        spec,
        resolver=Resolver(function_resolver=lambda operation_id: operations[operation_id]),
        strict_validation=True,
        validate_responses=validate_responses,
        pythonic_params=False,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=True),
        security_map={"bearer": _bearer_handler(verify_token)},
        validator_map=validator_map(),
        uri_parser_class=PreparedURIParser,
    )
    add_error_handlers(app, spec)
    for middleware in middlewares:
        app.add_middleware(middleware)
    return app


def add_outermost(app: AsyncApp, middleware: Callable[..., Any], **options: Any) -> None:
    """Put `middleware` (an ASGI middleware class, built with `options`) outside every other
    middleware of `app`, Connexion's server-error middleware included."""
    if app.middleware.middleware_stack is not None:
        raise RuntimeError("Cannot add middleware after an application has started")
    app.middleware.middlewares.insert(0, functools.partial(middleware, **options))
