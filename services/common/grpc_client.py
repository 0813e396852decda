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
from services.common.channels import client_options, is_multi_target, parse_target
from services.common.logging import REQUEST_ID_HEADER, get_request_id
from services.common.metrics import client_interceptors

__all__ = [
    "SERVICE_TOKEN_HEADER",
    "balanced",
    "grpc_target",
    "peer_channel",
    "retry_service_config",
    "service_config",
]

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


def grpc_target(address: str) -> str:
    """The gRPC target for ``address``: one ``host:port``, a comma-separated list of them, or a
    gRPC name (``dns:///name:port``, ``ipv4:...``, ``ipv6:...``, ``unix:...``).

    A list becomes an ``ipv4:`` (or ``ipv6:``) target, which gRPC resolves to every address
    (``localhost`` counts as 127.0.0.1). ValueError explains a list gRPC cannot take (a host
    name in a list: name the replicas with one ``dns:///`` name instead)."""
    return parse_target(address)


def balanced(address: str) -> bool:
    """Whether ``address`` may name several servers (a list or a resolver name)."""
    return is_multi_target(address)


def service_config(
    retry_service: str | None = None,
    retry_methods: Sequence[str] = (),
    *,
    balance: bool = False,
) -> str:
    """gRPC service config: UNAVAILABLE retried (the request was not processed) on the
    idempotent ``retry_methods`` of ``retry_service``; with ``balance``, ``round_robin`` over
    every address the target resolves to, and the standard health service watched on each
    server, so a replica that is not ready or draining (NOT_SERVING) gets no new calls while
    the others do. (One address keeps gRPC's default, ``pick_first``, which reconnects on the
    next call rather than failing calls until its backoff ends.)"""
    config: dict[str, Any] = {}
    if balance:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
        config["healthCheckConfig"] = {"serviceName": ""}
    if retry_service and retry_methods:
        config["methodConfig"] = [
            {
                "name": [{"service": retry_service, "method": m} for m in retry_methods],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config)


def retry_service_config(service: str, methods: Sequence[str]) -> str:
    """gRPC service config retrying UNAVAILABLE (request not processed) on idempotent methods."""
    return service_config(service, methods)


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

    ``address`` may name several replicas (see :func:`grpc_target`): calls are then spread
    over them (``round_robin``), each replica's health service is watched so that one not
    ready or shutting down gets no new calls, and a retried read goes to another replica.
    """
    options: list[tuple[str, Any]] = [
        *client_options(),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.enable_retries", 1),
    ]
    config = service_config(retry_service, retry_methods, balance=balanced(address))
    if config != "{}":
        options.append(("grpc.service_config", config))
    token = _ServiceToken(credentials, target, wait_for_ready)
    return grpc.aio.insecure_channel(
        grpc_target(address),
        options=options,
        interceptors=[*client_interceptors(), _UnaryUnaryToken(token), _UnaryStreamToken(token)],
    )
