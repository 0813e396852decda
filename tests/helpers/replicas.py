"""More processes of a service beside a :class:`~tests.helpers.system.System`'s own, and what
each process says on its ``/metrics``: for the replica tests and the bench's replicas scenario."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.common.ports import free_port
from tests.helpers.grpc_clients import SERVING, health_status
from tests.helpers.system import _PORT_VARS, ROOT, SERVICES, System

__all__ = ["PEER_VARS", "Replica", "scrape", "server_calls"]

PEER_VARS = {
    "user": "USER_SERVICE_ADDR",
    "message": "MESSAGE_SERVICE_ADDR",
    "notification": "NOTIFICATION_SERVICE_ADDR",
    "frontend": "FRONTEND_SERVICE_ADDR",
}
"""The variable through which the other services (and the SDK) find each service."""


class Replica:
    """One more process of a service, beside the System's own, on its own ports.

    Its environment is the System's (:meth:`System.env` when it starts: the peer addresses
    included) with its own gRPC, REST and, for FrontendService, metrics ports."""

    def __init__(
        self, system: System, name: str, log: Path, *, start: bool = True, **env: str
    ) -> None:
        assert name in SERVICES, name
        self.system = system
        self.name = name
        self.log = log
        self.env = env
        self.grpc_port = free_port()
        self.rest_port = free_port() if _PORT_VARS[name][0] else None
        self.metrics_port = free_port() if name == "frontend" else None
        self.process: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        rest_var, grpc_var = _PORT_VARS[self.name]
        environ = self.system.env()
        assert grpc_var is not None
        environ[grpc_var] = str(self.grpc_port)
        if rest_var and self.rest_port:
            environ[rest_var] = str(self.rest_port)
        if self.metrics_port:
            environ[f"{self.name.upper()}_METRICS_PORT"] = str(self.metrics_port)
        environ.update(self.env)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=ROOT,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Where this process serves ``/metrics``: its own metrics port, or its REST port."""
        return f"http://127.0.0.1:{self.metrics_port or self.rest_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} replica was not started"
        return self.process.pid

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    async def wait_healthy(self, within: float = 30.0) -> None:
        assert self.process is not None, f"{self.name} replica was not started"
        deadline = time.monotonic() + within
        async with grpc.aio.insecure_channel(self.addr) as channel:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} replica exited:\n{self._log_tail()}")
                try:
                    if await health_status(channel, deadline=0.5) == SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} replica is not healthy:\n{self._log_tail()}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample of the Prometheus exposition at ``url``, by name and labels."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        reply = await http.get(url)
    reply.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


async def server_calls(url: str, full_method: str) -> int:
    """RPCs of ``/pkg.Service/Method`` this process's gRPC server handled (every status code),
    from ``grpc_server_handled_total`` on its ``/metrics``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    total = 0.0
    for (name, labels), value in (await scrape(url)).items():
        got = dict(labels)
        if (
            name == "grpc_server_handled_total"
            and got.get("grpc_service") == service
            and got.get("grpc_method") == method
        ):
            total += value
    return int(total)
