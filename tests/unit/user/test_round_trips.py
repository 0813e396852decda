"""A page of users is one Redis round trip whatever its size, and a user one round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.common.bootstrap import Security, redis_ready
from services.common.domain import Principal
from services.common.paging import MAX_PAGE_SIZE
from services.common.sessions import Sessions
from services.user.api_rest.app import create_rest_app
from services.user.checked import REUSE_SECONDS, CheckedAccounts, take_checked
from services.user.keys import USERS_INDEX, user_key
from services.user.models import StoredUser
from services.user.records import decode_user
from services.user.service import UserService
from services.user.store import RedisUserStore
from tests.helpers.round_trips import RoundTrips
from tests.unit.user.conftest import MakeRest, MakeService

T0 = datetime(2025, 1, 14, 12, 0, 0, 123000, tzinfo=UTC)
EMAILS = [f"user{n:03}@example.com" for n in range(250)]
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"


@pytest.fixture
async def trips(redis_url: str) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips(redis_url, 0)
    yield counted
    await counted.aclose()


@pytest.fixture
def counted(trips: RoundTrips) -> RedisUserStore:
    return RedisUserStore(trips.redis)


async def seed(redis: Redis) -> None:
    """EMAILS registered (created in reverse order), one index entry left without its user."""
    store = RedisUserStore(redis)
    for n, email in enumerate(reversed(EMAILS)):
        account = f"{n:016x}{0:016x}"
        assert await store.create(StoredUser("U", email, HASH, T0, T0, account_id=account))
    await redis.delete(user_key(EMAILS[7]))


async def one_by_one(redis: Redis, offset: int, size: int) -> tuple[list[StoredUser], int, int]:
    """The page read the N+1 way: the index, its size, then each document."""
    emails = await redis.zrange(USERS_INDEX, offset, offset + size - 1)
    total = await redis.zcard(USERS_INDEX)
    users = []
    for email in emails:
        raw = await redis.get(user_key(str(email)))
        if raw is not None:
            users.append(decode_user(str(raw)))
    return users, len(emails), total


@pytest.mark.parametrize("size", [1, 10, MAX_PAGE_SIZE])
async def test_a_page_of_users_is_one_round_trip_whatever_its_size(
    redis: Redis, counted: RedisUserStore, trips: RoundTrips, size: int
) -> None:
    await seed(redis)
    await counted.list_page(0, 1)  # connects and loads the script
    offset, seen = 0, []
    while True:
        assert await trips.of(counted.list_page(offset, size)) == 1
        page = await counted.list_page(offset, size)
        assert page == await one_by_one(redis, offset, size)
        seen += [user.email for user in page[0]]
        if page[1] < size:
            break
        offset += size
    assert seen == [email for email in EMAILS if email != EMAILS[7]]
    assert await counted.list_page(len(EMAILS), size) == ([], 0, len(EMAILS))


async def test_listing_is_one_round_trip_for_a_service_two_for_an_operator(
    redis: Redis, trips: RoundTrips, make_service: MakeService
) -> None:
    await seed(redis)
    service = make_service(store_redis=trips.redis)
    await service.set_role(EMAILS[0], "operator")
    operator = Principal("user", EMAILS[0])
    await service.list_users(None, None)
    for size in (1, 20, MAX_PAGE_SIZE):
        assert await trips.of(service.list_users(size, None)) == 1
        assert await trips.of(service.list_users(size, None, operator)) == 2  # the role, a page


async def test_the_rest_handler_reads_a_user_in_one_round_trip(
    redis: Redis,
    trips: RoundTrips,
    make_service: MakeService,
    make_rest: MakeRest,
    token_for: Callable[[str], str],
) -> None:
    """GET /users/{email} without the account check of the token (Sessions, in __main__: one
    more GET of the same document)."""
    await seed(redis)
    email = EMAILS[3]
    rest = make_rest(make_service(store_redis=trips.redis))
    async with rest.client(token=token_for(email)) as client:
        assert (await client.get(f"/users/{email}")).status_code == 200
        before = trips.total
        response = await client.get(f"/users/{email}")
        assert response.status_code == 200 and response.json()["email"] == email
        assert trips.total - before == 1


@pytest.fixture
def checked_rest(
    trips: RoundTrips, make_service: MakeService, security: Security, redis: Redis
) -> tuple[UserService, Any]:
    """The REST app as services.user.__main__ wires it: every user token checked against its
    account (uncached) by CheckedAccounts, whose read answers GET /users/{email}."""
    service = make_service(store_redis=trips.redis)
    sessions = Sessions(CheckedAccounts(service), ttl_seconds=0)
    return service, create_rest_app(service, security.verifier, redis_ready(redis), sessions)


def _client(app: Any, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://user.test",
        headers={"Authorization": f"Bearer {token}"},
    )


async def _signed_in(service: UserService, email: str) -> str:
    await service.register("Ada", email, "correct horse battery")
    signed = await service.authenticate(email, "correct horse battery", "127.0.0.1")
    assert signed is not None
    return signed.access_token


async def test_get_user_with_its_token_check_is_one_round_trip(
    checked_rest: tuple[UserService, Any], trips: RoundTrips
) -> None:
    """The check of the token reads the user document; the reply is that document."""
    service, app = checked_rest
    email = "ada@example.com"
    token = await _signed_in(service, email)
    async with _client(app, token) as client:
        assert (await client.get(f"/users/{email}")).status_code == 200  # loads the scripts
        for _ in range(3):
            before = trips.total
            response = await client.get(f"/users/{email}")
            assert trips.total - before == 1
            assert response.status_code == 200
            assert response.json()["email"] == email and response.json()["name"] == "Ada"
        # A change is seen by the next request (its own check reads the document again).
        renamed = await client.put(f"/users/{email}", json={"name": "Ada L."})
        assert renamed.status_code == 200
        assert (await client.get(f"/users/{email}")).json()["name"] == "Ada L."
        # Another user's address: 403 as before, and the kept document is not anyone's reply.
        assert (await client.get("/users/bob@example.com")).status_code == 403
        assert (await client.get(f"/users/{email}")).json()["name"] == "Ada L."


async def test_get_user_refuses_a_revoked_token_and_a_deleted_account_as_before(
    checked_rest: tuple[UserService, Any],
) -> None:
    service, app = checked_rest
    email = "ada@example.com"
    token = await _signed_in(service, email)
    async with _client(app, token) as client:
        assert (await client.get(f"/users/{email}")).status_code == 200
        assert (await client.post(f"/users/{email}/revoke_tokens")).status_code == 204
        refused = await client.get(f"/users/{email}")
        assert refused.status_code == 401
    token = (await service.authenticate(email, "correct horse battery", "127.0.0.1")).access_token  # type: ignore[union-attr]
    async with _client(app, token) as client:
        assert (await client.get(f"/users/{email}")).status_code == 200
        assert (await client.delete(f"/users/{email}")).status_code == 204
        gone = await client.get(f"/users/{email}")
        assert gone.status_code == 401


async def test_a_kept_document_is_taken_once_for_its_email_while_fresh(
    make_service: MakeService,
) -> None:
    service = make_service()
    email = "ada@example.com"
    await service.register("Ada", email, "correct horse battery")
    now = [100.0]
    accounts = CheckedAccounts(service, clock=lambda: now[0])
    state = await accounts.account(email)
    assert state is not None and state.account_id
    assert take_checked("bob@example.com") is None  # another email: not used, and dropped
    assert take_checked(email) is None
    await accounts.account(email)
    taken = take_checked(email, clock=lambda: now[0] + REUSE_SECONDS)
    assert taken is not None and taken.email == email
    assert take_checked(email) is None  # once
    await accounts.account(email)
    assert take_checked(email, clock=lambda: now[0] + REUSE_SECONDS + 0.01) is None  # too old
    assert await accounts.account("nobody@example.com") is None
    assert take_checked("nobody@example.com") is None
    # The service answers from a kept document only for the account and version it names.
    user = await service.record(email)
    assert user is not None
    caller = Principal("user", email, user.account_id, user.token_version)
    assert (await service.get(caller, email, checked=user)).name == "Ada"
    stale = replace(user, name="Old", token_version=user.token_version - 1)
    assert (await service.get(caller, email, checked=stale)).name == "Ada"
    other = replace(user, name="Other", account_id="f" * 32)
    assert (await service.get(caller, email, checked=other)).name == "Ada"
