"""A page of users is one Redis round trip whatever its size, and a user one round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.common.domain import Principal
from services.common.paging import MAX_PAGE_SIZE
from services.user.keys import USERS_INDEX, user_key
from services.user.models import StoredUser
from services.user.records import decode_user
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
        before = trips.count
        response = await client.get(f"/users/{email}")
        assert response.status_code == 200 and response.json()["email"] == email
        assert trips.count - before == 1
