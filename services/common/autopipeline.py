"""Auto-pipelining: the Redis commands that concurrent calls issue in one event-loop tick are
written as one request on one connection, and their replies are read together.

A hot path that many concurrent calls run (SendMessage's one script) pays redis-py's generic
path per command: a pooled connection taken and given back, a write and a read of its own,
timeout scopes, a task switch per reply. :class:`AutoPipeline` instead queues each command,
writes every command queued during the current tick with one ``write`` once the tick ends, and
hands each caller its reply as the replies of the batch arrive in order (hiredis parses them;
Redis answers the commands of one connection in the order they were sent). Redis runs them as
it would have run the same commands sent one by one on separate connections: each on its own,
not as a transaction.

The guarantees of the service's client (services.common.redis.create_redis) stay:

* **Errors per command.** An error reply fails only the command it answers, as the exception
  redis-py raises for it (``NoScriptError``, ``OutOfMemoryError``, ``ResponseError``...).
* **Bounded waits, never a re-send.** Each batch must be answered within the client's socket
  timeout; if it is not, every command written on the connection and not yet answered fails
  with ``TimeoutError``, and the connection is dropped (its later replies can no longer be
  matched to their commands). A lost connection fails those commands with ``ConnectionError``.
  Either way whether Redis applied them is unknown, so none is sent again: the caller answers
  UNAVAILABLE and its client decides. A later command opens a new connection.
* A caller that gives up before its command was written (its call was cancelled) is dropped
  from the batch, so nothing of it reaches Redis.

Only plain TCP and Unix-socket connections are pipelined this way (:meth:`AutoPipeline.of`):
a client over TLS, with a credential provider or a custom connection class keeps redis-py's own
path. Commands that block (``XREADGROUP BLOCK``, ``BLPOP``), transactions and Pub/Sub must not
go through a pipeline: a command waiting holds up every reply behind it.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, InvalidResponse, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

__all__ = ["AutoPipeline", "PipelinedScript"]

_NO_REPLY: Final = object()  # hiredis: no complete reply in the buffer yet


def _pack(command: tuple[EncodableT, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def _reply_error(message: str) -> RedisError:
    """The exception redis-py raises for an error reply (parsed as its parsers do)."""
    error: RedisError = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


class _Connection(asyncio.Protocol):
    """One connection: commands queued this tick, commands written and waiting for replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None, name: str) -> None:
        self.loop = loop
        self._timeout = timeout
        self._name = name
        self._reader = hiredis.Reader(
            encoding="utf-8",
            replyError=_reply_error,
            protocolError=InvalidResponse,
            notEnoughData=_NO_REPLY,
        )
        self._transport: asyncio.Transport | None = None
        self._queued: list[bytes] = []
        self._queued_futures: list[asyncio.Future[Any]] = []
        self._flush: asyncio.Handle | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        # (last command of a batch, the timer that fails the connection if it is not answered)
        self._deadlines: deque[tuple[asyncio.Future[Any], asyncio.TimerHandle]] = deque()
        self.broken: Exception | None = None
        self.requests = 0  # writes made (one per batch)
        self.lost: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting, deadlines = self._waiting, self._deadlines
        while True:
            try:
                reply = reader.gets()
            except UnicodeDecodeError as exc:
                reply = exc  # that reply is consumed: its command fails as with redis-py
            except Exception as exc:  # a protocol error
                # The replies after it can no longer be matched to their commands.
                self._break(ConnectionError(f"Unreadable reply from {self._name}: {exc!r}"))
                return
            if reply is _NO_REPLY:
                return
            if not waiting:
                self._break(ConnectionError(f"{self._name} sent a reply to no command"))
                return
            future = waiting.popleft()
            if deadlines and deadlines[0][0] is future:
                deadlines.popleft()[1].cancel()
            if not future.done():  # else its caller gave up; the reply is dropped
                if isinstance(reply, RedisError | UnicodeDecodeError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        self._break(ConnectionError(f"Connection to {self._name} lost{reason}"))
        if not self.lost.done():
            self.lost.set_result(None)

    # -- commands -----------------------------------------------------------------------------

    def submit(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed command for this tick's batch; the future of its reply."""
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.broken is not None:
            future.set_exception(self.broken)
            return future
        self._queued.append(packed)
        self._queued_futures.append(future)
        if self._flush is None:
            self._flush = self.loop.call_soon(self._write)
        return future

    def _write(self) -> None:
        """Write every command queued this tick, as one request."""
        self._flush = None
        packed, futures = self._queued, self._queued_futures
        self._queued, self._queued_futures = [], []
        if self.broken is not None or self._transport is None:
            return  # _break failed them
        if any(future.done() for future in futures):  # callers that gave up: not sent
            kept = [(p, f) for p, f in zip(packed, futures, strict=True) if not f.done()]
            if not kept:
                return
            packed, futures = [p for p, _ in kept], [f for _, f in kept]
        self._waiting.extend(futures)
        transport = self._transport
        if transport.is_closing():  # the server closed it; connection_lost is on its way
            self._break(ConnectionError(f"Connection to {self._name} closed"))
            return
        try:
            transport.write(b"".join(packed))
        except Exception as exc:
            self._break(ConnectionError(f"Error writing to {self._name}: {exc!r}"))
            return
        self.requests += 1
        if self._timeout is not None:
            last = futures[-1]
            self._deadlines.append((last, self.loop.call_later(self._timeout, self._expired, last)))

    def _expired(self, last: asyncio.Future[Any]) -> None:
        if self.broken is None:
            self._break(
                RedisTimeoutError(f"Timeout reading from {self._name} ({self._timeout:g} s)")
            )

    def _break(self, error: Exception) -> None:
        """Fail every command not answered yet with ``error`` and drop the connection."""
        if self.broken is None:
            self.broken = error
        for _, timer in self._deadlines:
            timer.cancel()
        self._deadlines.clear()
        pending = [*self._waiting, *self._queued_futures]
        self._waiting.clear()
        self._queued, self._queued_futures = [], []
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def close(self) -> None:
        """Fail what is pending and close the socket (waits until it is closed)."""
        self._break(ConnectionError(f"Connection to {self._name} closed by the client"))
        if self._transport is not None:
            await asyncio.shield(self.lost)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a connection attempt's failure seen: the callers waiting on it raise it."""
    if not task.cancelled():
        task.exception()


class AutoPipeline:
    """Commands of concurrent callers batched per event-loop tick on one connection (see the
    module's documentation). Connects on first use; ``aclose`` closes it."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        client_name: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._handshake: list[tuple[EncodableT, ...]] = []
        if password:
            self._handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if client_name:
            self._handshake.append(("CLIENT", "SETNAME", client_name))
        if db:
            self._handshake.append(("SELECT", db))
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self.name = path if path is not None else f"{host}:{port}"
        self._connection: _Connection | None = None
        self._requests_before = 0  # requests of the connections before the current one
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @classmethod
    def of(cls, client: Redis) -> AutoPipeline | None:
        """A pipeline to the server and database of ``client`` (as created by
        services.common.redis.create_redis), or None if its connections are not plain TCP or
        Unix sockets (TLS, a credential provider, a connection class of its own)."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        if kwargs.get("credential_provider") is not None or kwargs.get("protocol") not in (
            None,
            2,
            "2",
        ):
            return None
        timeout = kwargs.get("socket_timeout")
        connect_timeout = kwargs.get("socket_connect_timeout") or timeout
        return cls(
            host=kwargs.get("host", "localhost"),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path")
            if pool.connection_class is UnixDomainSocketConnection
            else None,
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            client_name=kwargs.get("client_name"),
            timeout=None if timeout is None else float(timeout),
            connect_timeout=None if connect_timeout is None else float(connect_timeout),
        )

    async def execute_command(self, *args: EncodableT) -> Any:
        """Send one command with the others of this tick; its reply (str for bulk strings)."""
        connection = self._connection
        if connection is None or connection.broken is not None:
            connection = await self._connected()
        elif connection.loop is not asyncio.get_running_loop():
            connection = await self._connected()
        return await connection.submit(_pack(args))

    @property
    def requests(self) -> int:
        """Requests written so far, each one batch of commands (connection handshakes not
        counted)."""
        current = self._connection.requests if self._connection is not None else 0
        return self._requests_before + current

    def script(self, text: str, sha: str) -> PipelinedScript:
        """A Lua script (``sha`` its SHA1, as redis-py computes it) run with EVALSHA, EVAL
        where the server does not have it cached."""
        return PipelinedScript(self, text, sha)

    async def _connected(self) -> _Connection:
        if self._closed:
            raise ConnectionError(f"the pipeline to {self.name} is closed")
        loop = asyncio.get_running_loop()
        current = self._connection
        if current is not None and current.broken is None and current.loop is loop:
            return current
        connecting = self._connecting
        if connecting is None or connecting.get_loop() is not loop:
            # A task of its own, shared by every caller waiting: one caller giving up (its call
            # cancelled) neither cancels the connection attempt nor fails the others.
            connecting = self._connecting = loop.create_task(self._replace(loop))
            connecting.add_done_callback(_retrieved)
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connecting.cancelled() and task is not None and not task.cancelling():
                # The attempt was cancelled by aclose, not this caller.
                raise ConnectionError(f"the pipeline to {self.name} is closed") from None
            raise

    async def _replace(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """A new connection in place of the current one (broken, or of another loop)."""
        try:
            connection = await self._open(loop)
        finally:
            self._connecting = None
        if self._closed:  # closed while connecting
            await connection.close()
            raise ConnectionError(f"the pipeline to {self.name} is closed")
        current = self._connection
        if current is not None:
            self._requests_before += current.requests
            if current.loop is loop:
                await current.close()
        connection.requests = 0  # the handshake is not counted
        self._connection = connection
        return connection

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        def protocol() -> _Connection:
            return _Connection(loop, self._timeout, self.name)

        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path is not None:
                    _, connection = await loop.create_unix_connection(protocol, self._path)
                else:
                    transport, connection = await loop.create_connection(
                        protocol, self._host, self._port
                    )
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"Error connecting to {self.name}: {exc}") from exc
        try:
            if self._handshake:
                replies = [connection.submit(_pack(c)) for c in self._handshake]
                async with asyncio.timeout(self._connect_timeout):
                    await asyncio.gather(*replies)
        except BaseException as exc:
            await connection.close()
            if isinstance(exc, TimeoutError):
                raise ConnectionError(f"{self.name} did not answer the handshake") from exc
            raise
        return connection

    async def aclose(self) -> None:
        """Fail what is pending and close the connection; later commands fail."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None and connecting.get_loop() is asyncio.get_running_loop():
            connecting.cancel()
            await asyncio.wait([connecting])
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


class PipelinedScript:
    """A Lua script run through an :class:`AutoPipeline`, called like redis-py's AsyncScript."""

    def __init__(self, pipeline: AutoPipeline, text: str, sha: str) -> None:
        self._pipeline = pipeline
        self.script = text
        self.sha = sha

    async def __call__(
        self, keys: Sequence[EncodableT] = (), args: Iterable[EncodableT] = ()
    ) -> Any:
        values = (len(keys), *keys, *args)
        try:
            return await self._pipeline.execute_command("EVALSHA", self.sha, *values)
        except NoScriptError:
            # Not cached on the server (restarted, SCRIPT FLUSH): EVAL caches it. Nothing of
            # the script ran, so running it now is its first run.
            return await self._pipeline.execute_command("EVAL", self.script, *values)
