"""The REST edge: bearer-token verification for Connexion and DomainError → problem+json."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from connexion import AsyncApp
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem

from services.common.auth import TokenVerifier
from services.common.domain import DomainError, Principal, RateLimited, Unauthenticated
from services.common.redis import unavailable_reason

logger = logging.getLogger(__name__)


def bearer_verifier(verifier: TokenVerifier) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """The `verify_token` of a generated create_app: claims of a valid user token, else None."""

    async def verify(token: str) -> dict[str, Any] | None:
        try:
            principal = verifier.verify_user(token)
        except Unauthenticated:
            return None
        return {"sub": principal.name, "kind": principal.kind}

    return verify


def principal(token_info: dict[str, Any]) -> Principal:
    """The caller of a REST operation, from the claims bearer_verifier returned."""
    return Principal("user", str(token_info["sub"]))


async def _domain_problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, DomainError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return problem(exc.http_status, exc.title, exc.message, headers=headers)


async def _redis_problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    reason = unavailable_reason(exc)
    if reason is None:
        logger.error("redis error: %s", exc)
        return problem(500, "Internal Server Error", "The request could not be completed.")
    logger.warning("redis unavailable: %s", exc)
    return problem(503, "Service Unavailable", f"{reason[0].upper()}{reason[1:]}.")


def install_error_handlers(app: AsyncApp) -> AsyncApp:
    """Translate domain errors and Redis outages once, for every operation of `app`."""
    app.add_error_handler(DomainError, _domain_problem)
    app.add_error_handler(redis.exceptions.RedisError, _redis_problem)
    return app
