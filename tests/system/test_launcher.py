"""`make up` (python -m services.launcher): preflight, start-up, supervision, clean shutdown.

Most tests run the real launcher as a process against stand-in services: a package put first
on PYTHONPATH whose `services.<svc>` modules are small gRPC health servers, and whose
`__path__` continues with the real `services/` (so `services.launcher` and `services.common`
are the real ones). The last test runs `make up` with the real services.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.common.ports import free_port
from services.launcher.config import LaunchConfig
from services.launcher.endpoints import client_exports, render_endpoints
from services.launcher.output import Console, use_color
from services.launcher.valkey import EmbeddedValkey

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("user", "message", "notification", "frontend", "web")
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
_OWN_VARS = ("USER_", "MESSAGE_", "NOTIFICATION_", "FRONTEND_", "VALKEY_", "WEB_")
_UNSET = ("REDIS_URL", "KEYS_DIR", "KEYS_CREATE", "BIND_HOST", "NO_COLOR", "PYTHONPATH")
REAL_SERVICES_EXIST = all((ROOT / "services" / name / "__main__.py").is_file() for name in SERVICES)

# -- stand-in services ---------------------------------------------------------------------------

_FAKE_PACKAGE = '''
"""Stand-ins first, then the real services package (launcher, common)."""
import os

__path__ = [os.path.dirname(__file__), {real!r}]
'''

_FAKE_SERVICE = '''
"""A stand-in service: a gRPC health server on the service's gRPC port, nothing else
(the web inbox: GET /health on WEB_PORT).

