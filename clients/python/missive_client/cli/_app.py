"""The ``missive`` commands, each a thin layer over the SDK's :class:`Client`."""

from __future__ import annotations

import sys
from typing import Any, cast

import click

from missive_client import Client, MissiveError, Notification, RateLimited, Transport
from missive_client._config import DEFAULT_PROFILE, PROFILE_VAR
from missive_client.cli._admin import admin
from missive_client.cli._backlog import start_reading
from missive_client.cli._common import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    MissiveGroup,
    State,
    json_option,
    limit_option,
    limit_value,
    read_password,
    save_token,
    state_of,
    throttled_sign_in,
)
from missive_client.cli._render import Output
from missive_client.cli._store import TokenStore, config_dir

__all__ = ["EXIT_AUTH", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_UNAVAILABLE", "cli"]


@click.group(
    name="missive", cls=MissiveGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
)
@click.option(
    "--transport",
    type=click.Choice(["grpc", "rest"]),
    default=None,
    help="Protocol for operations both offer [env MISSIVE_TRANSPORT; default grpc].",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds per call."
)
@click.option(
    "--profile",
    envvar=PROFILE_VAR,
    metavar="NAME",
    default=None,
    help="Profile of the config file: its service addresses and its sign-ins "
    "[env MISSIVE_PROFILE; default: none, the built-in addresses].",
)
@click.option(
    "--user",
    envvar="MISSIVE_USER",
    metavar="EMAIL",
    default=None,
    help="Act as this signed-in user [env MISSIVE_USER; default: the last one to log in].",
)
@click.version_option(package_name="missive-client", prog_name="missive")
@click.pass_context
def cli(
    ctx: click.Context,
    as_json: bool,
    transport: str | None,
    timeout: float | None,
    profile: str | None,
    user: str | None,
) -> None:
    """Missive from the command line: accounts, messages and live notifications.

    Service addresses: MISSIVE_HOST puts every service on one host at its default port;
    MISSIVE_USER_URL, MISSIVE_MESSAGE_URL, MISSIVE_NOTIFICATION_URL, MISSIVE_USER_GRPC,
    MISSIVE_MESSAGE_GRPC, MISSIVE_NOTIFICATION_GRPC and MISSIVE_FRONTEND_GRPC override one
    service each; `make up` prints the exports when its ports differ from the defaults.
    Otherwise they come from the profile (--profile NAME: a [profiles.NAME] table of
    $XDG_CONFIG_HOME/missive/config.toml with host = "..." and/or the addresses as user_url,
    user_grpc, ...), else the local system of `make up`.

    `missive login` stores a token per profile and per user in
    $XDG_CONFIG_HOME/missive/tokens.json (~/.config/missive by default), readable only by you;
    the password is never stored. Commands act as the last user to log in, or --user EMAIL.

    Exit codes: 0 success, 1 error reported by a service, 2 usage error, 3 not signed in,
    wrong credentials or sign-in throttled (locked after repeated failures), 4 a service is
    unreachable (or, for `status`, not serving), 130 interrupted.
    """
    chosen = cast("Transport | None", transport)  # click.Choice checked the value
    name = (profile or "").strip() or None
    store = TokenStore(config_dir(), name or DEFAULT_PROFILE)
    wanted = (user or "").strip() or None
    state = State(as_json, chosen, timeout, store, profile=name, user=wanted)
    ctx.obj = state
    ctx.call_on_close(state.close)


# -- sign-in --------------------------------------------------------------------------------


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.group()
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


# -- messages -------------------------------------------------------------------------------


@cli.command()
@click.argument("to")
@click.argument("text")
@json_option
@click.pass_context
def send(ctx: click.Context, /, to: str, text: str, **_: Any) -> None:
    """Send TEXT to the user TO (TEXT `-` reads it from stdin)."""
    state = state_of(ctx)
    out = state.output(ctx)
    content = sys.stdin.read().rstrip("\n") if text == "-" else text
    with out.spinner("Sending…"):
        message = state.client().messages.send(to, content)
    out.message_sent(message)


@cli.command()
@limit_option(50)
@json_option
@click.pass_context
def conversations(ctx: click.Context, /, limit: int, **_: Any) -> None:
    """List your conversations, most recent first, with unread counts."""
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Loading…"):
        found = state.client().messages.conversations().to_list(limit_value(limit))
    out.conversations(found)


@cli.command()
@click.argument("peer", metavar="WITH")
@limit_option(20)
@click.option("--mark-read", is_flag=True, help="Then mark what WITH sent you read.")
@json_option
@click.pass_context
def messages(ctx: click.Context, /, peer: str, limit: int, mark_read: bool, **_: Any) -> None:
    """Show your latest messages with the user WITH (oldest at the top)."""
    state = state_of(ctx)
    out = state.output(ctx)
    client = state.client()
    with out.spinner("Loading…"):
        found = client.messages.list(peer).to_list(limit_value(limit))
        marked = client.messages.mark_read(peer) if mark_read and found else None
    out.messages(found, state.me())
    if marked is not None and not out.as_json:
        out.note(f"marked the conversation with {marked.peer_email} read")


# -- notifications --------------------------------------------------------------------------


@cli.command()
@click.option("--unread", is_flag=True, help="Only the ones not read yet.")
@limit_option(50)
@click.option("--mark-read", is_flag=True, help="Then mark all your notifications read.")
@json_option
@click.pass_context
def notifications(
    ctx: click.Context, /, unread: bool, limit: int, mark_read: bool, **_: Any
) -> None:
    """List your notifications, newest first."""
    state = state_of(ctx)
    out = state.output(ctx)
    client = state.client()
    with out.spinner("Loading…"):
        pager = client.notifications.list(unread_only=unread)
        found: list[Notification] = []
        unread_count: int | None = None
        wanted = limit_value(limit)
        for page in pager.pages():
            unread_count = page.unread_count
            found.extend(page.items)
            if wanted is not None and len(found) >= wanted:
                found = found[:wanted]
                break
        if mark_read:
            client.notifications.mark_all_read()
    out.notifications(found, unread_count)


@cli.command()
@json_option
@click.pass_context
def subscribe(ctx: click.Context, /, **_: Any) -> None:
    """Receive notifications of new messages (the default)."""
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Subscribing…"):
        status = state.client().notifications.subscribe()
    if out.as_json:
        out.json(status)
    else:
        out.say(f"{status.email} is subscribed to notifications.")


@cli.command()
@json_option
@click.pass_context
def unsubscribe(ctx: click.Context, /, **_: Any) -> None:
    """Stop notifications of new messages (messages still arrive)."""
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Unsubscribing…"):
        status = state.client().notifications.unsubscribe()
    if out.as_json:
        out.json(status)
    else:
        out.say(f"{status.email} is unsubscribed: no notifications until `missive subscribe`.")


@cli.command()
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many notifications.")
@click.option("--no-reconnect", is_flag=True, help="Exit when the stream ends instead of retrying.")
@json_option
@click.pass_context
def watch(ctx: click.Context, /, count: int | None, no_reconnect: bool, **_: Any) -> None:
    """Show your notifications live: first the unread ones, then new ones (Ctrl-C stops)."""
    state = state_of(ctx)
    out = state.output(ctx)
    client = state.client()
    me = state.me()

    def reconnecting(error: MissiveError | None, wait: float) -> None:
        reason = f" ({error.message})" if error is not None else ""
        out.note(f"stream interrupted{reason}; reconnecting in {wait:.1f} s")

    if not out.as_json:
        out.note(f"watching notifications of {me}; Ctrl-C to stop")
    shown = 0
    stream = client.notifications.watch(reconnect=not no_reconnect, on_reconnect=reconnecting)
    with stream:
        for notification in stream:
            out.live_notification(
                notification, None if out.as_json else _content(client, me, notification)
            )
            shown += 1
            if count is not None and shown >= count:
                break


def _content(client: Client, me: str, notification: Notification) -> str | None:
    """The message text a notification is about, when it can still be read."""
    try:
        return client.messages.get(notification.message_id, email=me).content
    except MissiveError:
        return notification.preview or None


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, /, **_: Any) -> None:
    """Check the health of every service (exit code 4 unless all are serving), and show the
    delivery backlog of each outbox (lag, pending, oldest pending, dead letters).

    Every endpoint is checked at once, each for 2 seconds at most: a hung service shows as
    unreachable without holding up the others. The backlog comes from each service's
    /metrics (FrontendService's on FRONTEND_METRICS_PORT, or MISSIVE_FRONTEND_METRICS_URL).
    """
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Checking…"):
        client = state.client(signed_in=False)
        reading = start_reading(client.config)  # the backlog, from each /metrics, meanwhile
        results = client.status()
    out.health(results, [future.result() for future in reading])
    if not all(item.serving for item in results):
        ctx.exit(EXIT_UNAVAILABLE)


cli.add_command(admin)
