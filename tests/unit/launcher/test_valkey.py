"""EmbeddedValkey runs the real valkey-server and keeps acknowledged writes across SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import services.launcher.valkey as valkey_module
from services.common.ports import free_port
from services.launcher.valkey import (
    EmbeddedValkey,
    ValkeyBinaryNotFound,
    ValkeyStartError,
    find_valkey_binary,
)
from tests.helpers.aof import AOF_WINDOW_SECONDS

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A port somebody else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_answers_ping_with_safe_configuration(fresh_valkey: EmbeddedValkey) -> None:
    assert fresh_valkey.running
    assert fresh_valkey.url == f"redis://127.0.0.1:{fresh_valkey.port}"
    assert fresh_valkey.pid is not None
    with redis.Redis.from_url(fresh_valkey.url, decode_responses=True) as client:
        assert client.ping()
        config = client.config_get("*")
        assert int(client.info("server")["process_id"]) == fresh_valkey.pid
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["save"] == ""
    assert config["protected-mode"] == "yes"
    assert config["bind"] == "127.0.0.1"
    assert Path(config["dir"]) == fresh_valkey.data_dir
    assert fresh_valkey.log_path.is_file()


def test_sigkill_keeps_every_acknowledged_write(fresh_valkey: EmbeddedValkey) -> None:
    """Every write acknowledged 2 s before a SIGKILL is on the AOF: ``everysec`` may postpone
    the AOF's write behind a background fsync still running (a slow disk) for up to 2 s while it
    keeps answering, so the writes of those last 2 s are not promised (the README's
    Guarantees; the chaos scenario `valkey_sigkill_restart_on_aof` checks the same bound)."""
    port = fresh_valkey.port
    with redis.Redis.from_url(fresh_valkey.url, decode_responses=True) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"key:{i}", f"value-{i}")
        assert all(pipe.execute())
    time.sleep(AOF_WINDOW_SECONDS)
    pid = fresh_valkey.pid
    assert pid is not None

    fresh_valkey.kill()
    assert not fresh_valkey.running
    assert fresh_valkey.pid is None
    assert _gone(pid)

    fresh_valkey.restart()
    assert fresh_valkey.port == port
    with redis.Redis.from_url(fresh_valkey.url, decode_responses=True) as client:
        assert client.dbsize() == 1000
        values = client.mget([f"key:{i}" for i in range(1000)])
    assert values == [f"value-{i}" for i in range(1000)]


def test_stop_and_context_manager_leave_no_process(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "data") as server:
        pid = server.pid
        assert pid is not None
        with redis.Redis.from_url(server.url) as client:
            client.set("k", "v")
    assert not server.running
    assert _gone(pid)
    server.start()  # same directory: the AOF written on SIGTERM is replayed
    try:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("k") == b"v"
    finally:
        server.stop()


def test_busy_explicit_port_fails_with_the_log_tail(
    tmp_path: Path, listening_socket: socket.socket
) -> None:
    port = listening_socket.getsockname()[1]
    server = EmbeddedValkey(tmp_path, port)
    with pytest.raises(ValkeyStartError) as info:
        server.start(timeout=5)
    assert f"port {port}" in str(info.value)
    assert "Address already in use" in str(info.value)
    assert not server.running


def test_auto_port_picks_another_when_taken(
    tmp_path: Path, listening_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = listening_socket.getsockname()[1]
    ports = iter([busy])
    monkeypatch.setattr(valkey_module, "free_port", lambda host="": next(ports, 0) or free_port())
    server = EmbeddedValkey(tmp_path)
    assert server.port == busy
    try:
        server.start()
        assert server.running
        assert server.port != busy
    finally:
        server.stop()


def test_missing_binary_is_reported_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValkeyBinaryNotFound, match=r"no executable valkey-server at .*reinstall"):
        find_valkey_binary(tmp_path)
    server = EmbeddedValkey(tmp_path, binary=tmp_path / "valkey-server")
    with pytest.raises(ValkeyBinaryNotFound, match="no executable valkey-server"):
        server.start()
    assert find_valkey_binary().is_file()


def test_module_runs_in_foreground_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "services.launcher.valkey"]
    command += ["--data-dir", str(tmp_path), "--port", str(port)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"valkey ready at redis://127.0.0.1:{port} (pid ")
        server_pid = int(line.split("(pid ")[1].split(",")[0])
        with redis.Redis(port=port) as client:
            assert client.ping()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert _gone(server_pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
