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
- :class:`~.prepared.PreparedRequestValidation` and
  :class:`~.prepared.PreparedResponseValidation` are Connexion's validation middlewares with
  their look-ups done once per operation (module :mod:`.prepared`).

:func:`~.views.prepare_views` has the app decorate each view once (module :mod:`.views`).

:func:`middleware_stack` adds :class:`~.guards.RequestGuards` before the exception middleware,
and any middleware of the app (``outermost``) before everything.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from connexion.apps.asynchronous import AsyncASGIApp
from connexion.context import _context, _operation, _receive, _scope
from connexion.lifecycle import ConnexionRequest
from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.middleware.context import ContextMiddleware, ContextOperation
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.routing import RoutingMiddleware, RoutingOperation
from connexion.middleware.security import SecurityMiddleware, SecurityOperation
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.spec import Specification
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .guards import RequestGuards
from .prepared import (
    PreparedOperationResponses,
    PreparedOperationValidation,
    PreparedRequestValidation,
    PreparedResponseValidation,
)
from .views import PreparedView

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


class _Pipeline:
    """One operation's request handling, in one frame: what Connexion's routing, security,
    request validation, response validation and context middlewares do for it, through their
    own operation objects, then its view."""

    __slots__ = ("context", "operation_id", "responses", "security", "validation", "view")

    def __init__(
        self,
        operation_id: str,
        security: SecurityOperation,
        validation: PreparedOperationValidation,
        responses: PreparedOperationResponses | None,
        context: ContextOperation,
        view: PreparedView,
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
                responses_op if isinstance(responses_op, PreparedOperationResponses) else None,
                context_ops.get(operation_id),
                view_ops.get(operation_id),
            )
            if not (
                isinstance(pipeline.security, SecurityOperation)
                and isinstance(pipeline.validation, PreparedOperationValidation)
                and isinstance(pipeline.context, ContextOperation)
                and isinstance(pipeline.view, PreparedView)
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
