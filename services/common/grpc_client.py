"""Channels to peer services: this service's credential, request ids, keepalive and retries.

:func:`peer_channel` builds the channel one service uses to call another: every call presents
this service's credential (``x-missive-service-token``, checked by the peer's
:class:`services.common.grpc_edge.EdgeInterceptor`) and passes the current request id on
(``x-request-id``), so the peer's log lines carry the id of the work that called it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from services.common.auth import ServiceCredentials
from services.common.channels import client_options
from services.common.logging import REQUEST_ID_HEADER, get_request_id
from services.common.metrics import client_interceptors

__all__ = ["SERVICE_TOKEN_HEADER", "peer_channel", "retry_service_config"]

SERVICE_TOKEN_HEADER = "x-missive-service-token"


class _ServiceToken:
    """Adds this service's credential to the metadata of every call to one peer."""

    def __init__(
        self, credentials: ServiceCredentials, target: str, wait_for_ready: bool | None = None
    ) -> None:
        self.credentials = credentials
        self.target = target
        self.wait_for_ready = wait_for_ready

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(SERVICE_TOKEN_HEADER, self.credentials.token_for(self.target))
        request_id = get_request_id()
        if request_id is not None and metadata.get(REQUEST_ID_HEADER) is None:
            metadata.add(REQUEST_ID_HEADER, request_id)
        wait_for_ready = details.wait_for_ready
        if wait_for_ready is None:
            wait_for_ready = self.wait_for_ready
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, wait_for_ready
        )


# grpc.aio files an interceptor under the first call kind it implements only, so unary and
# streaming calls each need their own interceptor object.
class _UnaryUnaryToken(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: _ServiceToken) -> None:
        self.token = token

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self.token.details(client_call_details), request)


class _UnaryStreamToken(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: _ServiceToken) -> None:
        self.token = token

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self.token.details(client_call_details), request)


def retry_service_config(service: str, methods: Sequence[str]) -> str:
    """gRPC service config retrying UNAVAILABLE (request not processed) on idempotent methods."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": service, "method": m} for m in methods],
                    "retryPolicy": {
                        "maxAttempts": 3,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def peer_channel(
    address: str,
    credentials: ServiceCredentials,
    target: str,
    *,
    retry_service: str | None = None,
    retry_methods: Sequence[str] = (),
    wait_for_ready: bool | None = None,
) -> grpc.aio.Channel:
    """A channel to a peer service that presents this service's credential on every call.

    Keepalive (within the servers' ping policy) detects a silently dropped peer in seconds
    instead of TCP's ~15 minutes; the reconnect backoff is capped at a few hundred ms, so a
    restarted peer is reachable again at once (see :mod:`services.common.channels`).
    ``wait_for_ready=True`` makes each call that has no setting of its own wait, within its
    deadline, for the peer to become reachable instead of failing at once with UNAVAILABLE:
    right for a relay that would retry anyway, wrong for a caller that must answer quickly.
    """
    options: list[tuple[str, Any]] = [
        *client_options(),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.enable_retries", 1),
    ]
    if retry_service and retry_methods:
        options.append(("grpc.service_config", retry_service_config(retry_service, retry_methods)))
    token = _ServiceToken(credentials, target, wait_for_ready)
    return grpc.aio.insecure_channel(
        address,
        options=options,
        interceptors=[*client_interceptors(), _UnaryUnaryToken(token), _UnaryStreamToken(token)],
    )
