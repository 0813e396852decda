"""Connexion's request and response validation middlewares with the per-request work done once
per operation instead (part of :mod:`.stack`, which explains the whole stack):

- :class:`PreparedRequestValidation` builds each operation's parameter validator, URI parser
  and accepted media types when the app starts, rather than on every request, and remembers
  the content types it has seen;
- :class:`PreparedResponseValidation` looks each response's schema, validator and required
  headers up once per (status, media type), rather than on every response;
- :class:`PreparedURIParser` is Connexion's OpenAPI 3 URI parser with the parameters' schemas
  collected once.

:class:`PreparedOperationValidation` and :class:`PreparedOperationResponses` are the
operations of those middlewares, which :class:`.stack.OperationPipelines` also calls directly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import MutableMapping, Sequence
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import NonConformingResponseHeaders, UnsupportedMediaTypeProblem
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
from connexion.operations import AbstractOperation
from connexion.uri_parsing import OpenAPIURIParser
from connexion.utils import is_nullable
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

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


class PreparedOperationValidation(_ContentTypes, RequestValidationOperation):  # type: ignore[misc]
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
        return PreparedOperationValidation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class PreparedRequestValidation(RequestValidationMiddleware):  # type: ignore[misc]
    """Connexion's request validation middleware, each operation's validators built once."""

    api_cls = _PreparedValidationAPI


class PreparedOperationResponses(_ContentTypes, ResponseValidationOperation):  # type: ignore[misc]
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
            return PreparedOperationResponses(
                self.next_app, operation=operation, validator_map=self.validator_map
            )
        return self.next_app


class PreparedResponseValidation(ResponseValidationMiddleware):  # type: ignore[misc]
    """Connexion's response validation middleware, each response's look-ups done once."""

    api_cls = _PreparedResponsesAPI
