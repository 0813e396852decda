"""The account commands: sign in and out (``login``, ``logout``, ``whoami``) and ``users``."""

from __future__ import annotations

from typing import Any

import click

from missive_client import RateLimited
from missive_client.cli._common import (
    EXIT_AUTH,
    json_option,
    limit_option,
    limit_value,
    read_password,
    save_token,
    state_of,
    throttled_sign_in,
)
from missive_client.cli._render import Output

# -- sign-in --------------------------------------------------------------------------------


@click.command()
@click.argument("email", required=False)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@json_option
@click.pass_context
def login(ctx: click.Context, /, email: str | None, password_stdin: bool, **_: Any) -> None:
    """Sign in as EMAIL and make it the current user (other users' sign-ins are kept).

    With --user or MISSIVE_USER the current user stays as it is (unless there is none): a
    terminal with MISSIVE_USER set signs in its own user without switching the others.
    """
    state = state_of(ctx)
    out = state.output(ctx)
    address = email or state.user or str(click.prompt("Email"))
    password = read_password(password_stdin, "Password")
    client = state.client(signed_in=False)
    try:
        with out.spinner("Signing in…"):
            token = client.login(address, password)
    except RateLimited as exc:
        # Sign-in locked or throttled after too many failures: a credentials problem (exit 3),
        # not a refused request, and the line says when to try again.
        Output(False).error(throttled_sign_in(exc))
        ctx.exit(EXIT_AUTH)
    save_token(state, token)
    if out.as_json:
        out.json({"email": token.email, "expires_at": token.expires_at})
    else:
        out.say(f"Signed in as {token.email} (token valid until {token.expires_at:%H:%M %Z}).")


@click.command()
@click.option("--all", "everyone", is_flag=True, help="Forget every user of the profile.")
@json_option
@click.pass_context
def logout(ctx: click.Context, /, everyone: bool, **_: Any) -> None:
    """Forget the stored token of the current user (or --user), or of everyone with --all."""
    state = state_of(ctx)
    removed = state.store.clear_all() if everyone else _as_list(state.store.clear(state.user))
    out = state.output(ctx)
    if out.as_json:
        out.json({"signed_out": removed})
    elif removed:
        out.say(f"Signed out {', '.join(removed)}.")
    else:
        out.say(f"{state.user} is not signed in." if state.user else "Not signed in.")


def _as_list(email: str | None) -> list[str]:
    return [email] if email else []


@click.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, /, **_: Any) -> None:
    """Show the profile, the user commands act as, and every stored sign-in."""
    state = state_of(ctx)
    out = state.output(ctx)
    store = state.store
    acting = state.user or store.current()
    tokens = store.tokens()
    if out.as_json:
        out.json(
            {
                "profile": store.profile,
                "user": acting,
                "signed_in": [
                    {"email": t.email, "expires_at": t.expires_at, "expired": t.expired}
                    for t in tokens.values()
                ],
            }
        )
        return
    out.say(f"profile {store.profile}: acting as {acting or 'nobody (run `missive login`)'}")
    for token in sorted(tokens.values(), key=lambda t: t.email):
        mark = "*" if token.email == acting else " "
        until = f"valid until {token.expires_at:%Y-%m-%d %H:%M %Z}"
        out.say(f" {mark} {token.email}  ({'expired' if token.expired else until})")


# -- users ----------------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Register, read, update, delete and list accounts."""


@users.command("register")
@click.option("--name", help="Display name (prompted when omitted).")
@click.option("--email", help="Email address (prompted when omitted).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@json_option
@click.pass_context
def users_register(
    ctx: click.Context,
    /,
    name: str | None,
    email: str | None,
    password_stdin: bool,
    **_: Any,
) -> None:
    """Create an account (then run `missive login`)."""
    state = state_of(ctx)
    out = state.output(ctx)
    display = name or str(click.prompt("Name"))
    address = email or str(click.prompt("Email"))
    password = read_password(password_stdin, "Password", confirm=True)
    with out.spinner("Registering…"):
        user = state.client(signed_in=False).users.register(display, address, password)
    if out.as_json:
        out.json(user)
    else:
        out.say(f"Registered {user.email}. Sign in with `missive login {user.email}`.")


@users.command("get")
@json_option
@click.pass_context
def users_get(ctx: click.Context, /, **_: Any) -> None:
    """Show your own account."""
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Loading…"):
        user = state.client().users.get()
    out.user(user)


@users.command("list")
@limit_option(50)
@json_option
@click.pass_context
def users_list(ctx: click.Context, /, limit: int, **_: Any) -> None:
    """List registered users, by email (operators only)."""
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Loading…"):
        found = state.client().users.list().to_list(limit_value(limit))
    out.users(found)


@users.command("update")
@click.option("--name", help="New display name.")
@click.option("--password", "new_password", is_flag=True, help="Change the password (prompted).")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@json_option
@click.pass_context
def users_update(
    ctx: click.Context,
    /,
    name: str | None,
    new_password: bool,
    password_stdin: bool,
    **_: Any,
) -> None:
    """Change your display name and/or password."""
    state = state_of(ctx)
    if name is None and not new_password and not password_stdin:
        raise click.UsageError("give --name, --password or --password-stdin")
    out = state.output(ctx)
    password = None
    if new_password or password_stdin:
        password = read_password(password_stdin, "New password", confirm=True)
    with out.spinner("Updating…"):
        user = state.client().users.update(name=name, password=password)
    out.user(user)


@users.command("delete")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def users_delete(ctx: click.Context, /, yes: bool, **_: Any) -> None:
    """Delete your account and sign out."""
    state = state_of(ctx)
    out = state.output(ctx)
    me = state.me()
    if not yes:
        click.confirm(f"Delete the account {me}? This cannot be undone", abort=True)
    with out.spinner("Deleting…"):
        state.client().users.delete()
    state.store.clear(me)
    if out.as_json:
        out.json({"deleted": me})
    else:
        out.say(f"Deleted {me}.")


ACCOUNT_COMMANDS = (login, logout, whoami, users)
