"""REST calls of the asyncio transport: the generated clients over httpx.AsyncClient.

The blocking twin ``_rest.py`` is generated from this file by ``python -m codegen``
(``codegen/sdk_sync.py``), so edit this one.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar, cast

import httpx

from missive_client._calls import SERVICE_TITLES, RestCall, ServiceName
from missive_client._config import ClientConfig
from missive_client._errors import MissiveError, ServerError
from missive_client._models import ServiceHealth
from missive_client._session import Session
from missive_client._wire import (
    SEND_TOKEN,
    USER_AGENT,
    BearerAuth,
    client_closed,
    http_transport_error,
    new_rest_client,
    problem_error,
    rest_health_endpoint,
    serving_status,
)

__all__ = ["AsyncRest"]

T = TypeVar("T")


class AsyncRest:
    """The REST clients of one transport, one per service, created on first use."""

    def __init__(self, config: ClientConfig, session: Session) -> None:
        self.config = config
        self._session = session
        self._lock = threading.Lock()
        self._clients: dict[ServiceName, Any] = {}
        self._closed = False

    def url(self, service: ServiceName) -> str:
        """Base URL of ``service``'s REST API."""
        return cast("str", getattr(self.config, f"{service}_url"))

    def client(self, service: ServiceName) -> Any:
        """The generated REST client of ``service``, over an httpx client that maps errors."""
        with self._lock:
            if self._closed:
                raise client_closed()
            if service not in self._clients:
                http = httpx.AsyncClient(
                    base_url=self.url(service),
                    timeout=self.config.timeout,
                    auth=BearerAuth(self._session),
                    headers={"User-Agent": USER_AGENT},
                    event_hooks={"response": [_raise_for_problem]},
                )
                self._clients[service] = new_rest_client(service).set_async_httpx_client(http)
            return self._clients[service]

    async def execute(self, call: RestCall[T]) -> T:
        """Run one call once; any failure is a MissiveError."""
        url = self.url(call.service)
        title = SERVICE_TITLES[call.service]
        token = SEND_TOKEN.set(call.auth)
        try:
            response = await call.asyncio(client=self.client(call.service), **call.kwargs)
        except MissiveError as exc:
            exc.service = exc.service or call.service
            raise
        except httpx.TransportError as exc:
            raise http_transport_error(exc, call.service, url) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"{title} answered malformed JSON", service=call.service) from exc
        finally:
            SEND_TOKEN.reset(token)
        if response.parsed is None and response.status_code != 204:
            raise ServerError(
                f"{title} answered an unexpected HTTP {response.status_code}", service=call.service
            )
        return call.convert(response.parsed)

    async def health(self, service: ServiceName, seconds: float) -> ServiceHealth:
        """``GET /health`` of ``service``, waiting ``seconds`` at most."""
        url = self.url(service)
        title = SERVICE_TITLES[service]
        endpoint = rest_health_endpoint(service)
        token = SEND_TOKEN.set(False)
        try:
            client = self.client(service)
            http = client.get_async_httpx_client()
            response = await http.request(**endpoint._get_kwargs(), timeout=seconds)
            reply = endpoint._build_response(client=client, response=response)
        except MissiveError as exc:
            return ServiceHealth(title, "rest", url, "NOT_SERVING", str(exc))
        except httpx.TransportError as exc:
            error = http_transport_error(exc, service, url)
            return ServiceHealth(title, "rest", url, "UNREACHABLE", str(error))
        finally:
            SEND_TOKEN.reset(token)
        status = getattr(getattr(reply.parsed, "status", None), "value", "NOT_SERVING")
        return ServiceHealth(title, "rest", url, serving_status(status == "SERVING"))

    async def close(self) -> None:
        """Close every HTTP client; later calls raise the closed-client error."""
        with self._lock:
            self._closed = True
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            await client.get_async_httpx_client().aclose()


async def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    await response.aread()
    error = problem_error(response)
    if error is None:  # pragma: no cover - is_success was checked
        return
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise error from exc
    raise error
