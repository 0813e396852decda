"""CLI output: rich tables and colour on terminals, plain text in pipes, JSON with ``--json``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from missive_client import Conversation, Message, Notification, ServiceHealth, User
from missive_client._config import HOST_VAR, PROFILE_VAR
from missive_client.cli._backlog import ServiceBacklog, backlog_rows, backlog_table

__all__ = ["Output", "jsonable"]

_PIPE_WIDTH = 200
"""Width of tables written to a pipe or file, so rows are not wrapped for grep and friends."""


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses as dicts and datetimes as ISO 8601 strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return value


def _when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _preview(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Output:
    """Everything a command prints goes through here."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        if not self.out.is_terminal:
            self.out.width = max(self.out.width, _PIPE_WIDTH)

    # -- generic ------------------------------------------------------------------------

    def json(self, value: Any, *, lines: bool = False) -> None:
        """Print ``value`` as JSON (one compact line with ``lines``)."""
        document = jsonable(value)
        text = json.dumps(document, ensure_ascii=False, indent=None if lines else 2)
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    def say(self, message: str, style: str = "") -> None:
        """A human line on stdout (nothing in JSON mode)."""
        if not self.as_json:
            self.out.print(Text(message, style=style), soft_wrap=True)

    def note(self, message: str) -> None:
        """A dim remark on stderr (progress, hints), never mixed into stdout."""
        self.err.print(Text(message, style="dim"), soft_wrap=True)

    def error(self, message: str) -> None:
        """The one-line error of a failed command, on stderr."""
        self.err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)

    @contextlib.contextmanager
    def spinner(self, message: str) -> Iterator[None]:
        """A spinner on stderr while waiting, only on a terminal and not in JSON mode."""
        if self.as_json or not self.err.is_terminal:
            yield
            return
        with self.err.status(message, spinner="dots"):
            yield

    def _table(self, *columns: str) -> Table:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        return table

    # -- resources ----------------------------------------------------------------------

    def user(self, user: User) -> None:
        """One user record."""
        if self.as_json:
            self.json(user)
            return
        table = self._table("field", "value")
        table.add_row("name", Text(user.name))
        table.add_row("email", Text(user.email))
        table.add_row("registered", _when(user.created_at))
        table.add_row("updated", _when(user.updated_at))
        self.out.print(table)

    def users(self, users: Sequence[User]) -> None:
        """A list of users."""
        if self.as_json:
            self.json(list(users))
            return
        table = self._table("email", "name", "registered")
        for user in users:
            table.add_row(Text(user.email, style="cyan"), Text(user.name), _when(user.created_at))
        self.out.print(table)
        self.note(f"{len(users)} user(s)")

    def conversations(self, conversations: Sequence[Conversation]) -> None:
        """A list of conversations."""
        if self.as_json:
            self.json(list(conversations))
            return
        if not conversations:
            self.note("no conversations yet")
            return
        table = self._table("with", "unread", "messages", "last message", "when")
        for item in conversations:
            unread = Text(str(item.unread_count), style="bold yellow" if item.unread_count else "")
            table.add_row(
                Text(item.peer_email, style="cyan"),
                unread,
                str(item.message_count),
                Text(_preview(item.last_message.content)),
                _when(item.updated_at),
            )
        self.out.print(table)

    def messages(self, messages: Sequence[Message], me: str) -> None:
        """Messages, oldest at the top as in a chat (JSON keeps the API's newest-first order)."""
        if self.as_json:
            self.json(list(messages))
            return
        if not messages:
            self.note("no messages")
            return
        table = self._table("id", "when", "from", "message", "read")
        for message in reversed(messages):
            mine = message.sender_email == me
            table.add_row(
                str(message.id),
                _when(message.timestamp),
                Text("you" if mine else message.sender_email, style="green" if mine else "cyan"),
                Text(message.content),
                "yes" if message.read else Text("no", style="bold yellow"),
            )
        self.out.print(table)

    def message_sent(self, message: Message) -> None:
        """Confirmation of ``missive send``."""
        if self.as_json:
            self.json(message)
            return
        self.out.print(
            Text.assemble(
                ("sent ", "green"),
                f"message {message.id} to ",
                (message.receiver_email, "cyan"),
                f" at {_when(message.timestamp)}",
            )
        )

    def notifications(self, notifications: Sequence[Notification], unread: int | None) -> None:
        """A list of notifications and the unread total."""
        if self.as_json:
            self.json({"notifications": list(notifications), "unread_count": unread or 0})
            return
        if notifications:
            table = self._table("id", "when", "from", "message", "read")
            for item in notifications:
                sender = (
                    f"{item.sender_name} <{item.sender_email}>"
                    if item.sender_name
                    else item.sender_email
                )
                table.add_row(
                    str(item.id),
                    _when(item.timestamp),
                    Text(sender, style="cyan"),
                    Text(_preview(item.preview, 60))
                    if item.preview
                    else Text(f"message {item.message_id}", style="dim"),
                    "yes" if item.read else Text("no", style="bold yellow"),
                )
            self.out.print(table)
        self.note(f"{unread or 0} unread")

    def live_notification(self, notification: Notification, content: str | None) -> None:
        """One notification as ``missive watch`` shows it when it arrives."""
        if self.as_json:
            self.json(notification, lines=True)
            return
        line = Text.assemble(
            (f"[{_when(notification.timestamp)}] ", "dim"),
            ("new message from ", "bold"),
            (notification.sender_email, "bold cyan"),
        )
        if content is not None:
            line.append(": ")
            line.append(_preview(content, 120))
        self.out.print(line, soft_wrap=True)

    def health(
        self, results: Sequence[ServiceHealth], backlog: Sequence[ServiceBacklog] = ()
    ) -> None:
        """The status table of ``missive status`` (and the delivery backlog under it)."""
        if self.as_json:
            rows = [{**jsonable(item), "serving": item.serving} for item in results]
            self.json(backlog_rows(rows, backlog) if backlog else rows)
            return
        table = self._table("service", "transport", "address", "status", "detail")
        marker = f"; set {HOST_VAR} "
        hinted = False
        for item in results:
            style = "bold green" if item.serving else "bold red"
            detail = "" if item.detail == item.status else item.detail
            if marker in detail:  # the hint of "cannot reach", said once below the table
                detail = detail[: detail.index(marker)]
                hinted = True
            table.add_row(
                item.service, item.transport, item.address, Text(item.status, style=style), detail
            )
        self.out.print(table)
        if backlog:
            self.out.print()
            self.out.print(backlog_table(backlog))
        if hinted:
            self.note(
                f"To reach services elsewhere: set {HOST_VAR} (every service), a service's own "
                f"MISSIVE_* variable, or a profile ({PROFILE_VAR}, --profile); "
                "`make up` prints the exports."
            )
