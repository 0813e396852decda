"""`make up` with replicas: ``python -m services.launcher --replicas 2`` runs two processes of
each service (the web inbox: one) on loopback, and a message sent through one replica shows
live on streams of both FrontendService replicas."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.message.v1 import message_pb2, message_pb2_grpc

from services.common.ports import free_port
from services.frontend.settings import DEFAULT_METRICS_PORT, METRICS_PORT_ENV
from services.launcher.config import REPLICA_PORT_STEP, LaunchConfig
from tests.helpers.clients import next_notification
from tests.system.test_launcher import ROOT, Launched, _assert_gone, _base_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_PIDS = re.compile(r"missive: (?:started \S+|valkey ready at \S+) \(pid (\d+)")
PORT_VARS = (
    "VALKEY_PORT",
    "USER_REST_PORT",
    "USER_GRPC_PORT",
    "MESSAGE_REST_PORT",
    "MESSAGE_GRPC_PORT",
    "NOTIFICATION_REST_PORT",
    "NOTIFICATION_GRPC_PORT",
    "FRONTEND_GRPC_PORT",
    "WEB_PORT",
)


def _free_pair() -> int:
    """A free port whose replica port (+100) is free too."""
    while True:
        port = free_port()
        if port + REPLICA_PORT_STEP < 65536:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + REPLICA_PORT_STEP))
            except OSError:
                continue
            return port


def test_replicas_come_from_the_flag_or_the_variable() -> None:
    config = LaunchConfig.from_env({"MISSIVE_REPLICAS": "3"}, data_dir=Path("d"))
    names = [spec.name for spec in config.services]
    assert names.count("web") == 1 and "web.2" not in names
    assert [n for n in names if n.startswith("user")] == ["user", "user.2", "user.3"]
    env = config.child_env({}, "redis://x:1")
    assert env["USER_SERVICE_ADDR"] == "127.0.0.1:9797,127.0.0.1:9897,127.0.0.1:9997"
    web = next(spec for spec in config.services if spec.name == "web")
    assert config.process_env(web, env)["USER_SERVICE_ADDR"] == "127.0.0.1:9797"
    second = next(spec for spec in config.services if spec.name == "frontend.2")
    assert config.process_env(second, env)["FRONTEND_GRPC_PORT"] == "3130"
    # Its metrics listener moves with it, from FrontendService's own default.
    assert config.process_env(second, env)[METRICS_PORT_ENV] == str(DEFAULT_METRICS_PORT + 100)
    first = next(spec for spec in config.services if spec.name == "frontend")
    assert METRICS_PORT_ENV not in config.process_env(first, env)
    one = LaunchConfig.from_env({"MISSIVE_REPLICAS": "3"}, data_dir=Path("d"), replicas=1)
    assert len(one.services) == 5


async def _live_across_replicas(ports: dict[str, int]) -> None:
    user_rest = f"http://127.0.0.1:{ports['USER_REST_PORT']}"
    tokens = {}
    async with httpx.AsyncClient(base_url=user_rest, timeout=10, trust_env=False) as http:
        for name in ("ada", "bob"):
            email = f"{name}@example.com"
            body = {"name": name, "email": email, "password": "correct horse"}
            assert (await http.post("/users", json=body)).status_code == 201
            login = await http.post("/login", json={"email": email, "password": "correct horse"})
            tokens[name] = login.json()["access_token"]
    step = REPLICA_PORT_STEP
    frontends = [f"127.0.0.1:{ports['FRONTEND_GRPC_PORT'] + n * step}" for n in (0, 1)]
    channels = [grpc.aio.insecure_channel(address) for address in frontends]
    message_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports['MESSAGE_GRPC_PORT'] + step}")
    try:
        streams = [
            frontend_pb2_grpc.FrontendServiceStub(channel).SubscribeNotifications(
                frontend_pb2.SubscribeNotificationsRequest(email="bob@example.com"),
                metadata=(("authorization", f"Bearer {tokens['bob']}"),),
            )
            for channel in channels
        ]
        await asyncio.sleep(0.5)  # both streams registered before the sends
        message = message_pb2_grpc.MessageServiceStub(message_channel)
        sent = []
        for n in range(4):  # the relays' pushes go to either FrontendService replica
            reply = await message.SendMessage(
                message_pb2.SendMessageRequest(
                    sender_email="ada@example.com", receiver_email="bob@example.com",
                    content=f"hello {n}",
                ),
                metadata=(("authorization", f"Bearer {tokens['ada']}"),),
                timeout=10,
            )  # fmt: skip
            sent.append(reply.message.id)
        for stream in streams:
            shown = [(await next_notification(stream, 20)).message_id for _ in sent]
            # Each once; in any order: the relays of two replicas split one receiver's events.
            assert sorted(shown) == sorted(sent) and len(set(shown)) == len(sent)
            stream.cancel()
    finally:
        for channel in (*channels, message_channel):
            await channel.close()


def test_launcher_with_two_replicas_delivers_live_across_frontend_replicas(
    tmp_path: Path,
) -> None:
    ports = {var: _free_pair() for var in PORT_VARS}
    assert len(set(ports.values())) == len(PORT_VARS)
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("wb") as stdout, err_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.launcher", "--replicas", "2",
             "--data-dir", str(tmp_path / "data"), "--timeout", "90"],
            cwd=ROOT,
            env=_base_env(ports, SHUTDOWN_GRACE="3", NO_COLOR="1"),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    running = Launched(process, out_path, err_path, ports)
    try:
        running.wait_for("Press Ctrl-C to stop everything.", within=120)
        for name in ("user.2", "message.2", "notification.2", "frontend.2"):
            assert f"missive: started {name} (pid" in running.out
        assert "web.2" not in running.out
        asyncio.run(_live_across_replicas(ports))
        pids = [int(pid) for pid in _PIDS.findall(running.out)]
        assert len(pids) == 10  # Valkey, 2 x 4 services, the web inbox
        os.kill(process.pid, signal.SIGINT)
        assert running.wait(40) == 0, f"{running.out}\n{running.err}"
        _assert_gone(pids)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in map(int, _PIDS.findall(running.out)):
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