FAKE_NOT_SERVING=a,b  never report SERVING
FAKE_IGNORE_TERM=a,b  ignore SIGTERM
FAKE_CRASH=name:code  exit with that code one second after starting
"""
import asyncio
import os
import signal
import sys

from services.common.grpc_server import add_health_and_reflection, bind_port, create_grpc_server

PORTS = {
    "user": ("USER_GRPC_PORT", 9797),
    "message": ("MESSAGE_GRPC_PORT", 9798),
    "notification": ("NOTIFICATION_GRPC_PORT", 9799),
    "frontend": ("FRONTEND_GRPC_PORT", 3030),
    "web": ("WEB_PORT", 8083),
}


class _HttpHealth:
    """GET /health as the web inbox answers it, on a bare asyncio server."""

    def __init__(self, serving):
        self.serving = serving

    async def handle(self, reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        status = "SERVING" if self.serving else "NOT_SERVING"
        body = ('{"status": "%s"}' % status).encode()
        writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
                     b"content-length: %d\\r\\nconnection: close\\r\\n\\r\\n%s" % (len(body), body))
        await writer.drain()
        writer.close()


def _listed(var, name):
    return name in os.environ.get(var, "").split(",")


async def _serve(name):
    env = os.environ
    var, default = PORTS[name]
    port = int(env.get(var) or default)
    if name == "web":
        http = _HttpHealth(not _listed("FAKE_NOT_SERVING", name))
        server = await asyncio.start_server(http.handle, env.get("BIND_HOST", "127.0.0.1"), port)
    else:
        server = create_grpc_server()
        health = add_health_and_reflection(server, [])
        bind_port(server, env.get("BIND_HOST", "127.0.0.1"), port, var)
        await server.start()
    print(
        f"fake {name} on {port} REDIS_URL={env.get('REDIS_URL')} KEYS_DIR={env.get('KEYS_DIR')}"
        f" USER_SERVICE_ADDR={env.get('USER_SERVICE_ADDR')}"
        f" NOTIFICATION_SERVICE_ADDR={env.get('NOTIFICATION_SERVICE_ADDR')}"
        f" FRONTEND_SERVICE_ADDR={env.get('FRONTEND_SERVICE_ADDR')}"
        f" MESSAGE_SERVICE_ADDR={env.get('MESSAGE_SERVICE_ADDR')}"
        f" USER_SERVICE_URL={env.get('USER_SERVICE_URL')}",
        flush=True,
    )
    if name != "web" and not _listed("FAKE_NOT_SERVING", name):
        await health.set_serving(True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if _listed("FAKE_IGNORE_TERM", name):
        loop.add_signal_handler(signal.SIGTERM, print, f"fake {name} ignores SIGTERM")
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    crash = env.get("FAKE_CRASH", "")
    if crash.startswith(name + ":"):
        await asyncio.sleep(1.0)
        print(f"fake {name} crashing", flush=True)
        os._exit(int(crash.split(":")[1]))
    await stop.wait()
    print(f"fake {name} stopping", flush=True)
    if name == "web":
        server.close()
    else:
        await server.stop(0)


def main(name):
    asyncio.run(_serve(name))
    sys.exit(0)
'''


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake-services")
    package = root / "services"
    package.mkdir()
    (package / "__init__.py").write_text(_FAKE_PACKAGE.format(real=str(ROOT / "services")))
    (package / "fake_service.py").write_text(_FAKE_SERVICE)
    for name in SERVICES:
        (package / name).mkdir()
        (package / name / "__init__.py").write_text("")
        (package / name / "__main__.py").write_text(
            f"from services.fake_service import main\n\nmain({name!r})\n"
        )
    return root


# -- running the launcher --------------------------------------------------------------------


def _ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORT_VARS):
        ports = {var: free_port() for var in PORT_VARS}
    return ports


def _base_env(ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_OWN_VARS) and key not in _UNSET
    }
    env.update({var: str(port) for var, port in ports.items()})
    env.update(extra)
    return env


_PID = re.compile(r"missive: (?:started (\w+)|valkey ready at \S+) \(pid (\d+)")


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    ports: dict[str, int]

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while text not in self.out:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the launcher exited with {self.process.returncode} before printing "
                    f"{text!r}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {within}s\n{self.out}\n{self.err}")
            time.sleep(0.05)

    def signal(self, sig: signal.Signals, *, group: bool = True) -> None:
        # A terminal's Ctrl-C goes to the foreground process group: the launcher (and make),
        # not the services, which run in their own sessions.
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def wait(self, within: float = 30.0) -> int:
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"still running after {within}s\n{self.out}\n{self.err}") from None

    def pids(self) -> list[int]:
        return [int(match.group(2)) for match in _PID.finditer(self.out)]


def _assert_gone(pids: list[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            assert time.monotonic() < deadline, f"process {pid} is still running"
            time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


@pytest.fixture
def launch(tmp_path: Path, fake_root: Path) -> Iterator[Callable[..., Launched]]:
    started: list[Launched] = []

    def start(*args: str, fakes: bool = True, **extra: str) -> Launched:
        ports = _ports()
        env = _base_env(ports, **extra)
        if fakes:
            env["PYTHONPATH"] = str(fake_root)
        out, err = tmp_path / f"out{len(started)}.txt", tmp_path / f"err{len(started)}.txt"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.launcher", "--data-dir", str(tmp_path / "data"),
                 *args],
                # Outside the repository, so `-m services` does not find the real package first.
                cwd=tmp_path,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
        launched = Launched(process, out, err, ports)
        started.append(launched)
        return launched

    yield start
    for launched in started:
        if launched.process.poll() is None:
            launched.signal(signal.SIGKILL)
            launched.process.wait()
        for pid in launched.pids():
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


# -- preflight: one line and exit 2, before anything starts ------------------------------------


def _run(env: dict[str, str], data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.launcher", "--data-dir", str(data_dir), *args],
        cwd=data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("var", ["USER_REST_PORT", "FRONTEND_GRPC_PORT", "VALKEY_PORT"])
def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path, var: str) -> None:
    ports = _ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports[var] = busy.getsockname()[1]
        result = _run(_base_env(ports), tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr == (
        f"missive: port {ports[var]} is already in use (set {var} to change it)\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "data").exists(), "nothing may start (no keys, no Valkey)"


def test_the_valkey_port_is_not_checked_with_an_external_redis(tmp_path: Path) -> None:
    ports = _ports()
    with socket.socket() as valkey, socket.socket() as user:
        for sock in (valkey, user):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        ports["VALKEY_PORT"] = valkey.getsockname()[1]
        ports["USER_GRPC_PORT"] = user.getsockname()[1]
        env = _base_env(ports, REDIS_URL="redis://127.0.0.1:1")
        result = _run(env, tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr == (
        f"missive: port {ports['USER_GRPC_PORT']} is already in use "
        "(set USER_GRPC_PORT to change it)\n"
    )


def test_a_bad_port_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _run(_base_env(_ports(), MESSAGE_GRPC_PORT="http"), tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr == "missive: MESSAGE_GRPC_PORT='http' is not an integer\n"


def test_the_same_port_twice_is_refused(tmp_path: Path) -> None:
    ports = _ports()
    ports["NOTIFICATION_REST_PORT"] = ports["MESSAGE_GRPC_PORT"]
    result = _run(_base_env(ports), tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr == (
        f"missive: port {ports['MESSAGE_GRPC_PORT']} is set for both MESSAGE_GRPC_PORT and "
        "NOTIFICATION_REST_PORT; give each its own port\n"
    )


# -- the whole life cycle, with stand-in services ---------------------------------------------


def test_starts_everything_prints_endpoints_and_stops_on_ctrl_c(
    launch: Callable[..., Launched], tmp_path: Path
) -> None:
    running = launch()
    running.wait_for("Press Ctrl-C to stop everything.")
    ports = running.ports
    out = running.out
    assert "\033[" not in out, "no colour when stdout is not a terminal"
    valkey_url = f"redis://127.0.0.1:{ports['VALKEY_PORT']}"
    assert f"missive: valkey ready at {valkey_url}" in out
    keys = tmp_path / "data" / "keys"
    user_grpc = f"127.0.0.1:{ports['USER_GRPC_PORT']}"
    for name in SERVICES:
        assert f"missive: started {name} (pid " in out
        assert f"missive: {name} is healthy (" in out
        # The services' output, prefixed, and what the launcher passed to them.
        line = next(line for line in out.splitlines() if line.startswith(f"{name:<12} | fake "))
        assert f"REDIS_URL={valkey_url} KEYS_DIR={keys.resolve()} " in line
        assert f"USER_SERVICE_ADDR={user_grpc} " in line
        assert f"FRONTEND_SERVICE_ADDR=127.0.0.1:{ports['FRONTEND_GRPC_PORT']}" in line
        assert f"MESSAGE_SERVICE_ADDR=127.0.0.1:{ports['MESSAGE_GRPC_PORT']}" in line
        assert f"USER_SERVICE_URL=http://127.0.0.1:{ports['USER_REST_PORT']}" in line
    rest = f"http://127.0.0.1:{ports['USER_REST_PORT']}"
    assert re.search(rf"^  user +{rest} +{rest}/ui/ +{user_grpc} +0$", out, re.MULTILINE), out
    assert re.search(
        rf"^  frontend +- +- +127\.0\.0\.1:{ports['FRONTEND_GRPC_PORT']} +-$", out, re.MULTILINE
    )
    web = f"http://127.0.0.1:{ports['WEB_PORT']}"
    assert re.search(rf"^  web +{web} +- +- +-$", out, re.MULTILINE), out
    assert f"  Web inbox: {web}/ " in out
    assert f"curl -s -X POST {rest}/login " in out
    # Every port moved, so the seven client addresses are printed as shell lines to paste.
    exports = [line.strip() for line in out.splitlines() if line.startswith("  export ")]
    assert exports == [
        f"export MISSIVE_USER_URL={rest}",
        f"export MISSIVE_USER_GRPC={user_grpc}",
        f"export MISSIVE_MESSAGE_URL=http://127.0.0.1:{ports['MESSAGE_REST_PORT']}",
        f"export MISSIVE_MESSAGE_GRPC=127.0.0.1:{ports['MESSAGE_GRPC_PORT']}",
        f"export MISSIVE_NOTIFICATION_URL=http://127.0.0.1:{ports['NOTIFICATION_REST_PORT']}",
        f"export MISSIVE_NOTIFICATION_GRPC=127.0.0.1:{ports['NOTIFICATION_GRPC_PORT']}",
        f"export MISSIVE_FRONTEND_GRPC=127.0.0.1:{ports['FRONTEND_GRPC_PORT']}",
    ], out
    assert "Point the missive CLI and the SDK here: run in each terminal that uses them" in out
    assert (keys / "service" / "user.key").is_file()
    assert (tmp_path / "data" / "valkey" / "appendonlydir").is_dir()
    pids = running.pids()
    assert len(pids) == 6

    running.signal(signal.SIGINT)
    assert running.wait() == 0, running.err
    out = running.out
    assert "missive: received SIGINT; stopping" in out
    for name in SERVICES:
        assert f"{name:<12} | fake {name} stopping" in out
        assert f"missive: {name} stopped\n" in out
    assert out.rstrip().endswith("missive: valkey stopped")
    assert running.err == ""
    _assert_gone(pids)


def test_sigterm_stops_cleanly_and_an_external_redis_is_used_as_is(
    launch: Callable[..., Launched], valkey: EmbeddedValkey
) -> None:
    running = launch(REDIS_URL=valkey.url)
    running.wait_for("Missive is up.")
    assert "valkey ready" not in running.out
    assert f"REDIS_URL={valkey.url} " in running.out
    assert f"Redis: {valkey.url} (external)" in running.out
    pids = running.pids()
    running.signal(signal.SIGTERM, group=False)
    assert running.wait() == 0, running.err
    assert "missive: received SIGTERM; stopping" in running.out
    _assert_gone(pids)


def test_a_service_that_exits_stops_everything_with_exit_1(
    launch: Callable[..., Launched],
) -> None:
    running = launch(FAKE_CRASH="notification:3")
    assert running.wait() == 1
    assert (
        "missive: notification exited with code 3 unexpectedly; stopping everything\n"
        in running.err
    )
    out = running.out
    assert "notification | fake notification crashing" in out
    for name in ("user", "message", "frontend", "web"):
        assert f"missive: {name} stopped\n" in out
    assert "missive: valkey stopped" in out
    _assert_gone(running.pids())


def test_a_service_that_never_becomes_healthy_times_out_with_exit_1(
    launch: Callable[..., Launched],
) -> None:
    running = launch("--timeout", "2", FAKE_NOT_SERVING="frontend,message,web")
    assert running.wait() == 1
    assert (
        "missive: timed out after 2s: message, frontend, web did not report SERVING "
        "(see their output above)\n" in running.err
    )
    assert "Missive is up." not in running.out
    _assert_gone(running.pids())


def test_a_second_ctrl_c_kills_a_service_that_ignores_sigterm(
    launch: Callable[..., Launched],
) -> None:
    running = launch(FAKE_IGNORE_TERM="message")
    running.wait_for("Missive is up.")
    pids = running.pids()
    running.signal(signal.SIGINT)
    running.wait_for("message      | fake message ignores SIGTERM")
    running.signal(signal.SIGINT)
    assert running.wait(10) == 0, running.err
    assert "missive: received SIGINT again; killing the services" in running.out
    assert "missive: message did not stop; killing it as asked\n" in running.err
    assert "missive: message stopped: it was killed by SIGKILL" in running.out
    _assert_gone(pids)


# -- pieces ------------------------------------------------------------------------------------


def test_the_endpoint_table_and_token_commands() -> None:
    config = LaunchConfig.from_env({}, data_dir=Path(".data"))
    text = render_endpoints(config, "redis://127.0.0.1:6379")
    assert "http://127.0.0.1:8080/ui/" in text
    assert re.search(r"^  service +REST +Swagger UI +gRPC +Redis DB$", text, re.MULTILINE)
    assert re.search(
        r"^  notification +http://127.0.0.1:8082 +http://127.0.0.1:8082/ui/ +127.0.0.1:9799 +2$",
        text,
        re.MULTILINE,
    )
    assert (
        "  curl -s -X POST http://127.0.0.1:8080/users -H 'content-type: application/json' "
        """-d '{"name":"Ada","email":"ada@example.com","password":"correct horse"}'\n"""
    ) in text
    assert (
        "  curl -s -X POST http://127.0.0.1:8080/login -H 'content-type: application/json' "
        """-d '{"email":"ada@example.com","password":"correct horse"}'\n"""
    ) in text


def test_no_exports_on_the_default_ports() -> None:
    config = LaunchConfig.from_env({}, data_dir=Path(".data"))
    assert client_exports(config, {}) == []
    assert "export" not in render_endpoints(config, "redis://127.0.0.1:6379", {})


def test_exports_name_only_the_moved_ports_exactly() -> None:
    environ = {"USER_REST_PORT": "18080", "FRONTEND_GRPC_PORT": "13030", "WEB_PORT": "18083"}
    config = LaunchConfig.from_env(environ, data_dir=Path(".data"))
    assert client_exports(config, {}) == [
        "export MISSIVE_USER_URL=http://127.0.0.1:18080",
        "export MISSIVE_FRONTEND_GRPC=127.0.0.1:13030",
    ]
    text = render_endpoints(config, "redis://127.0.0.1:6379", {})
    assert (
        "Point the missive CLI and the SDK here: run in each terminal that uses them\n"
        "  export MISSIVE_USER_URL=http://127.0.0.1:18080\n"
        "  export MISSIVE_FRONTEND_GRPC=127.0.0.1:13030\n"
    ) in text


def test_another_host_is_one_missive_host_line() -> None:
    config = LaunchConfig.from_env({"BIND_HOST": "::1"}, data_dir=Path("d"))
    assert client_exports(config, {}) == ["export MISSIVE_HOST=::1"]
    moved = LaunchConfig.from_env(
        {"BIND_HOST": "10.0.0.7", "MESSAGE_GRPC_PORT": "1"}, data_dir=Path("d")
    )
    assert client_exports(moved, {}) == [
        "export MISSIVE_HOST=10.0.0.7",
        "export MISSIVE_MESSAGE_GRPC=10.0.0.7:1",
    ]


def test_variables_of_this_shell_that_point_elsewhere_are_corrected() -> None:
    config = LaunchConfig.from_env({}, data_dir=Path("d"))
    stale = {
        "MISSIVE_USER_URL": "http://old:1",
        "MISSIVE_MESSAGE_URL": "http://127.0.0.1:8081/",  # the right one: left alone
        "MISSIVE_HOST": "old",
        "MISSIVE_PROFILE": "staging",
    }
    assert client_exports(config, stale) == [
        "unset MISSIVE_PROFILE",
        "export MISSIVE_HOST=127.0.0.1",
        "export MISSIVE_USER_URL=http://127.0.0.1:8080",
    ]


def test_peer_addresses_follow_the_ports_unless_set() -> None:
    environ = {"USER_GRPC_PORT": "19797", "FRONTEND_SERVICE_ADDR": "elsewhere:1"}
    config = LaunchConfig.from_env(environ, data_dir=Path("d"))
    env = config.child_env(environ, "redis://x:1")
    assert env["USER_SERVICE_ADDR"] == "127.0.0.1:19797"
    assert env["NOTIFICATION_SERVICE_ADDR"] == "127.0.0.1:9799"
    assert env["FRONTEND_SERVICE_ADDR"] == "elsewhere:1"
    assert env["MESSAGE_SERVICE_ADDR"] == "127.0.0.1:9798"
    assert env["USER_SERVICE_URL"] == "http://127.0.0.1:8080"
    assert env["REDIS_URL"] == "redis://x:1"
    assert env["KEYS_DIR"] == str(Path("d/keys").resolve())


def test_redis_url_or_no_valkey_means_no_embedded_valkey() -> None:
    assert LaunchConfig.from_env({}, data_dir=Path("d")).embedded_valkey
    assert not LaunchConfig.from_env(
        {"REDIS_URL": "redis://r:1"}, data_dir=Path("d")
    ).embedded_valkey
    assert not LaunchConfig.from_env({}, data_dir=Path("d"), no_valkey=True).embedded_valkey
    ports = [p.port for p in LaunchConfig.from_env({}, data_dir=Path("d")).ports()]
    assert ports == [6379, 8080, 9797, 8081, 9798, 8082, 9799, 3030, 8083]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prefixes_are_fixed_width_and_coloured_only_on_a_terminal_without_no_color() -> None:
    assert Console(io.StringIO(), io.StringIO()).prefix("user") == "user         | "
    assert Console(io.StringIO(), io.StringIO()).prefix("notification") == "notification | "
    coloured = Console(_Terminal(), io.StringIO(), color=True).prefix("user")
    assert coloured.startswith("\033[") and "user         |" in coloured
    assert use_color(_Terminal(), {})
    assert not use_color(_Terminal(), {"NO_COLOR": "1"})
    assert not use_color(io.StringIO(), {})


def test_the_status_line_is_cleared_before_each_line_on_a_terminal() -> None:
    out = _Terminal()
    console = Console(out, out, interactive=True)
    console.status("waiting")
    console.service_line("user", "hello")
    console.status(None)
    assert out.getvalue() == "waiting\r\033[Kuser         | hello\nwaiting\r\033[K"


# -- make up with the real services --------------------------------------------------------------


def _launcher_under(make_pid: int, within: float = 10.0) -> int:
    """The launcher process make started (directly or through a shell)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        todo = [make_pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"services.launcher" in cmdline:
                return pid
            todo += [int(child) for child in children]
        time.sleep(0.05)
    raise AssertionError("make started no launcher")


def _the_quickstart_runs_with_the_printed_exports(out: str, config: Path) -> None:
    """The README's quickstart in fresh shells that know only what `make up` printed.

    The password is piped with --password-stdin where the README lets the command prompt.
    """
    exports = "\n".join(line.strip() for line in out.splitlines() if line.startswith("  export "))
    assert exports.count("export MISSIVE_") == 7, out
    env = {key: value for key, value in os.environ.items() if not key.startswith("MISSIVE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    password = "correct-horse-battery"

    def shell(script: str, config: Path) -> str:
        done = subprocess.run(
            ["bash", "-eu", "-c", f"{exports}\n{script}"],
            env={**env, "XDG_CONFIG_HOME": str(config)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    alice = shell(
        f"""
missive users register --name Alice --email alice@example.com --password-stdin <<< {password}
missive users register --name Bob --email bob@example.com --password-stdin <<< {password}
missive login alice@example.com --password-stdin <<< {password}
missive send bob@example.com "Hello Bob"
missive conversations
missive status
""",
        config,
    )
    assert "sent message" in alice and "bob@example.com" in alice and "SERVING" in alice
    bob = shell(
        f"""
export MISSIVE_USER=bob@example.com
missive login bob@example.com --password-stdin <<< {password}
missive watch --count 1
""",
        config,
    )
    assert "new message from alice@example.com: Hello Bob" in bob
    # Alice's terminal still acts as Alice.
    assert "alice@example.com" in shell("missive users get", config)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not REAL_SERVICES_EXIST, reason="needs services/<svc>/__main__.py for all four")
def test_make_up_starts_the_real_system_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    ports = _ports()
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("wb") as stdout, err_path.open("wb") as stderr:
        # -o: the virtual environment is used as it is (CI installed it; no pip in a test).
        process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "up",
             f"ARGS=--data-dir {tmp_path / 'data'} --timeout 90"],
            cwd=ROOT,
            # FrontendService's /metrics on a free port, not the shared default 9464.
            env=_base_env(ports, SHUTDOWN_GRACE="3", FRONTEND_METRICS_PORT=str(free_port())),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    running = Launched(process, out_path, err_path, ports)
    try:
        running.wait_for("Press Ctrl-C to stop everything.", within=120)
        rest = f"http://127.0.0.1:{ports['USER_REST_PORT']}"
        assert f"{rest}/ui/" in running.out
        # The printed commands work: register, then log in for a token.
        with httpx.Client(base_url=rest, timeout=10, trust_env=False) as client:
            created = client.post(
                "/users",
                json={"name": "Ada", "email": "ada@example.com", "password": "correct horse"},
            )
            assert created.status_code == 201, created.text
            login = client.post(
                "/login", json={"email": "ada@example.com", "password": "correct horse"}
            )
            assert login.status_code == 200, login.text
            assert login.json()["access_token"]
            assert client.get("/ui/").status_code == 200
        with httpx.Client(timeout=10, trust_env=False) as client:
            inbox = client.get(f"http://127.0.0.1:{ports['WEB_PORT']}/signin")
            assert inbox.status_code == 200
            assert "Sign in" in inbox.text
        _the_quickstart_runs_with_the_printed_exports(running.out, tmp_path / "config")
        pids = running.pids()
        assert len(pids) == 6
        # Ctrl-C as the launcher sees it; make then exits with the launcher's status.
        os.kill(_launcher_under(process.pid), signal.SIGINT)
        assert running.wait(40) == 0, f"{running.out}\n{running.err}"
        assert "missive: valkey stopped" in running.out
        for name in SERVICES:
            assert f"missive: {name} stopped\n" in running.out
        _assert_gone(pids)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in running.pids():
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
