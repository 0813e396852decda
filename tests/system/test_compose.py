"""docker-compose.yml: valid Compose, and running exactly what `make up` runs.

No Docker engine and no docker-compose binary are needed: the file is checked against the
Compose Specification (with the `compose-spec` parser and the checks below), `docker-compose
config` adds its own check where it is installed, and the rest is checked by reading the file.
The healthcheck command the containers use (`python -m services.common.healthcheck PORT`) is
run here against a real server.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml

from services.common.grpc_server import (
    HealthReporter,
    add_health_and_reflection,
    bind_port,
    create_grpc_server,
)
from services.common.ports import free_port
from services.launcher.config import PEER_ADDRESS_VARS, PEER_URL_VARS, LaunchConfig, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = ("user", "message", "notification", "frontend", "web")
GRPC_SERVICES = ("user", "message", "notification", "frontend")
"""The four services; the web inbox is their client: HTTP only, no keys, no Redis."""
NATIVE = {spec.name: spec for spec in LaunchConfig.from_env({}, data_dir=Path(".data")).services}


def _load() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def _command(value: object) -> list[str]:
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), value
    return [str(part) for part in value]


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "depends_on must be the long form (with conditions)"
    return {name: str(spec.get("condition")) for name, spec in depends.items()}


# -- the Compose Specification ------------------------------------------------------------------
#
# The file is checked against the Compose Specification with `compose-spec` (a typed parser of the
# specification: unknown keys, value types, enums such as depends_on conditions, durations, port
# syntax, anchors and merge keys) plus what that parser lets through: dependencies on services
# that do not exist. `docker-compose config` runs as an extra check where the tool is installed.


def _spec_errors(text: str) -> list[str]:
    """Everything wrong with a compose document, or [] when it follows the specification."""
    try:
        parsed = compose_spec.PyOptions(apply_merge=True).from_yaml(text)
        parsed.validate()
    except ValueError as exc:
        return [str(exc)]
    services = parsed.to_dict().get("services") or {}
    return [
        f"services.{name}.depends_on: no service named {dependency!r}"
        for name, service in services.items()
        for dependency in service.get("depends_on") or {}
        if dependency not in services
    ]


def test_the_file_follows_the_compose_specification() -> None:
    assert _spec_errors(COMPOSE_FILE.read_text()) == []
    normalised = compose_spec.PyOptions(apply_merge=True).from_yaml(COMPOSE_FILE.read_text())
    services = normalised.to_dict()["services"]
    assert set(services) == {"redis", *SERVICES}
    for name in SERVICES:  # what the parser understood, after anchors and merges
        assert "healthcheck" in services[name]
        assert set(_depends(services[name]).values()) == {"service_healthy"}


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("    healthcheck:", "    healthchek:", "healthchek"),
        ("condition: service_healthy", "condition: service_healty", "service_healty"),
        ("stop_grace_period: 15s", "stop_grace_period: fifteen", "fifteen"),
        ('- "8080:8080"', '- "80x0:8080"', "80x0"),
        ("retries: 12", "retries: many", "many"),
        ("\n  user:\n", "\n  users:\n", "no service named 'user'"),
    ],
)
def test_the_check_refuses_a_broken_file(old: str, new: str, complaint: str) -> None:
    text = COMPOSE_FILE.read_text()
    assert old in text
    errors = _spec_errors(text.replace(old, new, 1))
    assert any(complaint in error for error in errors), errors


def test_docker_compose_config_accepts_the_file() -> None:
    """An extra check by Docker's own tool, where it is installed (it needs no engine)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed; the specification check above still ran")
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr.upper(), result.stderr
    normalised = yaml.safe_load(result.stdout)["services"]
    assert set(normalised) == {"redis", *SERVICES}
    for name in SERVICES:
        assert "healthcheck" in normalised[name]
        assert set(_depends(normalised[name]).values()) == {"service_healthy"}


