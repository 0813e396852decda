"""The inbox commands: messages (`send`, `conversations`, `messages`) and notifications."""

from __future__ import annotations

import sys
from typing import Any

import click

from missive_client import Client, MissiveError, Notification
from missive_client.cli._common import (
    json_option,
    limit_option,
    limit_value,
    state_of,
)

# -- messages -------------------------------------------------------------------------------


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
@json_option
@click.pass_context
def subscribe(ctx: click.Context, /, **_: Any) -> None:
    """Receive notifications of new messages (the default)."""
    _change_subscription(ctx, subscribed=True)


@click.command()
@json_option
@click.pass_context
def unsubscribe(ctx: click.Context, /, **_: Any) -> None:
    """Stop notifications of new messages (messages still arrive)."""
    _change_subscription(ctx, subscribed=False)


def _change_subscription(ctx: click.Context, *, subscribed: bool) -> None:
    state = state_of(ctx)
    out = state.output(ctx)
    with out.spinner("Subscribing…" if subscribed else "Unsubscribing…"):
        notifications = state.client().notifications
        status = notifications.subscribe() if subscribed else notifications.unsubscribe()
    if out.as_json:
        out.json(status)
    elif subscribed:
        out.say(f"{status.email} is subscribed to notifications.")
    else:
        out.say(f"{status.email} is unsubscribed: no notifications until `missive subscribe`.")


@click.command()
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


INBOX_COMMANDS = (send, conversations, messages, notifications, subscribe, unsubscribe, watch)
