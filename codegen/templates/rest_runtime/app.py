"""The Connexion app of a generated REST package: routing, security, validation, guards."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from connexion import AsyncApp
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.security import BearerSecurityHandler
from connexion.utils import inspect_function_arguments

from .errors import add_error_handlers
from .guards import (
    DEFAULT_MAX_BODY_BYTES,
    BodySizeLimit,
    PathControlCharacters,
    SingleAuthorization,
)
from .json_codec import FastJSON
from .validators import validator_map

TokenInfo = dict[str, Any]
"""Claims of a verified bearer token, as returned by the app's token verifier."""

TokenVerifier = Callable[[str], Awaitable[TokenInfo | None]]
"""Checks a bearer token; returns its claims, or None when the token is not valid."""

Lifespan = Callable[[Any], Any]


@functools.lru_cache(maxsize=64)
def _accepts_kwarg(func: Callable[..., Any], keyword: str) -> bool:
    """Whether `func` takes `keyword`: Connexion asks on every request, inspecting anew."""
    arguments, has_kwargs = inspect_function_arguments(func)
    return bool(has_kwargs or keyword in arguments)


def _bearer_handler(verify: TokenVerifier) -> type[BearerSecurityHandler]:
    class _Handler(BearerSecurityHandler):  # type: ignore[misc]
        _accepts_kwarg = staticmethod(_accepts_kwarg)

        def _resolve_func(self, security_scheme: Any) -> TokenVerifier:
            return verify

    return _Handler


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
    app = AsyncApp(import_name, lifespan=lifespan, jsonifier=Jsonifier(FastJSON))
    app.add_api(
        spec,
        resolver=Resolver(function_resolver=lambda operation_id: operations[operation_id]),
        strict_validation=True,
        validate_responses=validate_responses,
        pythonic_params=False,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=True),
        security_map={"bearer": _bearer_handler(verify_token)},
        validator_map=validator_map(),
    )
    add_error_handlers(app, spec)
    # Outermost, so an oversized body is refused before anything reads it.
    app.add_middleware(
        BodySizeLimit,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        max_bytes=max_body_bytes,
    )
    app.add_middleware(PathControlCharacters, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(SingleAuthorization, position=MiddlewarePosition.BEFORE_EXCEPTION)
    for middleware in middlewares:
        app.add_middleware(middleware)
    return app
