"""Counting the Redis round trips code makes, on a real connection to the real server.

A request is one write to the socket followed by reading its replies: one command, one
pipeline (however many commands it holds) or one script call. The count is taken where
redis-py writes a request, and from the client's auto-pipeline (services.common.autopipeline:
each batch it writes), so the server and the protocol stay untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from services.common.redis import auto_pipeline_of, create_redis


class _CountingConnection(Connection):
    """A TCP connection that counts the requests it writes (``counter`` set per client)."""

    counter: RoundTrips

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:  # the handshake is not a request of the code measured
            await self.connect_check_health(check_health=False)
        self.counter.count += 1
        await super().send_packed_command(command, check_health)


class RoundTrips:
    """A Redis client (as services create it) whose requests are counted."""

    def __init__(self, url: str, db: int) -> None:
        self.count = 0
        # No periodic health-check PING inside a measurement.
        self.redis: Redis = create_redis(url, db, health_check_interval=0)
        pool = self.redis.connection_pool
        if pool.connection_class is not Connection:
            raise ValueError(f"round trips are counted over TCP (redis://), not {url}")
        pool.connection_class = type(
            "CountingConnection", (_CountingConnection,), {"counter": self}
        )

    @property
    def total(self) -> int:
        """Requests written so far, by redis-py and by the client's auto-pipeline."""
        pipeline = auto_pipeline_of(self.redis)
        return self.count + (pipeline.requests if pipeline is not None else 0)

    async def of(self, call: Awaitable[Any]) -> int:
        """How many round trips awaiting ``call`` takes (its result is dropped)."""
        before = self.total
        await call
        return self.total - before

    async def aclose(self) -> None:
        await self.redis.aclose()
