"""The entry point: settings from the environment, health, and streams ended on shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.notification.v1 import notification_pb2

from services.common.bootstrap import Security
from services.common.errors import PortInUse
from services.common.grpc_client import peer_channel
from services.common.ports import free_port
from services.common.settings import ConfigError
from services.frontend.__main__ import main
from services.frontend.settings import Settings
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.frontend.conftest import BOB, Peer, Users, notification


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() installs a process-wide handler; take it away again after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_settings_defaults(keys: Path) -> None:
    settings = Settings.from_env({"KEYS_DIR": str(keys)})
    assert (settings.host, settings.grpc_port, settings.notification_addr) == (
        "127.0.0.1",
        3030,
        "127.0.0.1:9799",
    )
    assert settings.keys_dir == keys
    assert settings.common.shutdown_grace_seconds == 8.0
    limits = (settings.max_streams, settings.max_streams_per_user, settings.max_streams_per_client)
    assert limits == (5000, 10, 100)


def test_stream_limits_from_the_environment(keys: Path) -> None:
    settings = Settings.from_env(
        {
            "KEYS_DIR": str(keys),
            "FRONTEND_MAX_STREAMS": "20000",
            "FRONTEND_MAX_STREAMS_PER_USER": "3",
            "FRONTEND_MAX_STREAMS_PER_CLIENT": "50",
        }
    )
    limits = (settings.max_streams, settings.max_streams_per_user, settings.max_streams_per_client)
    assert limits == (20000, 3, 50)


def test_redis_url_turns_the_fanout_on(keys: Path) -> None:
    assert not Settings.from_env({"KEYS_DIR": str(keys)}).fanout
    assert not Settings.from_env({"KEYS_DIR": str(keys), "REDIS_URL": " "}).fanout
    settings = Settings.from_env({"KEYS_DIR": str(keys), "REDIS_URL": "redis://valkey:6379"})
    assert settings.fanout
    assert settings.common.redis_url == "redis://valkey:6379"


def test_a_cluster_turns_the_fanout_on_in_cluster_mode(keys: Path) -> None:
    nodes = "127.0.0.1:7000,127.0.0.1:7001"
    for environ in ({"REDIS_CLUSTER_NODES": nodes}, {"REDIS_URL": f"redis+cluster://{nodes}"}):
        settings = Settings.from_env({"KEYS_DIR": str(keys), **environ})
        assert settings.fanout and settings.common.redis_cluster
        assert settings.common.redis_url == f"redis+cluster://{nodes}"
    with pytest.raises(ConfigError, match="REDIS_CLUSTER_NODES"):
        Settings.from_env({"KEYS_DIR": str(keys), "REDIS_CLUSTER_NODES": "nowhere"})


def test_a_malformed_redis_url_is_refused(keys: Path) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"KEYS_DIR": str(keys), "REDIS_URL": "not a url"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FRONTEND_GRPC_PORT", "http"),
        ("FRONTEND_GRPC_PORT", "70000"),
        ("NOTIFICATION_SERVICE_ADDR", "localhost"),
        ("NOTIFICATION_SERVICE_ADDR", "localhost:0"),
        ("NOTIFICATION_SERVICE_ADDR", ":9799"),
        ("SHUTDOWN_GRACE", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("FRONTEND_MAX_STREAMS", "0"),
        ("FRONTEND_MAX_STREAMS_PER_USER", "many"),
        ("FRONTEND_MAX_STREAMS_PER_CLIENT", "-1"),
    ],
)
def test_bad_settings_name_the_variable(keys: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"KEYS_DIR": str(keys), name: value})


def _environ(
    keys: Path, port: int, replay_addr: str, user_addr: str = "127.0.0.1:9"
) -> dict[str, str]:
    return {
        "KEYS_DIR": str(keys),
        "BIND_HOST": "127.0.0.1",
        "FRONTEND_GRPC_PORT": str(port),
        "FRONTEND_METRICS_PORT": "0",  # any free port: 9464 may be taken on a shared machine
        "NOTIFICATION_SERVICE_ADDR": replay_addr,
        "USER_SERVICE_ADDR": user_addr,
        "SHUTDOWN_GRACE": "5",
    }


async def test_main_serves_until_stopped_and_ends_streams_with_unavailable(
    keys: Path, peer: Peer, users: Users, token_for: Callable[[str], str]
) -> None:
    peer.servicer.stored = [notification(1)]
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(main(_environ(keys, port, peer.address, users.address), stop))
    plain = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    pusher = peer_channel(
        f"127.0.0.1:{port}", Security.load(keys, "notification").credentials, target="frontend"
    )
    try:
        await wait_for_status(plain, SERVING, within=5)
        await wait_for_status(plain, SERVING, "missive.frontend.v1.FrontendService", within=5)
        stream = frontend_pb2_grpc.FrontendServiceStub(plain).SubscribeNotifications(
            frontend_pb2.SubscribeNotificationsRequest(email=BOB),
            metadata=(("authorization", f"Bearer {token_for(BOB)}"),),
        )
        assert await asyncio.wait_for(stream.read(), 5) == notification(1)
        reply = await frontend_pb2_grpc.FrontendServiceStub(pusher).ReceiveNotification(
            frontend_pb2.ReceiveNotificationRequest(notification=notification(2)), timeout=5
        )
        assert reply.delivered_to == 1
        assert await asyncio.wait_for(stream.read(), 5) == notification(2)

        started = time.monotonic()
        stop.set()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            item = await asyncio.wait_for(stream.read(), 5)
            assert not isinstance(item, notification_pb2.Notification)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 2, "streams end at once, not after the grace period"
        await asyncio.wait_for(server, 10)
    finally:
        stop.set()
        await plain.close()
        await pusher.close()
        if not server.done():
            server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_main_with_a_busy_port_names_the_variable(keys: Path, dead_address: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse, match="FRONTEND_GRPC_PORT"):
            await main(_environ(keys, port, dead_address), asyncio.Event())
