"""Call policy shared by every operation: token renewal before expiry, and bounded retries.

A call is attempted, and attempted again (with backoff, at most ``config.retries`` more times)
only when it failed with ``Unavailable`` and repeating it is safe. With a kept password the
token is renewed shortly before it expires, and once more if a call is refused as
unauthenticated anyway (a clock skew, or a key rotation).

The blocking twin ``_core.py`` is generated from this file by ``python -m codegen``
(``codegen/sdk_sync.py``), so edit this one.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from missive_client import _ops
from missive_client._async_transport import AsyncTransport
from missive_client._calls import Call
from missive_client._config import ClientConfig
from missive_client._errors import Unauthenticated, Unavailable
from missive_client._models import Token
from missive_client._session import Session
from missive_client._wire import backoff

__all__ = ["AsyncCore"]

T = TypeVar("T")


class AsyncCore:
    """The state behind one :class:`AsyncClient`: configuration, session and transport."""

    def __init__(self, config: ClientConfig, session: Session) -> None:
        self.config = config
        self.session = session
        self.transport = AsyncTransport(config, session)
        self._renewal = asyncio.Lock()

    async def login(self, email: str, password: str, keep_password: bool) -> Token:
        """Sign in and make the token the session's."""
        token = await self.run(_ops.login(self.config.transport, email, password))
        self.session.signed_in(token, password if keep_password else None)
        return token

    async def renew(self, stale: str | None = None) -> None:
        """Sign in again with the kept password (once, however many tasks ask)."""
        async with self._renewal:
            if stale is not None and self.session.raw_token != stale:
                return  # another task renewed it meanwhile
            email, password = self.session.credentials
            token = await self.run(_ops.login(self.config.transport, email, password))
            self.session.signed_in(token, password)

    async def ensure_fresh(self) -> None:
        """Renew the token if it expires within the configured margin."""
        if self.session.needs_refresh(self.config.refresh_margin):
            await self.renew(self.session.raw_token)

    async def run(self, call: Call[T]) -> T:
        """Execute ``call`` with the token policy and retries."""
        attempt = 0
        renewed = False
        while True:
            if call.auth:
                await self.ensure_fresh()
            sent_with = self.session.raw_token
            try:
                return await self.transport.execute(call)
            except Unavailable:
                if not call.retry_safe or attempt >= self.config.retries:
                    raise
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            except Unauthenticated:
                if not call.auth or renewed or not self.session.can_refresh:
                    raise
                await self.renew(sent_with)
                renewed = True
