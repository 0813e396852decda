"""The REST server's own defences: trusted proxies, header and idle timeouts, connection caps.

uvicorn alone trusts `X-Forwarded-For` from 127.0.0.1 by default, waits forever for the
headers of a request on a fresh connection (and for a request body that stops arriving),
and lets one client open any number of connections. :func:`uvicorn_options` gives the
options of a uvicorn ``Config`` that close those holes, from :class:`RestEdgeSettings`:

- forwarded headers (`X-Forwarded-For`, `X-Forwarded-Proto`) are honoured only from the
  configured proxies; by default from nobody, so the client address the access log and the
  login throttle see is the connection's peer;
- a connection must deliver the complete headers of each request within ``header_timeout``
  seconds of opening (first request) or of its first byte (later ones);
- a connection is closed after ``idle_timeout`` seconds without a byte while it sits
  between requests, while the app waits for the rest of a request body, or while the client
  does not read the response;
- one client address may hold at most ``max_connections_per_client`` connections; further
  ones get a 429 problem+json and are closed. Connections from a trusted proxy are not
  capped (the proxy carries many clients; cap them there).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from services.common.settings import RestEdgeSettings

__all__ = ["RestEdgeSettings", "guarded_protocol", "uvicorn_options"]

logger = logging.getLogger(__name__)

_REFUSED_LINGER_SECONDS = 0.5


def uvicorn_options(settings: RestEdgeSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` applying ``settings``."""
    return {
        # Forwarded headers only from configured proxies; uvicorn would otherwise trust
        # 127.0.0.1 (or $FORWARDED_ALLOW_IPS) by default.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "timeout_keep_alive": max(1, round(settings.idle_timeout)),
        "http": guarded_protocol(settings),
    }


def _problem_response(status: int, reason: str, detail: str, retry_after: int) -> bytes:
    # Imported here: the generated runtime loads Connexion, which command-line tools importing
    # this module (through the settings) need not pay for.
    from missive.rest._runtime import problem_document

    body = json.dumps(problem_document(status, reason, detail)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {retry_after}\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    return head + body


class _CoalescedWrites:
    """The transport uvicorn's protocol writes through: what it writes in one turn of the event
    loop goes to the socket in one write, at the end of the turn.

    uvicorn writes a response's head and its body separately, each a ``send`` on a socket with
    Nagle's algorithm off: two TCP segments, two system calls here and two wake-ups of the
    client. Both are written in the same turn (the view's reply is complete), so they leave as
    one. Closing writes what is pending first; aborting drops it, as it drops the transport's
    own buffer. Everything else is the transport's.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _GuardedHTTPProtocol(asyncio.Protocol):
    """uvicorn's HTTP protocol wrapped with the limits; :func:`guarded_protocol` configures it."""

    settings: ClassVar[RestEdgeSettings]
    base: ClassVar[type[Any]]
    open_per_client: ClassVar[Counter[str]]
    tick: ClassVar[float]

    def __init__(self, **kwargs: Any) -> None:
        self.inner: Any = self.base(**kwargs)
        self.loop: asyncio.AbstractEventLoop = self.inner.loop
        self.transport: asyncio.Transport | None = None
        self.client = "unknown"
        self.counted = False
        self.refused = False
        self.header_started: float | None = None
        self.last_received = 0.0
        self.write_paused_at: float | None = None
        self.watchdog: asyncio.TimerHandle | None = None

    # -- connection life ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        now = self.loop.time()
        self.header_started = self.last_received = now
        if not self.settings.is_trusted_proxy(self.client):
            self.open_per_client[self.client] += 1
            self.counted = True
            if self.open_per_client[self.client] > self.settings.max_connections_per_client:
                self._refuse(transport)
                return
        self.inner.connection_made(_CoalescedWrites(transport, self.loop))
        self.watchdog = self.loop.call_later(self.tick, self._check)

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.refused = True
        limit = self.settings.max_connections_per_client
        logger.warning("refused a REST connection from %s: %d already open", self.client, limit)
        detail = f"This client already has {limit} open connections; close some and retry."
        transport.write(_problem_response(429, "Too Many Requests", detail, 1))
        # Linger briefly, reading and discarding, so the client reads the answer rather
        # than a reset caused by closing on its unread request.
        self.loop.call_later(_REFUSED_LINGER_SECONDS, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.counted:
            self.counted = False
            self.open_per_client[self.client] -= 1
            if self.open_per_client[self.client] <= 0:
                del self.open_per_client[self.client]
        if not self.refused:
            self.inner.connection_lost(exc)

    # -- data ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        now = self.loop.time()
        self.last_received = now
        before = self.inner.cycle
        if self.header_started is None and _between_requests(before):
            self.header_started = now  # the first byte of the next request
        self.inner.data_received(data)
        if self.inner.cycle is not before:
            self.header_started = None  # that request's headers are complete

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.write_paused_at = self.loop.time()
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused_at = None
        if not self.refused:
            self.inner.resume_writing()

    # -- the watchdog -------------------------------------------------------------------

    def _check(self) -> None:
        self.watchdog = None
        transport = self.transport
        if transport is None:
            return
        now = self.loop.time()
        paused = self.write_paused_at
        if paused is not None and now - paused > self.settings.idle_timeout:
            # A closing transport still waits for its unread output to drain: drop it.
            logger.info(
                "closed a REST connection from %s: response not read for %gs",
                self.client,
                self.settings.idle_timeout,
            )
            transport.abort()
            return
        if transport.is_closing():
            if paused is not None:  # closing, but stuck behind unread output
                self.watchdog = self.loop.call_later(self.tick, self._check)
            return
        reason = self._expired(now)
        if reason:
            logger.info("closed a REST connection from %s: %s", self.client, reason)
            transport.close()
            return
        self.watchdog = self.loop.call_later(self.tick, self._check)

    def _expired(self, now: float) -> str:
        cycle = self.inner.cycle
        if _between_requests(cycle):
            if self.header_started is not None:
                if now - self.header_started > self.settings.header_timeout:
                    return f"no complete request headers within {self.settings.header_timeout:g}s"
            elif (
                now - self.last_received > self.settings.idle_timeout + self.settings.header_timeout
            ):
                return "idle"  # uvicorn's keep-alive timeout normally closes it first
            return ""
        if getattr(cycle, "more_body", False) and now - self.last_received > (
            self.settings.idle_timeout
        ):
            return f"request body stalled for {self.settings.idle_timeout:g}s"
        return ""


def guarded_protocol(settings: RestEdgeSettings, base: type[Any] = AutoHTTPProtocol) -> type[Any]:
    """An asyncio protocol class wrapping uvicorn's HTTP protocol ``base`` with the limits.

    It keeps the open connections per client of one server, so call it once per server.
    """
    attributes = {
        "settings": settings,
        "base": base,
        "open_per_client": Counter[str](),
        "tick": max(0.05, min(settings.header_timeout, settings.idle_timeout) / 4),
    }
    return type("GuardedHTTPProtocol", (_GuardedHTTPProtocol,), attributes)


def _between_requests(cycle: Any) -> bool:
    """No request in progress: none yet, or the last one answered."""
    return cycle is None or bool(cycle.response_complete)
