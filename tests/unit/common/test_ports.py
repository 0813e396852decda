"""free_port: ports a test or the launcher can listen on without racing outgoing connections."""

from __future__ import annotations

import socket

from services.common.ports import _ephemeral_floor, free_port


def test_free_ports_are_distinct_bindable_and_below_the_outgoing_range() -> None:
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    assert all(port < _ephemeral_floor() for port in ports)
    for port in ports[:10]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
