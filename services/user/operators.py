"""Grant or remove the operator role: ``python -m services.user.operators grant|revoke EMAIL``.

Operators are the only users who may list every account (REST ``GET /users``). The role is
kept in the account's own record, so deleting the account removes it and an address registered
again later starts without it. There is deliberately no API to change it: run this with the
same ``REDIS_URL`` / ``USER_REDIS_DB`` (or ``REDIS_CLUSTER_NODES``) as UserService.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime

from services.common.domain import DomainError
from services.common.errors import ConfigError
from services.common.redis import RedisClient, create_cluster, create_redis
from services.user.cluster_store import ClusterUserStore
from services.user.passwords import Passwords
from services.user.service import OPERATOR, UserService, UserStore
from services.user.settings import Settings
from services.user.store import RedisUserStore


class _NoTokens:
    def issue(  # pragma: no cover - never called
        self, email: str, account_id: str = "", token_version: int = 1
    ) -> tuple[str, datetime]:
        raise RuntimeError("the operators tool issues no tokens")


async def set_role(environ: Mapping[str, str], email: str, role: str) -> str:
    """Apply the role; the normalised email it was applied to."""
    settings = Settings.from_env(environ)
    common = settings.common
    redis: RedisClient
    store: UserStore
    if common.redis_cluster:  # REDIS_CLUSTER_NODES or a redis+cluster:// URL: the cluster layout
        redis = create_cluster(common.redis_url, client_name="operators")
        store = ClusterUserStore(redis)
    else:
        redis = create_redis(common.redis_url, settings.redis_db, client_name="operators")
        store = RedisUserStore(redis)
    try:
        service = UserService(store, Passwords(settings.hashing, 1), _NoTokens())
        return (await service.set_role(email, role)).email
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.user.operators",
        description="Grant or remove the operator role (may list every user).",
    )
    parser.add_argument("action", choices=["grant", "revoke"])
    parser.add_argument("email")
    args = parser.parse_args(argv)
    role = OPERATOR if args.action == "grant" else ""
    try:
        email = asyncio.run(set_role(environ, args.email, role))
    except (DomainError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{email}: {'operator' if role else 'ordinary user'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
