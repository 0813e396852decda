"""`make up` on a Valkey Cluster: ``python -m services.launcher --cluster`` (or MISSIVE_CLUSTER=1)
starts an embedded 3-master cluster and every service in cluster mode; REDIS_CLUSTER_NODES points
the services at an existing cluster."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc.aio
import httpx
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.message.v1 import message_pb2, message_pb2_grpc

from services.common.errors import ConfigError
from services.common.ports import free_port
from services.launcher.app import _redis_problem
from services.launcher.config import LaunchConfig
from services.launcher.endpoints import render_endpoints
from services.launcher.valkey import EmbeddedValkey
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from tests.helpers.clients import next_notification
from tests.system.test_launcher import ROOT, Launched, _assert_gone, _base_env
from tests.system.test_launcher_replicas import PORT_VARS

NODES = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"


def test_the_flag_or_the_variable_starts_an_embedded_cluster() -> None:
    for config in (
        LaunchConfig.from_env({}, data_dir=Path("d"), cluster=True),
        LaunchConfig.from_env({"MISSIVE_CLUSTER": "1"}, data_dir=Path("d")),
    ):
        assert config.cluster and config.embedded_valkey
        assert config.valkey_ports == [6379, 6380, 6381]
        assert config.valkey_dir == Path("d/valkey-cluster")
        assert [p.port for p in config.ports()][:4] == [6379, 6380, 6381, 8080]
    plain = LaunchConfig.from_env({"MISSIVE_CLUSTER": "0"}, data_dir=Path("d"))
    assert not plain.cluster and plain.valkey_ports == [6379]
    assert plain.valkey_dir == Path("d/valkey")
    with pytest.raises(ConfigError, match="MISSIVE_CLUSTER"):
        LaunchConfig.from_env({"MISSIVE_CLUSTER": "maybe"}, data_dir=Path("d"))


def test_redis_cluster_nodes_means_an_existing_cluster() -> None:
    config = LaunchConfig.from_env({"REDIS_CLUSTER_NODES": NODES}, data_dir=Path("d"))
    assert config.cluster and not config.embedded_valkey
    assert config.redis_url == f"redis+cluster://{NODES}"
    assert 6379 not in [p.port for p in config.ports()]
    env = config.child_env({"REDIS_CLUSTER_NODES": NODES}, config.redis_url)
    assert env["REDIS_CLUSTER_NODES"] == NODES and env["REDIS_URL"] == config.redis_url
    # A redis+cluster:// REDIS_URL is the same thing.
    by_url = LaunchConfig.from_env({"REDIS_URL": f"redis+cluster://{NODES}"}, data_dir=Path("d"))
    assert by_url.cluster and not by_url.embedded_valkey
    assert by_url.child_env({}, by_url.redis_url)["REDIS_CLUSTER_NODES"] == NODES
    with pytest.raises(ConfigError, match="REDIS_CLUSTER_NODES"):
        LaunchConfig.from_env({"REDIS_CLUSTER_NODES": "not a node"}, data_dir=Path("d"))


def test_contradictions_are_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError, match="standalone Redis"):
        LaunchConfig.from_env({"REDIS_URL": "redis://r:1"}, data_dir=Path("d"), cluster=True)
    with pytest.raises(ConfigError, match="needs REDIS_CLUSTER_NODES"):
        LaunchConfig.from_env({}, data_dir=Path("d"), cluster=True, no_valkey=True)


def test_standalone_child_env_is_unchanged() -> None:
    config = LaunchConfig.from_env({}, data_dir=Path("d"))
    env = config.child_env({}, "redis://127.0.0.1:6379")
    assert "REDIS_CLUSTER_NODES" not in env and env["REDIS_URL"] == "redis://127.0.0.1:6379"


def test_the_endpoint_table_shows_key_namespaces_on_a_cluster() -> None:
    config = LaunchConfig.from_env({}, data_dir=Path("d"), cluster=True)
    text = render_endpoints(config, "redis+cluster://127.0.0.1:6379,127.0.0.1:6380")
    assert re.search(r"^  service +REST +Swagger UI +gRPC +Redis keys$", text, re.MULTILINE)
    assert re.search(r"^  message +http://127.0.0.1:8081 .* +m:\*$", text, re.MULTILINE)
    assert re.search(r"^  frontend +- +- +127.0.0.1:3030 +f:\*$", text, re.MULTILINE)
    assert "(embedded Valkey Cluster, data in d/valkey-cluster)" in text


def test_an_existing_cluster_is_checked_before_the_services_start(
    valkey_cluster: EmbeddedValkeyCluster, valkey: EmbeddedValkey
) -> None:
    assert _redis_problem(valkey_cluster.url) is None
    problem = _redis_problem(f"redis+cluster://127.0.0.1:{free_port()}")
    assert problem is not None and "ConnectionError" in problem
    # A seed that answers but is no cluster node.
    problem = _redis_problem(f"redis+cluster://{valkey.host}:{valkey.port}")
    assert problem is not None and "cluster support disabled" in problem


def _free_run(count: int) -> int:
    """A port p with p..p+count-1 free, and their cluster bus ports (+10000) too."""
    while True:
        port = free_port()
        if port + 10000 + count > 65535:
            continue
        try:
            for candidate in (
                *range(port, port + count),
                *range(port + 10000, port + 10000 + count),
            ):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


async def _live_on_the_cluster(ports: dict[str, int]) -> None:
    tokens = {}
    user_rest = f"http://127.0.0.1:{ports['USER_REST_PORT']}"
    async with httpx.AsyncClient(base_url=user_rest, timeout=10, trust_env=False) as http:
        for name in ("ada", "bob"):
            email = f"{name}@example.com"
            body = {"name": name, "email": email, "password": "correct horse"}
            assert (await http.post("/users", json=body)).status_code == 201
            login = await http.post("/login", json={"email": email, "password": "correct horse"})
            tokens[name] = login.json()["access_token"]
    frontend = grpc.aio.insecure_channel(f"127.0.0.1:{ports['FRONTEND_GRPC_PORT']}")
    messages = grpc.aio.insecure_channel(f"127.0.0.1:{ports['MESSAGE_GRPC_PORT']}")
    try:
        stream = frontend_pb2_grpc.FrontendServiceStub(frontend).SubscribeNotifications(
            frontend_pb2.SubscribeNotificationsRequest(email="bob@example.com"),
            metadata=(("authorization", f"Bearer {tokens['bob']}"),),
        )
        await asyncio.sleep(0.5)
        reply = await message_pb2_grpc.MessageServiceStub(messages).SendMessage(
            message_pb2.SendMessageRequest(
                sender_email="ada@example.com", receiver_email="bob@example.com", content="hi"
            ),
            metadata=(("authorization", f"Bearer {tokens['ada']}"),),
            timeout=10,
        )
        assert (await next_notification(stream, 20)).message_id == reply.message.id
        stream.cancel()
    finally:
        await frontend.close()
        await messages.close()


@pytest.mark.e2e
@pytest.mark.slow
def test_launcher_with_cluster_runs_every_service_on_an_embedded_cluster(tmp_path: Path) -> None:
    ports = {var: free_port() for var in PORT_VARS}
    ports["VALKEY_PORT"] = _free_run(3)
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("wb") as stdout, err_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.launcher", "--cluster",
             "--data-dir", str(tmp_path / "data"), "--timeout", "90"],
            cwd=ROOT,
            env=_base_env(ports, SHUTDOWN_GRACE="3", NO_COLOR="1"),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    running = Launched(process, out_path, err_path, ports)
    valkey_pids: list[int] = []
    try:
        running.wait_for("Press Ctrl-C to stop everything.", within=120)
        found = re.search(r"valkey cluster ready at (\S+) \(pids ([\d, ]+),", running.out)
        assert found, running.out
        port = ports["VALKEY_PORT"]
        assert found.group(1) == (
            f"redis+cluster://127.0.0.1:{port},127.0.0.1:{port + 1},127.0.0.1:{port + 2}"
        )
        valkey_pids = [int(pid) for pid in found.group(2).split(", ")]
        assert len(valkey_pids) == 3
        assert "Redis keys" in running.out and "embedded Valkey Cluster" in running.out
        asyncio.run(_live_on_the_cluster(ports))
        service_pids = [int(pid) for pid in re.findall(r"started \S+ \(pid (\d+)", running.out)]
        os.kill(process.pid, signal.SIGINT)
        assert running.wait(40) == 0, f"{running.out}\n{running.err}"
        assert "valkey cluster stopped" in running.out
        _assert_gone([*service_pids, *valkey_pids])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in valkey_pids:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
