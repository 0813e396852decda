"""What every service's REST adapter shares: its base (the domain service and the health
operation) and the factory of its Connexion app with the shared edge."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, Literal, Protocol, TypedDict, TypeVar

import redis.exceptions
from connexion import AsyncApp
from missive.rest._runtime import DEFAULT_MAX_BODY_BYTES, Reply

from services.common.auth import TokenVerifier
from services.common.bootstrap import Readiness
from services.common.rest_edge import bearer_verifier, install_edge
from services.common.sessions import Sessions

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

logger = logging.getLogger(__name__)


class HealthBody(TypedDict):
    """The contracts' HealthStatus (the same schema in every OpenAPI document)."""

    status: Literal["SERVING", "NOT_SERVING"]


async def health_reply(ready: Readiness) -> Reply[HealthBody]:
    """SERVING when ``ready`` says so; the contract's 503 NOT_SERVING body (not a problem)
    when it does not or Redis cannot be reached."""
    try:
        serving = await ready()
    except (redis.exceptions.RedisError, OSError) as exc:
        logger.warning("health: Redis unreachable: %s", exc)
        serving = False
    if serving:
        return Reply({"status": "SERVING"})
    return Reply({"status": "NOT_SERVING"}, status=503)


class RestFactory(Protocol[T_contra]):
    """A service's ``create_rest_app``: its REST API over the domain service."""

    def __call__(
        self,
        service: T_contra,
        verifier: TokenVerifier,
        ready: Readiness,
        sessions: Sessions | None = ...,
        *,
        max_body_bytes: int = ...,
    ) -> AsyncApp: ...


class RestAdapter(Generic[T]):
    """The base of a service's REST adapter: the domain service its operations call, and the
    health operation every contract has. Put it before the generated interface
    (``class MessageRestApi(RestAdapter[MessageService], MessageApi)``)."""

    def __init__(self, service: T, ready: Readiness) -> None:
        self._service = service
        self._ready = ready

    async def health(self) -> Reply[HealthBody]:
        return await health_reply(self._ready)


def rest_app_factory(
    adapter: Callable[[T, Readiness], RestAdapter[T]], create_app: Callable[..., AsyncApp]
) -> RestFactory[T]:
    """A service's ``create_rest_app``: its generated ``create_app`` over ``adapter``, with the
    shared edge (request ids, bearer tokens checked by ``verifier`` and, with ``sessions``,
    against their account: revoked tokens and tokens of deleted accounts get 401)."""

    def create_rest_app(
        service: T,
        verifier: TokenVerifier,
        ready: Readiness,
        sessions: Sessions | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> AsyncApp:
        app = create_app(
            adapter(service, ready),
            verify_token=bearer_verifier(verifier, sessions),
            max_body_bytes=max_body_bytes,
        )
        return install_edge(app)

    return create_rest_app
