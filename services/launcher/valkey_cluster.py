"""A real Valkey Cluster on loopback: embedded valkey-server processes in cluster mode.

The cluster is built through the client, as an operator would without ``valkey-cli``: every
master gets an even range of the 16,384 slots (CLUSTER ADDSLOTSRANGE), the nodes are introduced
to each other (CLUSTER MEET), and each replica follows its master (CLUSTER REPLICATE). Data and
``nodes.conf`` live under each node's directory, so a killed node restarts into the same cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from services.launcher.valkey import EmbeddedValkey, ValkeyStartError

__all__ = ["CLUSTER_SLOTS", "EmbeddedValkeyCluster"]

CLUSTER_SLOTS = 16_384
_NODE_TIMEOUT_MS = 2_000


class EmbeddedValkeyCluster:
    """``masters`` masters (and ``replicas`` replicas of each) on free loopback ports."""

    def __init__(
        self,
        data_dir: Path,
        masters: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int = _NODE_TIMEOUT_MS,
        appendonly: bool = True,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replicas")
        self._data_dir = Path(data_dir).resolve()
        self._masters = masters
        options = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # A cluster that lost a master keeps serving the slots it still covers.
            "--cluster-require-full-coverage", "no",
        )  # fmt: skip
        self.nodes: list[EmbeddedValkey] = [
            EmbeddedValkey(
                self._data_dir / f"node{index}", appendonly=appendonly, extra_args=options
            )
            for index in range(masters * (1 + replicas))
        ]
        """Every node, masters first, then the replicas of master 0, 1, ... in turn."""

    @property
    def masters(self) -> list[EmbeddedValkey]:
        return self.nodes[: self._masters]

    @property
    def nodes_env(self) -> str:
        """``host:port,host:port,...`` of every node: REDIS_CLUSTER_NODES."""
        return ",".join(f"{node.host}:{node.port}" for node in self.nodes)

    @property
    def url(self) -> str:
        """``redis+cluster://host:port,...``: a REDIS_URL in cluster mode."""
        return f"redis+cluster://{self.nodes_env}"

    def start(self, timeout: float = 20.0) -> None:
        """Start every node; form the cluster the first time (a restart rejoins from
        ``nodes.conf``); return once every slot is served (ValkeyStartError otherwise)."""
        fresh = not any((node.data_dir / "nodes.conf").exists() for node in self.nodes)
        for node in self.nodes:
            node.start()
        if fresh:
            self._form()
        self.wait_ok(timeout)

    def _form(self) -> None:
        first = self.nodes[0]
        per_master, extra = divmod(CLUSTER_SLOTS, self._masters)
        start = 0
        for index, master in enumerate(self.masters):
            end = start + per_master + (1 if index < extra else 0) - 1
            with _client(master) as client:
                client.cluster("ADDSLOTSRANGE", start, end)
            start = end + 1
        with _client(first) as client:
            for node in self.nodes[1:]:
                client.cluster("MEET", node.host, node.port)
        self._wait_known(timeout=10.0)
        for index, replica in enumerate(self.nodes[self._masters :]):
            master = self.masters[index % self._masters]
            with _client(master) as client:
                master_id = client.cluster("MYID")
            with _client(replica) as client:
                client.cluster("REPLICATE", master_id)

    def _wait_known(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if all(_known_nodes(node) >= len(self.nodes) for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise ValkeyStartError("the cluster's nodes did not all meet in time")
            time.sleep(0.05)

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with every slot assigned."""
        deadline = time.monotonic() + timeout
        while True:
            states = [_cluster_info(node) for node in self.nodes if node.running]
            if states and all(
                info.get("cluster_state") == "ok"
                and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
                for info in states
            ):
                return
            if time.monotonic() > deadline:
                raise ValkeyStartError(f"the cluster is not ok: {states}")
            time.sleep(0.05)

    def flush(self) -> None:
        """Empty every master (the replicas follow)."""
        for master in self.masters:
            if master.running:
                with _client(master) as client:
                    client.flushall()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

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
        return f"EmbeddedValkeyCluster({self.url}, dir={str(self._data_dir)!r})"


@contextmanager
def _client(node: EmbeddedValkey) -> Iterator[redis.Redis]:
    client = redis.Redis(host=node.host, port=node.port, socket_timeout=5, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def _known_nodes(node: EmbeddedValkey) -> int:
    return int(_cluster_info(node).get("cluster_known_nodes", "0"))


def _cluster_info(node: EmbeddedValkey) -> dict[str, str]:
    try:
        with _client(node) as client:
            text = client.cluster("INFO")
    except redis.RedisError:
        return {}
    if isinstance(text, dict):  # some redis-py versions parse it
        return {str(k): str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)
