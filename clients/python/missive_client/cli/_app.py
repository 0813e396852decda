"""The ``missive`` commands, each a thin layer over the SDK's :class:`Client`."""

from __future__ import annotations

from typing import Any, cast

import click

from missive_client import Transport
from missive_client._config import DEFAULT_PROFILE, PROFILE_VAR
from missive_client.cli._account import ACCOUNT_COMMANDS
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
    state_of,
)
from missive_client.cli._inbox import INBOX_COMMANDS
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


for _command in (*ACCOUNT_COMMANDS, *INBOX_COMMANDS, admin):
    cli.add_command(_command)
