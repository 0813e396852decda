"""Client configuration: service addresses and call policy.

Each setting comes from, in this order: an argument; a ``MISSIVE_*`` environment variable; the
selected profile of the configuration file (``$XDG_CONFIG_HOME/missive/config.toml``); the
default (the local system of ``make up``). Within each of these the base setting ``host`` gives
every service its default port on that host, and a service's own address overrides it.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from missive_client._errors import ConfigError

__all__ = [
    "DEFAULT_PROFILE",
    "ENV_VARS",
    "HOST_VAR",
    "PROFILE_VAR",
    "ClientConfig",
    "Transport",
    "address_hint",
    "config_dir",
    "config_file",
    "load_profile",
    "split_host_port",
]

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

HOST_VAR = "MISSIVE_HOST"
"""The base setting: the host of every service, each on its default port."""
PROFILE_VAR = "MISSIVE_PROFILE"
"""The profile of the configuration file to use (``--profile`` of the CLI)."""
DEFAULT_PROFILE = "default"

DEFAULT_PORTS: Mapping[str, int] = {
    "user_url": 8080,
    "message_url": 8081,
    "notification_url": 8082,
    "user_grpc": 9797,
    "message_grpc": 9798,
    "notification_grpc": 9799,
    "frontend_grpc": 3030,
}
"""The port of each address field on a host (``make up``'s defaults)."""

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
    def resolve(
        cls,
        environ: Mapping[str, str] | None = None,
        **arguments: object,
    ) -> ClientConfig:
        """Arguments that are not None, else MISSIVE_* variables, else the profile, else defaults.

        ``host`` (or ``MISSIVE_HOST``, or a profile's ``host``) is the base setting: every
        service at its default port on that host; an address given at the same level or a
        higher one overrides it for that service. ``profile`` (or ``MISSIVE_PROFILE``) names a
        table ``[profiles.NAME]`` of ``$XDG_CONFIG_HOME/missive/config.toml``; the file is read
        only when a profile is named (``default`` may be absent from it: the built-in defaults).
        """
        env = os.environ if environ is None else environ
        host = _optional_text(arguments.pop("host", None), "host")
        profile = _optional_text(arguments.pop("profile", None), "profile")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise TypeError(f"unexpected argument(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        chosen = profile or env.get(PROFILE_VAR, "").strip() or None
        _layer(values, load_profile(chosen, env))
        from_env: dict[str, Any] = {}
        raw_host = env.get(HOST_VAR, "").strip()
        if raw_host:
            from_env.update(_host_addresses(raw_host, HOST_VAR))
        for name, variable in ENV_VARS.items():
            raw = env.get(variable, "").strip()
            if raw:
                from_env[name] = _from_env(name, variable, raw)
        values.update(from_env)
        given: dict[str, Any] = {}
        if host is not None:
            given.update(_host_addresses(host, "host"))
        given.update({name: value for name, value in arguments.items() if value is not None})
        values.update(given)
        return cls(**values)


def _optional_text(value: object, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{name}={value!r} must be a string")


def _layer(values: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """Apply one level's settings: its host first, then its own addresses and options."""
    base = settings.get("host")
    if isinstance(base, str):
        values.update(_host_addresses(base, "host"))
    values.update({key: value for key, value in settings.items() if key != "host"})


def _host_addresses(host: str, name: str) -> dict[str, str]:
    """Every address field on ``host`` at its default port."""
    bare = host.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    valid = bool(bare) and not any(c in bare for c in "/@?#[] ")
    if valid and ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            valid = False
    if not valid:
        raise ConfigError(
            f"{name}={host!r} must be a host name or IP address, without scheme or port"
        )
    literal = f"[{bare}]" if ":" in bare else bare
    addresses = {}
    for field_name, port in DEFAULT_PORTS.items():
        where = f"{literal}:{port}"
        addresses[field_name] = f"http://{where}" if field_name in _URL_FIELDS else where
    return addresses


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/missive``, else ``~/.config/missive``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "missive"


def config_file(environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file holding the profiles: ``config_dir()/config.toml``."""
    return config_dir(environ) / "config.toml"


_PROFILE_KEYS = frozenset({"host", *ENV_VARS, "retries", "refresh_margin"})


def load_profile(name: str | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings of profile ``name`` ({} for None, without reading the file).

    ConfigError naming the file when it is malformed, the profile is missing (when named) or
    a key is unknown or has a wrong value.
    """
    if name is None:
        return {}
    path = config_file(environ)
    profiles = _read_profiles(path)
    settings = profiles.get(name)
    if settings is None:
        if name == DEFAULT_PROFILE:
            return {}
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(
            f"no profile {name!r} in {path} (profiles: {known}); add a [profiles.{name}] table "
            'with host = "..." or the service addresses'
        )
    where = f"{path} [profiles.{name}]"
    if not isinstance(settings, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(settings) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_PROFILE_KEYS))})"
        )
    return {key: _profile_value(key, value, f"{where} {key}") for key, value in settings.items()}


def _read_profiles(path: Path) -> dict[str, Any]:
    """The ``[profiles]`` table of the configuration file ({} when there is no file)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must be a table of [profiles.NAME] tables")
    return profiles


def _profile_value(key: str, value: object, label: str) -> Any:
    """One profile setting, checked and converted; ConfigError naming ``label``."""
    if key in ("timeout", "refresh_margin"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{label}={value!r} must be a number of seconds")
        return float(value)
    if key == "retries":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label}={value!r} must be an integer")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{label}={value!r} must be a string")
    if key == "host":
        _host_addresses(value, label)
        return value
    return _from_env(key, label, value)


def address_hint(service: str, address_field: str) -> str:
    """What to set to point the client at a service elsewhere (for "cannot reach" errors)."""
    variable = ENV_VARS.get(address_field)
    alone = f", {variable} (this service)" if variable else ""
    return (
        f"set {HOST_VAR} (every service){alone} or a profile ({PROFILE_VAR}, --profile); "
        "`make up` prints the exports"
    )


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
