"""Client configuration: service addresses and call policy, from arguments or MISSIVE_* vars."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from missive_client._errors import ConfigError

__all__ = ["ENV_VARS", "ClientConfig", "Transport", "split_host_port"]

Transport = Literal["grpc", "rest"]

ENV_VARS: Mapping[str, str] = {
    "user_url": "MISSIVE_USER_URL",
    "message_url": "MISSIVE_MESSAGE_URL",
    "notification_url": "MISSIVE_NOTIFICATION_URL",
    "user_grpc": "MISSIVE_USER_GRPC",
    "message_grpc": "MISSIVE_MESSAGE_GRPC",
    "notification_grpc": "MISSIVE_NOTIFICATION_GRPC",
    "frontend_grpc": "MISSIVE_FRONTEND_GRPC",
    "transport": "MISSIVE_TRANSPORT",
    "timeout": "MISSIVE_TIMEOUT",
}
"""Each configurable field and the environment variable that sets it."""

_URL_FIELDS = ("user_url", "message_url", "notification_url")
_GRPC_FIELDS = ("user_grpc", "message_grpc", "notification_grpc", "frontend_grpc")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where the services are and how calls behave; the defaults are the local system.

    Attributes:
        user_url, message_url, notification_url: base URLs of the REST APIs.
        user_grpc, message_grpc, notification_grpc, frontend_grpc: ``host:port`` of the gRPC
            servers (plaintext, as ``make up`` runs them).
        transport: which protocol carries operations both offer (``"grpc"`` or ``"rest"``);
            registration, update, deletion and listing of users are REST-only, and the live
            notification stream is gRPC-only, whatever this says.
        timeout: seconds each call may take (streams are not limited).
        retries: extra attempts after an ``Unavailable`` failure of an operation that is safe to
            repeat (reads, idempotent updates, and ``send``, which carries a request id).
        refresh_margin: with a kept password, sign in again when the token has less than this
            many seconds left.
    """

    user_url: str = "http://127.0.0.1:8080"
    message_url: str = "http://127.0.0.1:8081"
    notification_url: str = "http://127.0.0.1:8082"
    user_grpc: str = "127.0.0.1:9797"
    message_grpc: str = "127.0.0.1:9798"
    notification_grpc: str = "127.0.0.1:9799"
    frontend_grpc: str = "127.0.0.1:3030"
    transport: Transport = "grpc"
    timeout: float = 10.0
    retries: int = 2
    refresh_margin: float = 30.0

    def __post_init__(self) -> None:
        for name in _URL_FIELDS:
            _check_url(name, getattr(self, name))
        for name in _GRPC_FIELDS:
            split_host_port(getattr(self, name), name)
        if self.transport not in ("grpc", "rest"):
            raise ConfigError(f"transport={self.transport!r} must be 'grpc' or 'rest'")
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout)):
            raise ConfigError(f"timeout={self.timeout!r} must be a number of seconds")
        if self.timeout <= 0:
            raise ConfigError(f"timeout={self.timeout!r} must be positive")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"retries={self.retries!r} must be a non-negative integer")
        if not math.isfinite(self.refresh_margin) or self.refresh_margin < 0:
            raise ConfigError(f"refresh_margin={self.refresh_margin!r} must be >= 0 seconds")

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **arguments: object) -> ClientConfig:
        """Arguments that are not None, else the MISSIVE_* variables, else the defaults."""
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise TypeError(f"unexpected argument(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, variable in ENV_VARS.items():
            raw = env.get(variable, "").strip()
            if raw:
                values[name] = _from_env(name, variable, raw)
        values.update({name: value for name, value in arguments.items() if value is not None})
        return cls(**values)


def _from_env(name: str, variable: str, raw: str) -> object:
    if name == "timeout":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a number of seconds") from None
    if name == "transport":
        lowered = raw.lower()
        if lowered not in ("grpc", "rest"):
            raise ConfigError(f"{variable}={raw!r} must be 'grpc' or 'rest'")
        return lowered
    value = raw.rstrip("/") if name in _URL_FIELDS else raw
    try:
        if name in _URL_FIELDS:
            _check_url(name, value)
        else:
            split_host_port(value, name)
    except ConfigError as exc:
        raise ConfigError(f"{variable}: {exc}") from None
    return value


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name}={url!r} has a malformed port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={url!r} must be an http:// or https:// URL")


def split_host_port(address: str, name: str = "address") -> tuple[str, int]:
    """``("host", port)`` from ``host:port`` or ``[v6]:port``; ConfigError naming ``name``."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name}={address!r} must be host:port")
    return host, int(port_text)
