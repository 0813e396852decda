"""The launcher's terminal: prefixed service lines, colours, and one redrawable status line."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from typing import TextIO

__all__ = ["PREFIX_WIDTH", "Console", "use_color"]

PREFIX_WIDTH = len("notification")  # the longest service name

_RESET = "\033[0m"
_CLEAR_LINE = "\r\033[K"
_COLORS = {
    "user": "\033[36m",  # cyan
    "message": "\033[32m",  # green
    "notification": "\033[33m",  # yellow
    "frontend": "\033[35m",  # magenta
}
_DEFAULT_COLOR = "\033[34m"  # blue
_ERROR_COLOR = "\033[1;31m"  # bold red
_LAUNCHER = "missive"


def use_color(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return _isatty(stream) and not environ.get("NO_COLOR", "")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    """Writes whole lines to ``out``/``err``; on a terminal keeps a status line below them."""

    def __init__(
        self, out: TextIO, err: TextIO, *, color: bool = False, interactive: bool = False
    ) -> None:
        self._out = out
        self._err = err
        self._color = color
        self._interactive = interactive
        self._status: str | None = None
        self._unicode = (getattr(out, "encoding", None) or "").lower().replace("-", "") == "utf8"

    @classmethod
    def for_process(cls, environ: Mapping[str, str]) -> Console:
        """The console of this process: sys.stdout/sys.stderr as they are."""
        return cls(
            sys.stdout,
            sys.stderr,
            color=use_color(sys.stdout, environ),
            interactive=_isatty(sys.stdout),
        )

    @property
    def interactive(self) -> bool:
        """Whether ``out`` is a terminal (status line, spinner)."""
        return self._interactive

    @property
    def unicode(self) -> bool:
        """Whether ``out`` can take non-ASCII characters."""
        return self._unicode

    def prefix(self, name: str) -> str:
        """``user         | `` (coloured on a colour terminal)."""
        label = f"{name:<{PREFIX_WIDTH}} |"
        if self._color:
            service = name.split(".", 1)[0]  # user.2 is a replica of user
            label = f"{_COLORS.get(service, _DEFAULT_COLOR)}{label}{_RESET}"
        return f"{label} "

    def service_line(self, name: str, text: str) -> None:
        """One line of a service's output."""
        self._write(self._out, f"{self.prefix(name)}{text}\n")

    def info(self, text: str) -> None:
        """``missive: text`` on stdout."""
        self._write(self._out, f"{_LAUNCHER}: {text}\n")

    def error(self, text: str) -> None:
        """``missive: text`` on stderr (red on a colour terminal)."""
        line = f"{_LAUNCHER}: {text}"
        if self._color:
            line = f"{_ERROR_COLOR}{line}{_RESET}"
        self._write(self._err, f"{line}\n")

    def block(self, text: str) -> None:
        """Several lines at once, unprefixed (the endpoint table)."""
        self._write(self._out, text if text.endswith("\n") else f"{text}\n")

    def status(self, text: str | None) -> None:
        """Show (or with None clear) the status line; a no-op when not on a terminal."""
        if not self._interactive:
            return
        self._clear_status()
        self._status = text
        self._draw_status()
        self._flush(self._out)

    def _write(self, stream: TextIO, text: str) -> None:
        self._clear_status()
        if stream is not self._out:
            self._flush(self._out)
        try:
            stream.write(text)
        except OSError:
            pass  # a closed pipe (`make up | head`) must not stop the shutdown
        self._flush(stream)
        self._draw_status()
        self._flush(self._out)

    def _clear_status(self) -> None:
        if self._interactive and self._status is not None:
            self._raw(_CLEAR_LINE)

    def _draw_status(self) -> None:
        if self._interactive and self._status is not None:
            width = max(shutil.get_terminal_size().columns - 1, 10)
            self._raw(self._status[:width])

    def _raw(self, text: str) -> None:
        try:
            self._out.write(text)
        except OSError:
            pass

    @staticmethod
    def _flush(stream: TextIO) -> None:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
