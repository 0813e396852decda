"""Schemathesis wiring shared by the REST contract tests: real tokens, known state, Redis reset.

- :class:`LazyApp` builds a service's Connexion app on first use, inside the event loop
  schemathesis runs ASGI applications in, so its Redis and gRPC clients live in that loop.
- :func:`install` registers, on one loaded schema, an auth provider that signs a real user
  token (with the system's user-token key, exactly as UserService's login does) for the user
  a request acts for — the ``email`` query or path parameter, or ``sender_email`` in a body —
  and a hook that swaps, in requests meant to be valid, generated addresses for registered
  users' addresses, so most requests reach the service's business logic rather than stopping
  at 403 or 404.
- :class:`RedisState` takes a snapshot of every database (DUMP) and restores it, so each
  stateful scenario starts from the same data and a failure reproduces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from schemathesis import Case
from schemathesis.checks import CheckFunction
from schemathesis.core.parameters import ParameterLocation
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.checks import negative_data_rejection

from services.common.auth import UserTokenIssuer
from services.common.domain import InvalidArgument
from services.common.emails import normalise_email
from services.common.paging import encode_offset

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyApp:
    """An ASGI app built by ``factory`` on its first call, in the loop that serves it."""

    def __init__(self, factory: Callable[[], Awaitable[AsgiApp]]) -> None:
        self._factory = factory
        self._app: AsgiApp | None = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._app is None:
                    self._app = await self._factory()
        await self._app(scope, receive, send)


def _valid_email(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        normalise_email(value)
    except InvalidArgument:
        return False
    return True


def acting_user(case: Case[Any]) -> str | None:
    """The address a request acts for: what the service compares with the token's subject."""
    body = case.body if isinstance(case.body, Mapping) else {}
    for value in (
        (case.query or {}).get("email"),
        body.get("sender_email"),
        (case.path_parameters or {}).get("email"),
    ):
        if _valid_email(value):
            return normalise_email(str(value))
    return None


def no_account(_email: str) -> tuple[str, int]:
    return "", 0


@dataclass
class Tokens:
    """Signs real user tokens; one default user for requests that act for nobody in particular.

    ``accounts`` gives the account id and token version of a registered email (read from
    UserService's store), so the tokens name the account as UserService's would."""

    issuer: UserTokenIssuer
    default_user: str
    accounts: Callable[[str], tuple[str, int]] = no_account
    cache: dict[tuple[str, str, int], str] = field(default_factory=dict)

    def for_user(self, email: str) -> str:
        key = (email, *self.accounts(email))
        if key not in self.cache:
            self.cache[key] = self.issuer.issue(*key)[0]
        return self.cache[key]

    def for_case(self, case: Case[Any]) -> str:
        return self.for_user(acting_user(case) or self.default_user)


def _with_known_emails(value: Any, emails: st.SearchStrategy[str], draw: st.DrawFn) -> Any:
    """``value`` (a request's query, path parameters or body) with each valid address maybe
    swapped for a registered user's."""
    if not isinstance(value, Mapping):
        return value
    swapped = dict(value)
    for key, item in value.items():
        if "email" in key and _valid_email(item) and draw(st.integers(0, 3)):
            swapped[key] = draw(emails)
    return swapped


def install(schema: Any, tokens: Tokens, known_emails: list[str]) -> None:
    """Register the token provider and the known-address hook on ``schema``."""

    class UserTokens:
        def get(self, case: Case[Any], context: Any) -> str:
            return tokens.for_case(case)

        def set(self, case: Case[Any], data: str, context: Any) -> None:
            case.headers["Authorization"] = f"Bearer {data}"

    emails = st.sampled_from(known_emails)

    def flatmap_case(context: HookContext, case: Case[Any]) -> st.SearchStrategy[Case[Any]]:
        if not (case.meta and case.meta.generation.mode.is_positive):
            return st.just(case)  # a request meant to be invalid stays exactly as generated

        @st.composite
        def known(draw: st.DrawFn) -> Case[Any]:
            case.query = _with_known_emails(case.query, emails, draw)
            case.path_parameters = _with_known_emails(case.path_parameters, emails, draw)
            case.body = _with_known_emails(case.body, emails, draw)
            return case

        return known()

    schema.auth(refresh_interval=None)(UserTokens)  # a token per request: Tokens caches
    schema.hook(flatmap_case)


def with_issued_page_token(case: Case[Any]) -> Case[Any]:
    """``case`` with a page token the service could have issued, if it is meant to be valid.

    Page tokens are opaque: the valid ones are those the service issued, and a forged one is
    rejected with 400 (covered by the unit tests). A generated token in a request meant to be
    valid is replaced with an issued one, derived from it so runs stay reproducible."""
    query = case.query or {}
    token = query.get("page_token")
    if case.meta and case.meta.generation.mode.is_positive and isinstance(token, str):
        case.query = {**query, "page_token": encode_offset(len(token)) if token else ""}
    return case


def excluded_checks(case: Case[Any]) -> list[CheckFunction]:
    """The checks that do not apply to ``case``: none, except in one generator quirk.

    Schemathesis validates a generated path parameter after percent-encoding it, so
    ``bob%40example.com`` counts as an invalid email, and the request is labelled invalid;
    the server decodes it to the valid ``bob@example.com`` and rightly accepts it. For such a
    request (invalid only in its path, and valid once decoded) ``negative_data_rejection`` is
    skipped; every other check still runs."""
    meta = case.meta
    if meta is None or meta.generation.mode.is_positive:
        return []
    others = [info for where, info in meta.components.items() if where != ParameterLocation.PATH]
    if any(not info.mode.is_positive for info in others):
        return []
    values = case.path_parameters or {}
    decoded_valid = all(
        Draft4Validator(parameter.definition["schema"]).is_valid(unquote(str(values[name])))
        for parameter in case.operation.path_parameters
        if (name := parameter.name) in values
    )
    return [negative_data_rejection] if decoded_valid else []


Dump = dict[int, dict[bytes, tuple[bytes, int]]]
"""db -> key -> (DUMP payload, remaining TTL in ms or 0)."""


@dataclass
class RedisState:
    """Snapshot (DUMP) of the service databases, restored (FLUSHDB + RESTORE) before a scenario."""

    url: str
    databases: tuple[int, ...]
    saved: Dump = field(default_factory=dict)

    def _clients(self) -> dict[int, redis.Redis]:
        return {
            db: redis.Redis.from_url(self.url, db=db, socket_timeout=10) for db in self.databases
        }

    def save(self) -> None:
        self.saved = {}
        for db, client in self._clients().items():
            with client:
                self.saved[db] = {}
                for key in client.scan_iter(count=1000):
                    value, ttl = client.dump(key), int(client.pttl(key))
                    if value is not None:
                        self.saved[db][bytes(key)] = (value, max(ttl, 0))

    def restore(self) -> None:
        for db, client in self._clients().items():
            with client:
                pipe = client.pipeline(transaction=True)
                pipe.flushdb()
                for key, (value, ttl) in self.saved.get(db, {}).items():
                    pipe.restore(key, ttl, value)
                pipe.execute()
