"""The REST health operation, answered the same way by every service's REST adapter."""

from __future__ import annotations

import logging
from typing import Literal, TypedDict

import redis.exceptions
from missive.rest._runtime import Reply

from services.common.bootstrap import Readiness

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