# -- what runs -----------------------------------------------------------------------------------


def test_the_services_are_redis_and_the_four(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", *SERVICES}


@pytest.mark.parametrize("name", SERVICES)
def test_command_is_the_native_entry_point(services: dict[str, dict[str, Any]], name: str) -> None:
    assert _command(services[name]["command"]) == ["python", "-m", f"services.{name}"]


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_exists_and_runs_the_same_entry_point(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    build = services[name]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == f"services/{name}/Dockerfile"
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    assert dockerfile.is_file(), f"{dockerfile.relative_to(ROOT)} does not exist"
    commands = [
        line.split(None, 1)[1]
        for line in dockerfile.read_text().splitlines()
        if line.strip().upper().startswith("CMD ")
    ]
    assert commands, f"{dockerfile} has no CMD"
    last = commands[-1].strip()
    cmd = json.loads(last) if last.startswith("[") else shlex.split(last)
    assert cmd == ["python", "-m", f"services.{name}"]


# -- ports, environment, keys ----------------------------------------------------------------


def _spec(name: str) -> ServiceSpec:
    return NATIVE[name]


@pytest.mark.parametrize("name", SERVICES)
def test_ports_and_databases_are_the_native_ones(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    spec = _spec(name)
    env = _env(services[name])
    expected = []
    if spec.rest_port is not None and spec.rest_env is not None:
        expected.append(f"{spec.rest_port}:{spec.rest_port}")
        assert env[spec.rest_env] == str(spec.rest_port)
    if spec.grpc_port is not None and spec.grpc_env is not None:
        expected.append(f"{spec.grpc_port}:{spec.grpc_port}")
        assert env[spec.grpc_env] == str(spec.grpc_port)
    assert [str(port) for port in services[name]["ports"]] == expected
    if spec.redis_db is not None:
        assert env[f"{name.upper()}_REDIS_DB"] == str(spec.redis_db)


@pytest.mark.parametrize("name", SERVICES)
def test_environment_points_at_the_containers(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = _env(services[name])
    assert env["REDIS_URL"] == "redis://redis:6379"
    assert env["BIND_HOST"] == "0.0.0.0"
    assert env["KEYS_DIR"] == "/keys"
    for var, peer in PEER_ADDRESS_VARS.items():
        if var in env:
            assert env[var] == f"{peer}:{_spec(peer).grpc_port}"
            assert peer in services
    for var, peer in PEER_URL_VARS.items():
        if var in env:
            assert env[var] == f"http://{peer}:{_spec(peer).rest_port}"
            assert peer in services


def test_the_web_inbox_reaches_every_service_it_calls(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["web"])
    for var in ("USER_SERVICE_URL", "USER_SERVICE_ADDR", "MESSAGE_SERVICE_ADDR"):
        assert var in env
    assert {"NOTIFICATION_SERVICE_ADDR", "FRONTEND_SERVICE_ADDR"} <= set(env)
    assert set(_depends(services["web"])) == set(GRPC_SERVICES)


def test_only_the_user_service_creates_keys_and_the_others_wait_for_it(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert "keys" in compose["volumes"]
    assert "volumes" not in services["web"], "the web inbox holds no keys"
    for name in GRPC_SERVICES:
        env = _env(services[name])
        mounts = [str(volume) for volume in services[name]["volumes"]]
        if name == "user":
            assert env.get("KEYS_CREATE") == "1"
            assert "keys:/keys" in mounts
        else:
            assert "KEYS_CREATE" not in env
            assert "keys:/keys:ro" in mounts
            assert _depends(services[name]).get("user") == "service_healthy"


# -- health and order ----------------------------------------------------------------------


def test_the_web_inbox_healthcheck_probes_its_http_health(
    services: dict[str, dict[str, Any]],
) -> None:
    port = str(_spec("web").rest_port)
    test = services["web"]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "services.common.healthcheck", "--http", port]


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_healthcheck_probes_the_grpc_health_service(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    test = services[name]["healthcheck"]["test"]
    assert test == [
        "CMD",
        "python",
        "-m",
        "services.common.healthcheck",
        str(_spec(name).grpc_port),
    ]


def test_redis_persists_and_has_a_healthcheck(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    redis = services["redis"]
    assert redis["image"] in ("valkey/valkey:8", "redis:7")
    command = _command(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, target = str(redis["volumes"][0]).partition(":")
    assert target.split(":")[0] == "/data"
    assert volume in compose["volumes"]
    cli = "valkey-cli" if redis["image"].startswith("valkey") else "redis-cli"
    assert redis["healthcheck"]["test"] == ["CMD", cli, "ping"]


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_each_service_waits_for_a_healthy_redis(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends = _depends(services[name])
    assert depends.get("redis") == "service_healthy"
    assert set(depends.values()) == {"service_healthy"}
    assert set(depends) <= set(services)


def test_start_order_has_no_cycle_and_message_comes_after_its_peers(
    services: dict[str, dict[str, Any]],
) -> None:
    graph = {name: set(_depends(service)) for name, service in services.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"depends_on has a cycle: {exc.args[1]}")
    assert order[0] == "redis"
    assert {"user", "notification"} <= graph["message"]
    assert order.index("message") > max(order.index("user"), order.index("notification"))
    assert order[-1] == "web", "the web inbox starts once every service it calls is healthy"


# -- the healthcheck command itself ----------------------------------------------------------


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, HealthReporter]]:
    server = create_grpc_server()
    reporter = add_health_and_reflection(server, ["missive.test.v1.Probe"])
    port = bind_port(server, "127.0.0.1", 0, "TEST_PORT")
    await server.start()
    try:
        yield port, reporter
    finally:
        await server.stop(None)


async def _healthcheck(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.common.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_healthcheck_exits_0_when_serving(
    health_server: tuple[int, HealthReporter],
) -> None:
    port, reporter = health_server
    await reporter.set_serving(True)
    code, out, _ = await _healthcheck(str(port))
    assert code == 0
    assert f"127.0.0.1:{port} is SERVING" in out


async def test_healthcheck_exits_1_when_not_serving(
    health_server: tuple[int, HealthReporter],
) -> None:
    port, _ = health_server  # health starts NOT_SERVING
    code, _, err = await _healthcheck(str(port))
    assert code == 1
    assert err == f"healthcheck: 127.0.0.1:{port} is NOT_SERVING\n"


async def test_healthcheck_exits_1_when_nothing_listens() -> None:
    port = free_port()
    code, _, err = await _healthcheck(str(port), "--timeout", "1")
    assert code == 1
    assert err.startswith(f"healthcheck: 127.0.0.1:{port}: ")
    assert len(err.splitlines()) == 1


async def test_healthcheck_rejects_a_bad_port() -> None:
    code, _, err = await _healthcheck("http")
    assert code == 2
    assert "not a port number" in err


class _Health(http.server.BaseHTTPRequestHandler):
    status = "SERVING"

    def do_GET(self) -> None:
        body = json.dumps({"status": self.status}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_health() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": "SERVING"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


async def test_healthcheck_http_mode_follows_get_health(
    http_health: tuple[int, type[_Health]],
) -> None:
    port, handler = http_health
    code, out, _ = await _healthcheck("--http", str(port))
    assert (code, out) == (0, f"healthcheck: 127.0.0.1:{port} is SERVING\n")
    handler.status = "NOT_SERVING"
    code, _, err = await _healthcheck("--http", str(port))
    assert (code, err) == (1, f"healthcheck: 127.0.0.1:{port} is NOT_SERVING\n")
    code, _, err = await _healthcheck("--http", "--timeout", "1", str(free_port()))
    assert code == 1
    assert "ConnectError" in err
