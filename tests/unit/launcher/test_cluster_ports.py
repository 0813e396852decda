"""The embedded cluster on fixed ports (``make up --cluster``): a restart rejoins the same
cluster from its nodes.conf files, with its data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from services.common.ports import free_port
from services.launcher.valkey_cluster import EmbeddedValkeyCluster


def _node_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


def test_fixed_ports_and_a_restart_keep_the_cluster_and_its_data(tmp_path: Path) -> None:
    ports = [_node_port() for _ in range(3)]
    first = EmbeddedValkeyCluster(tmp_path, 3, ports=ports)
    first.start()
    try:
        assert [node.port for node in first.nodes] == ports
        client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
        try:
            for n in range(30):
                client.set(f"u:key{n}", n)
        finally:
            client.close()
    finally:
        first.stop()
    again = EmbeddedValkeyCluster(tmp_path, 3, ports=ports)
    again.start()  # from nodes.conf: no slot is assigned twice, every one is served
    try:
        client = redis.RedisCluster(host="127.0.0.1", port=ports[1])
        try:
            assert [client.get(f"u:key{n}") for n in range(30)] == [
                str(n).encode() for n in range(30)
            ]
        finally:
            client.close()
    finally:
        again.stop()


def test_the_ports_must_match_the_nodes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 ports given for 3 nodes"):
        EmbeddedValkeyCluster(tmp_path, 3, ports=[1, 2])
