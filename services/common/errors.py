"""Start-up errors that entry points turn into one line on stderr and exit code 2."""

from __future__ import annotations

__all__ = ["ConfigError", "PortInUse", "StartupError"]


class StartupError(Exception):
    """The process cannot start; the message says why and what to change."""


class ConfigError(StartupError):
    """An environment variable is missing or malformed; the message names it."""


class PortInUse(StartupError):
    """A port the service must listen on is taken by another process."""

    def __init__(self, port: int, env_var: str) -> None:
        self.port = port
        self.env_var = env_var
        hint = f" (set {env_var} to change it)" if env_var else ""
        super().__init__(f"port {port} is already in use{hint}")
