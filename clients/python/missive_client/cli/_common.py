"""What every ``missive`` command shares: per-invocation state, error exits, common options."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from missive_client import (
    Client,
    ConfigError,
    DeadlineExceeded,
    MissiveError,
    RateLimited,
    Token,
    Transport,
    Unauthenticated,
    Unavailable,
)
from missive_client.cli._render import Output
from missive_client.cli._store import DEFAULT_PROFILE, StoredToken, TokenStore

__all__ = [
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "MissiveGroup",
    "State",
    "json_option",
    "limit_option",
    "limit_value",
    "read_password",
    "save_token",
    "state_of",
    "throttled_sign_in",
]

EXIT_ERROR = 1
"""Any error reported by a service (invalid input, not found, permission denied, ...)."""
EXIT_USAGE = 2
"""A usage error: a bad option, or a malformed MISSIVE_* variable or profile."""
EXIT_AUTH = 3
"""Not signed in, session expired, wrong credentials, or sign-in throttled (the account or host
is locked after repeated failures): run ``missive login`` (again, after the wait)."""
EXIT_UNAVAILABLE = 4
"""A service could not be reached or is not serving."""
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """Per-invocation settings and the lazily created client."""

    as_json: bool
    transport: Transport | None
    timeout: float | None
    store: TokenStore
    profile: str | None = None
    user: str | None = None
    _client: Client | None = field(default=None, repr=False)
    _stored: StoredToken | None = field(default=None, repr=False)

    def output(self, ctx: click.Context) -> Output:
        """The renderer, honouring a ``--json`` given before or after the command."""
        return Output(self.as_json or bool(ctx.params.get("as_json")))

    def client(self, *, signed_in: bool = True) -> Client:
        """The SDK client, carrying the stored token when ``signed_in``."""
        if self._client is None:
            token = None
            if signed_in:
                self._stored = self.require_token()
                token = self._stored.access_token
            self._client = Client.connect(
                profile=self.profile, transport=self.transport, timeout=self.timeout, token=token
            )
        return self._client

    def require_token(self) -> StoredToken:
        """The selected user's token; Unauthenticated with a hint when absent or expired."""
        where = "" if self.store.profile == DEFAULT_PROFILE else f" (profile {self.store.profile})"
        stored = self.store.load(self.user)
        if stored is None:
            if self.user:
                raise Unauthenticated(
                    f"{self.user} is not signed in{where}: run `missive login {self.user}`"
                )
            others = sorted(self.store.tokens())
            if others:
                raise Unauthenticated(
                    f"no current user{where}: choose one with --user or MISSIVE_USER "
                    f"({', '.join(others)}), or run `missive login`"
                )
            raise Unauthenticated(f"not signed in{where}: run `missive login`")
        if stored.expired:
            raise Unauthenticated(
                f"the session of {stored.email} has expired{where}: "
                f"run `missive login {stored.email}` again"
            )
        return stored

    def me(self) -> str:
        """The signed-in user's email."""
        self.client()
        assert self._stored is not None
        return self._stored.email

    def close(self) -> None:
        """Release the client's connections."""
        if self._client is not None:
            self._client.close()


class MissiveGroup(click.Group):
    """Turns the SDK's errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MissiveError as exc:
            Output(False).error(_describe(exc))
            ctx.exit(_exit_code(exc))
        except KeyboardInterrupt:
            Output(False).note("interrupted")
            ctx.exit(EXIT_INTERRUPTED)


def _describe(exc: MissiveError) -> str:
    return exc.message.strip().splitlines()[0] if exc.message.strip() else type(exc).__name__


def _exit_code(exc: MissiveError) -> int:
    if isinstance(exc, ConfigError):
        return EXIT_USAGE  # a malformed MISSIVE_* variable, profile or option
    if isinstance(exc, Unauthenticated):
        return EXIT_AUTH
    if isinstance(exc, Unavailable | DeadlineExceeded):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def throttled_sign_in(exc: RateLimited) -> str:
    """The one line for a sign-in refused as throttled, with when to try again."""
    line = _describe(exc)
    if exc.retry_after is not None and not any(w in line.lower() for w in ("retry", "try again")):
        line += f" (try again in {math.ceil(exc.retry_after)} s)"
    return line


def json_option(command: F) -> F:
    """``--json`` on a command (the same as ``missive --json COMMAND``)."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
    )(command)


def limit_option(default: int) -> Callable[[F], F]:
    """``--limit N`` on a list command."""
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help="Show at most this many items (0 for all of them).",
    )


def limit_value(value: int) -> int | None:
    return None if value == 0 else value


def read_password(from_stdin: bool, prompt: str, *, confirm: bool = False) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.UsageError("--password-stdin was given but stdin is empty")
        return line
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def save_token(state: State, token: Token) -> None:
    """Store the token; a login with --user / MISSIVE_USER leaves the current user as it is
    (unless there is none), so a terminal that names its user does not switch the others."""
    stored = StoredToken(token.email, token.access_token, token.expires_at)
    state.store.save(stored, make_current=state.user is None)


def state_of(ctx: click.Context) -> State:
    state = ctx.find_object(State)
    assert state is not None, "the missive group creates the state"
    return state
