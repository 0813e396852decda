"""A loopback TCP proxy that can hold back the next reply, to provoke client timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit


class DelayProxy:
    """Forwards 127.0.0.1:<port> to a target; ``delay_next_reply`` stalls one reply chunk."""

    def __init__(self, target_host: str, target_port: int, source_host: str | None = None) -> None:
        """``source_host``: connect to the target from this local address (e.g. 127.0.0.2),
        so the target sees another client host."""
        self._target = (target_host, target_port)
        self._source = (source_host, 0) if source_host else None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._delay = 0.0
        self.connections = 0

    @classmethod
    def for_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        return cls(parts.hostname, parts.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def delay_next_reply(self, seconds: float) -> None:
        """Hold the next chunk the target sends (on any connection) for ``seconds``."""
        self._delay = seconds

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Cancel the pipes, not the handlers: asyncio logs an error for a cancelled
        # client_connected_cb task. Each handler then closes its sockets and returns.
        for pipe in list(self._pipes):
            pipe.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        upstream_w: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Task[None]] = []
        try:
            upstream_r, upstream_w = await asyncio.open_connection(
                *self._target, local_addr=self._source
            )
            pipes = [
                asyncio.create_task(self._pipe(client_r, upstream_w, replies=False)),
                asyncio.create_task(self._pipe(upstream_r, client_w, replies=True)),
            ]
            self._pipes.update(pipes)
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            if pipes:
                await asyncio.wait(pipes)
            self._pipes.difference_update(pipes)
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            self._handlers.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if replies and self._delay:
                    delay, self._delay = self._delay, 0.0
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
