"""TCP port helpers: free-port selection and binding with clear errors."""

from __future__ import annotations

import errno
import random
import socket
from typing import Final

from services.common.errors import PortInUse, StartupError

__all__ = ["bind_socket", "format_address", "free_port", "port_is_taken"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


_LOWEST_PICK: Final = 20_000
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the OS hands out to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, for a server to listen on.

    It is taken below the OS's range for outgoing connections, so no client socket opened in
    the meantime can land on it, and never twice from one process; only another process
    picking ports itself can still race us. Falls back to a port the OS picks.
    """
    floor = _ephemeral_floor()
    if floor - _LOWEST_PICK >= 1_000:
        for _ in range(200):
            port = random.randrange(_LOWEST_PICK, floor)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        picked: int = sock.getsockname()[1]
        return picked


def _bindable(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def bind_socket(host: str, port: int, env_var: str) -> socket.socket:
    """A bound (not yet listening) TCP socket, as uvicorn would create it.

    SO_REUSEADDR matches uvicorn, so a port left in TIME_WAIT by a previous run is
    reusable while a port somebody listens on is reported as :class:`PortInUse`.
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port, env_var) from exc
        hint = f" (set {env_var} to change it)" if env_var else ""
        raise StartupError(
            f"cannot listen on {format_address(host, port)}: {exc.strerror}{hint}"
        ) from exc
    sock.set_inheritable(True)
    return sock


def port_is_taken(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails because another socket holds it."""
    try:
        bind_socket(host, port, "").close()
    except PortInUse:
        return True
    except StartupError:
        return False
    return False
