"""TCP port helpers: free-port selection and binding with clear errors."""

from __future__ import annotations

import errno
import socket

from services.common.errors import PortInUse, StartupError

__all__ = ["bind_socket", "format_address", "free_port", "port_is_taken"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it; another process may still race us)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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
