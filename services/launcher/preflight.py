"""Checks made before anything starts: every port configured once and free."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.errors import ConfigError
from services.common.ports import bind_socket
from services.launcher.config import PortSetting

__all__ = ["check_ports"]


def check_ports(ports: Sequence[PortSetting]) -> None:
    """ConfigError if two settings share a port; PortInUse for the first port that is taken.

    Binding is the test (as the servers will bind), so an address that cannot be used at all
    (a BIND_HOST of another machine) is a StartupError naming the variable too.
    """
    seen: dict[int, str] = {}
    for setting in ports:
        other = seen.setdefault(setting.port, setting.env_var)
        if other != setting.env_var:
            raise ConfigError(
                f"port {setting.port} is set for both {other} and {setting.env_var}; "
                "give each its own port"
            )
    for setting in ports:
        bind_socket(setting.host, setting.port, setting.env_var).close()
