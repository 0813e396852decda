"""The whole system for end-to-end and fault tests: Valkey plus the four services as processes.

Each service runs through its real entry point (`python -m services.<svc>`) on free ports,
so tests exercise exactly what `make up` and the containers run. ``System.create(base,
web=True)`` adds the web inbox (`python -m services.web`), a client of the four.
``System.on_cluster(base[, cluster])`` runs the services on a Valkey Cluster (REDIS_CLUSTER_NODES)
instead of one Valkey.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from services.common.auth import ensure_keys
from services.common.ports import free_port
from services.launcher.valkey import EmbeddedValkey
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from tests.helpers.grpc_clients import SERVING, health_status
from tests.helpers.valkey import start_valkey

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("user", "message", "notification", "frontend")
_PORT_VARS = {
    "user": ("USER_REST_PORT", "USER_GRPC_PORT"),
    "message": ("MESSAGE_REST_PORT", "MESSAGE_GRPC_PORT"),
    "notification": ("NOTIFICATION_REST_PORT", "NOTIFICATION_GRPC_PORT"),
    "frontend": (None, "FRONTEND_GRPC_PORT"),
    "web": ("WEB_PORT", None),
}


@dataclass
class ServiceProcess:
    name: str
    rest_port: int | None
    grpc_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int | None = None  # FrontendService's /metrics (the others: the REST port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class System:
    """Valkey, keys and the four services, started and stopped on demand."""

    base: Path
    valkey: EmbeddedValkey
    keys_dir: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    cluster: EmbeddedValkeyCluster | None = None
    """The Valkey Cluster the services use (``valkey`` is then its first master)."""
    owns_cluster: bool = False
    """Whether :meth:`close` stops the cluster (False: a cluster shared with other tests)."""

    @classmethod
    def create(cls, base: Path, *, web: bool = False, **extra_env: str) -> System:
        keys_dir = base / "keys"
        ensure_keys(keys_dir)
        system = cls(base, start_valkey(base / "valkey"), keys_dir, extra_env=extra_env)
        system._add_services(web)
        return system

    @classmethod
    def on_cluster(
        cls,
        base: Path,
        cluster: EmbeddedValkeyCluster | None = None,
        *,
        web: bool = False,
        **extra_env: str,
    ) -> System:
        """The services on a Valkey Cluster: ``cluster`` (flushed, and left running by
        :meth:`close`), or a private 3-master one (stopped by :meth:`close`)."""
        keys_dir = base / "keys"
        ensure_keys(keys_dir)
        owned = cluster is None
        if cluster is None:
            cluster = EmbeddedValkeyCluster(base / "valkey-cluster", masters=3)
            cluster.start()
        else:
            cluster.wait_ok()
            cluster.flush()
        system = cls(
            base,
            cluster.masters[0],
            keys_dir,
            extra_env=extra_env,
            cluster=cluster,
            owns_cluster=owned,
        )
        system._add_services(web)
        return system

    def _add_services(self, web: bool) -> None:
        for name in (*SERVICES, "web") if web else SERVICES:
            rest_var, grpc_var = _PORT_VARS[name]
            self.services[name] = ServiceProcess(
                name,
                free_port() if rest_var else None,
                free_port() if grpc_var else 0,
                self.base / f"{name}.log",
                metrics_port=free_port() if name == "frontend" else None,
            )

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("USER_", "MESSAGE_", "NOTIFICATION_", "FRONTEND_", "WEB_"))
        }
        env.update(
            REDIS_URL=self.valkey.url if self.cluster is None else self.cluster.url,
            KEYS_DIR=str(self.keys_dir),
            BIND_HOST="127.0.0.1",
            LOG_LEVEL="INFO",
            SHUTDOWN_GRACE="3",
            PYTHONUNBUFFERED="1",
        )
        for name, svc in self.services.items():
            rest_var, grpc_var = _PORT_VARS[name]
            if rest_var and svc.rest_port:
                env[rest_var] = str(svc.rest_port)
            if grpc_var:
                env[grpc_var] = str(svc.grpc_port)
            if svc.metrics_port:
                env[f"{name.upper()}_METRICS_PORT"] = str(svc.metrics_port)
        env["USER_SERVICE_ADDR"] = self.grpc_addr("user")
        env["USER_SERVICE_URL"] = self.rest_url("user")
        env["MESSAGE_SERVICE_ADDR"] = self.grpc_addr("message")
        env["NOTIFICATION_SERVICE_ADDR"] = self.grpc_addr("notification")
        env["FRONTEND_SERVICE_ADDR"] = self.grpc_addr("frontend")
        env.pop("REDIS_CLUSTER_NODES", None)
        if self.cluster is not None:
            env["REDIS_CLUSTER_NODES"] = self.cluster.nodes_env
        # Tests register, send and stream from 127.0.0.1 far more than one client would: lift
        # those limits unless a test is about them (it passes its own values in extra_env).
        env.update(
            USER_REGISTER_CLIENT_ATTEMPTS="1000000",
            MESSAGE_SEND_LIMIT="1000000",
            FRONTEND_MAX_STREAMS_PER_CLIENT="1000000",
        )
        env.update(self.extra_env)
        return env

    def grant_operator(self, email: str) -> None:
        """Give ``email`` the operator role (may list every user), as an operator would."""
        subprocess.run(
            [sys.executable, "-m", "services.user.operators", "grant", email],
            cwd=ROOT,
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def client_exports(self) -> str:
        """The ``export`` lines `make up` prints for these ports (for the CLI and the SDK)."""
        from services.launcher.config import LaunchConfig
        from services.launcher.endpoints import client_exports

        config = LaunchConfig.from_env(self.env(), data_dir=self.base)
        return "\n".join(client_exports(config, {}))

    def grpc_addr(self, name: str) -> str:
        return f"127.0.0.1:{self.services[name].grpc_port}"

    def rest_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].rest_port}"

    def metrics_url(self, name: str) -> str:
        """Where ``name`` serves ``/metrics``: its REST port, or its own metrics port."""
        port = self.services[name].metrics_port or self.services[name].rest_port
        return f"http://127.0.0.1:{port}/metrics"

    def start(self, *names: str) -> None:
        for name in names or tuple(self.services):
            svc = self.services[name]
            assert not svc.running, f"{name} is already running"
            log = svc.log_path.open("ab")
            svc.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()

    def stop(self, *names: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> None:
        for name in names or tuple(self.services):
            svc = self.services[name]
            if svc.process is None:
                continue
            if svc.process.poll() is None:
                svc.process.send_signal(sig)
                try:
                    svc.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    svc.process.kill()
                    svc.process.wait()
            svc.process = None

    def kill(self, *names: str) -> None:
        self.stop(*names, sig=signal.SIGKILL)

    async def wait_healthy(self, *names: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        for name in names or tuple(self.services):
            if name == "web":
                await self._wait_web(deadline, within)
                continue
            async with grpc.aio.insecure_channel(self.grpc_addr(name)) as channel:
                while True:
                    svc = self.services[name]
                    if svc.process is not None and svc.process.poll() is not None:
                        raise AssertionError(f"{name} exited early:\n{self.log_tail(name)}")
                    try:
                        if await health_status(channel, deadline=0.5) == SERVING:
                            break
                    except grpc.aio.AioRpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{name} is not healthy:\n{self.log_tail(name)}")
                    await asyncio.sleep(0.05)

    async def _wait_web(self, deadline: float, within: float) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                svc = self.services["web"]
                if svc.process is not None and svc.process.poll() is not None:
                    raise AssertionError(f"web exited early:\n{self.log_tail('web')}")
                try:
                    reply = await client.get(f"{self.rest_url('web')}/health", timeout=0.5)
                    if reply.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"web is not healthy after {within}s:\n{self.log_tail('web')}"
                    )
                await asyncio.sleep(0.05)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.services[name].log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self.stop()
        if self.cluster is None:
            self.valkey.stop()
        elif self.owns_cluster:
            self.cluster.stop()
