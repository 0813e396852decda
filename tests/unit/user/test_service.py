"""UserService domain logic over a real Valkey: accounts, sign-in, throttling, ownership."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from redis.asyncio import Redis

from services.common.auth import ACCOUNT_ID, KeyRing, TokenVerifier
from services.common.domain import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Principal,
    RateLimited,
)
from services.common.sessions import AccountState
from services.user.keys import account_key, failures_key, known_clients_key, user_key
from services.user.service import UserService
from services.user.settings import HashParams, LoginLimits
from tests.unit.user.conftest import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    CLIENT,
    WRONG_PASSWORD,
    MakeService,
    snapshot,
)

AS_ALICE = Principal("user", ALICE)
AS_BOB = Principal("user", BOB)


async def stored(redis: Redis, email: str = ALICE) -> dict[str, str]:
    raw = await redis.get(user_key(email))
    assert raw is not None
    document: dict[str, str] = json.loads(raw)
    return document


async def test_register_stores_an_argon2id_hash_and_returns_no_password(
    service: UserService, redis: Redis
) -> None:
    info = await service.register("Alice", "  Alice@Example.COM ", ALICE_PASSWORD)
    assert info.email == ALICE
    assert info.created_at == info.updated_at
    assert not hasattr(info, "password") and not hasattr(info, "password_hash")
    document = await stored(redis)
    assert document["password"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert ALICE_PASSWORD not in json.dumps(document)
    assert document["created_at"].endswith("Z")


async def test_register_refuses_a_taken_email_in_any_case(service: UserService) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    with pytest.raises(AlreadyExists):
        await service.register("Other", "ALICE@example.com", BOB_PASSWORD)


async def test_concurrent_registrations_create_one_account(service: UserService) -> None:
    results = await asyncio.gather(
        *(service.register(f"n{i}", ALICE, ALICE_PASSWORD) for i in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))


@pytest.mark.parametrize(
    ("name", "email", "password"),
    [
        ("", ALICE, ALICE_PASSWORD),
        ("n" * 101, ALICE, ALICE_PASSWORD),
        ("bad\ud800", ALICE, ALICE_PASSWORD),
        ("Alice", "not-an-email", ALICE_PASSWORD),
        ("Alice", "a*b@example.com", ALICE_PASSWORD),
        ("Alice", "a:b@example.com", ALICE_PASSWORD),
        ("Alice", ALICE, "short"),
        ("Alice", ALICE, "x" * 129),
    ],
)
async def test_register_rejects_bad_input_and_writes_nothing(
    service: UserService, redis: Redis, name: str, email: str, password: str
) -> None:
    with pytest.raises(InvalidArgument):
        await service.register(name, email, password)
    assert await redis.dbsize() == 0


async def test_authenticate_issues_a_token_for_the_normalised_email(
    service: UserService, keys: Path
) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    result = await service.authenticate(" ALICE@example.com", ALICE_PASSWORD, CLIENT)
    assert result is not None and result.email == ALICE
    principal = TokenVerifier(KeyRing.load(keys, "message")).verify_user(result.access_token)
    assert principal == Principal("user", ALICE)


async def test_wrong_password_and_unknown_email_look_the_same(
    service: UserService, redis: Redis
) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    assert await service.authenticate(ALICE, WRONG_PASSWORD, CLIENT) is None
    assert await service.authenticate(BOB, WRONG_PASSWORD, CLIENT) is None
    # Both count against their account, so an unknown email locks like a real one.
    assert await redis.get(failures_key(ALICE, CLIENT)) == "1"
    assert await redis.get(failures_key(BOB, CLIENT)) == "1"


async def test_success_clears_the_failure_counter(service: UserService, redis: Redis) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    await service.authenticate(ALICE, WRONG_PASSWORD, CLIENT)
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None
    assert not await redis.exists(failures_key(ALICE, CLIENT))


@pytest.mark.parametrize(
    ("email", "password"), [("nope", ALICE_PASSWORD), (ALICE, "short"), (ALICE, "p" * 129)]
)
async def test_authenticate_rejects_bad_input_before_counting(
    service: UserService, redis: Redis, email: str, password: str
) -> None:
    with pytest.raises(InvalidArgument):
        await service.authenticate(email, password, CLIENT)
    assert await redis.dbsize() == 0


async def test_account_locks_after_max_failures_then_unlocks(
    make_service: MakeService,
) -> None:
    service = make_service(limits=LoginLimits(max_failures=3, lock_seconds=1))
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    for _ in range(3):
        assert await service.authenticate(ALICE, WRONG_PASSWORD, CLIENT) is None
    with pytest.raises(RateLimited) as locked:
        await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT)  # even the right password
    assert locked.value.retry_after == 1
    # Another account is not affected.
    await service.register("Bob", BOB, BOB_PASSWORD)
    assert await service.authenticate(BOB, BOB_PASSWORD, CLIENT) is not None
    await asyncio.sleep(1.2)
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None


async def test_parallel_guesses_cannot_exceed_the_limit(make_service: MakeService) -> None:
    service = make_service(limits=LoginLimits(max_failures=3))
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    results = await asyncio.gather(
        *(service.authenticate(ALICE, WRONG_PASSWORD, CLIENT) for _ in range(10)),
        return_exceptions=True,
    )
    assert results.count(None) == 3
    assert sum(isinstance(r, RateLimited) for r in results) == 7


async def test_client_is_throttled_across_accounts(make_service: MakeService) -> None:
    service = make_service(limits=LoginLimits(client_attempts=3, client_window_seconds=60))
    for i in range(3):
        assert await service.authenticate(f"u{i}@example.com", WRONG_PASSWORD, CLIENT) is None
    with pytest.raises(RateLimited) as throttled:
        await service.authenticate("u9@example.com", WRONG_PASSWORD, CLIENT)
    assert 59 <= throttled.value.retry_after <= 60
    assert await service.authenticate("u9@example.com", WRONG_PASSWORD, "198.51.100.1") is None


async def test_login_upgrades_a_hash_made_with_other_parameters(
    make_service: MakeService, redis: Redis
) -> None:
    await make_service().register("Alice", ALICE, ALICE_PASSWORD)
    before = await stored(redis)
    stronger = make_service(params=HashParams(time_cost=3))
    assert await stronger.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None
    after = await stored(redis)
    assert after["password"].startswith("$argon2id$v=19$m=19456,t=3,p=1$")
    assert after["updated_at"] == before["updated_at"]  # the password did not change
    assert await stronger.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None
    assert (await stored(redis))["password"] == after["password"]  # no needless rehash


async def test_get_is_only_for_the_caller(service: UserService, redis: Redis) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    assert (await service.get(AS_ALICE, "Alice@example.com")).name == "Alice"
    with pytest.raises(PermissionDenied):
        await service.get(AS_BOB, ALICE)
    with pytest.raises(PermissionDenied):  # 403 before 404: reveals nothing
        await service.get(AS_ALICE, "nobody@example.com")
    with pytest.raises(NotFound):
        await service.get(AS_BOB, BOB)


async def test_update_name_and_password(service: UserService, redis: Redis) -> None:
    created = await service.register("Alice", ALICE, ALICE_PASSWORD)
    old_hash = (await stored(redis))["password"]
    await asyncio.sleep(0.005)
    updated = await service.update(AS_ALICE, ALICE, name="Alice B.", password="brand-new-secret")
    assert (updated.name, updated.created_at) == ("Alice B.", created.created_at)
    assert updated.updated_at > created.updated_at
    assert (await stored(redis))["password"] != old_hash
    assert await service.authenticate(ALICE, "brand-new-secret", CLIENT) is not None
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is None
    renamed = await service.update(AS_ALICE, ALICE, name="Al", password=None)
    assert renamed.name == "Al"


async def test_update_checks_owner_input_and_existence(service: UserService, redis: Redis) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    before = await snapshot(redis)
    with pytest.raises(PermissionDenied):
        await service.update(AS_BOB, ALICE, name="Mallory", password=None)
    with pytest.raises(InvalidArgument):
        await service.update(AS_ALICE, ALICE, name=None, password=None)
    with pytest.raises(InvalidArgument):
        await service.update(AS_ALICE, ALICE, name="", password=None)
    with pytest.raises(InvalidArgument):
        await service.update(AS_ALICE, ALICE, name=None, password="short")
    assert await snapshot(redis) == before
    with pytest.raises(NotFound):
        await service.update(AS_BOB, BOB, name="Bob", password=None)
    assert await redis.dbsize() == 3  # Alice, the index and the account id counter


async def test_delete(service: UserService, redis: Redis) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    with pytest.raises(PermissionDenied):
        await service.delete(AS_BOB, ALICE)
    deleted = await service.account(ALICE)
    assert deleted is not None
    await service.delete(AS_ALICE, ALICE)
    assert not await redis.exists("user:" + ALICE) and not await redis.zcard("users")
    events: Any = await redis.xrange("outbox:accounts")
    assert [fields for _, fields in events] == [{"email": ALICE, "account_id": deleted.account_id}]
    with pytest.raises(NotFound):
        await service.delete(AS_ALICE, ALICE)
    await service.register("Alice again", ALICE, ALICE_PASSWORD)  # the email is free again
    again = await service.account(ALICE)
    assert again is not None and again.account_id > deleted.account_id  # a new account


async def test_a_later_account_inherits_no_role_and_no_sign_in_back_off(
    service: UserService, redis: Redis
) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    await service.set_role(ALICE, "operator")
    assert await service.authenticate(ALICE, "wrong-password-1", CLIENT) is None
    assert await redis.exists(account_key(ALICE))  # the back-off counts the failure
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None
    assert await redis.exists(known_clients_key(ALICE))
    assert await service.authenticate(ALICE, "wrong-password-2", "198.51.100.9") is None
    assert await redis.exists(account_key(ALICE))
    await service.delete(AS_ALICE, ALICE)
    # Deleted with the record: the per-email sign-in state of the account.
    assert not await redis.exists(account_key(ALICE))
    assert not await redis.exists(known_clients_key(ALICE))
    # The per-client failure counter is not enumerated: it only expires with its window.
    assert await redis.ttl(failures_key(ALICE, "198.51.100.9")) > 0
    await service.register("Alice again", ALICE, ALICE_PASSWORD)
    again = await service.account(ALICE)
    assert again is not None
    with pytest.raises(PermissionDenied):  # the operator role ended with the first account
        await service.list_users(None, None, Principal("user", ALICE, account_id=again.account_id))
    assert "role" not in await stored(redis)


async def test_tokens_name_the_account_and_its_version(
    make_service: MakeService, redis: Redis
) -> None:
    told: list[str] = []

    async def revoked(email: str) -> None:
        told.append(email)

    service = make_service(revoked=revoked)
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    account = await service.account(ALICE)
    assert account is not None and account.token_version == 1
    assert ACCOUNT_ID.fullmatch(account.account_id)
    signed_in = await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT)
    assert signed_in is not None
    claims = jwt.decode(signed_in.access_token, options={"verify_signature": False})
    assert (claims["aid"], claims["tv"]) == (account.account_id, 1)
    await service.update(AS_ALICE, ALICE, name="Al", password=None)  # a name: nothing revoked
    assert await service.account(ALICE) == account and told == []
    await service.update(AS_ALICE, ALICE, name=None, password="brand-new-secret")
    assert await service.account(ALICE) == AccountState(account.account_id, 2)
    await service.revoke_tokens(AS_ALICE, ALICE)
    assert await service.account(ALICE) == AccountState(account.account_id, 3)
    with pytest.raises(PermissionDenied):
        await service.revoke_tokens(AS_BOB, ALICE)
    await service.delete(AS_ALICE, ALICE)
    assert await service.account(ALICE) is None
    assert told == [ALICE, ALICE, ALICE]


async def test_services_may_ask_about_anyone(service: UserService) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    assert await service.exists("ALICE@example.com")
    assert not await service.exists(BOB)
    assert (await service.get(Principal("service", "message"), ALICE)).email == ALICE
    with pytest.raises(InvalidArgument):
        await service.exists("*@example.com")


async def test_list_users_pages_in_email_order(service: UserService) -> None:
    emails = [f"user{i:02d}@example.com" for i in range(5)]
    for email in reversed(emails):
        await service.register("U", email, ALICE_PASSWORD)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        users, token = await service.list_users(2, token)
        seen += [u.email for u in users]
        pages += 1
        if not token:
            break
    assert seen == emails and pages == 3
    users, token = await service.list_users(0, None)
    assert len(users) == 5 and token == ""
    for size, bad_token in ((101, ""), (-1, ""), (10, "garbage!"), (10, "x" * 600)):
        with pytest.raises(InvalidArgument):
            await service.list_users(size, bad_token)


# -- sign-in throttling: failures only, per account-and-client, account back-off -----------------


async def test_successes_do_not_use_up_the_client_budget(make_service: MakeService) -> None:
    service = make_service(limits=LoginLimits(client_attempts=3))
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    for _ in range(10):
        assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None
    for i in range(3):
        assert await service.authenticate(f"u{i}@example.com", WRONG_PASSWORD, CLIENT) is None
    with pytest.raises(RateLimited, match="from this client"):
        await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT)


async def test_failures_from_other_clients_do_not_lock_the_account(
    make_service: MakeService,
) -> None:
    service = make_service(limits=LoginLimits(max_failures=2, account_free_failures=100))
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    for i in range(20):
        assert await service.authenticate(ALICE, WRONG_PASSWORD, f"198.51.100.{i}") is None
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None


async def test_the_account_back_off_doubles_is_capped_and_spares_known_clients(
    make_service: MakeService, redis: Redis
) -> None:
    limits = LoginLimits(
        account_free_failures=2, account_base_delay_ms=1000, account_max_delay_seconds=2
    )
    service = make_service(limits=limits)
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None  # known now
    for i in range(2):
        assert await service.authenticate(ALICE, WRONG_PASSWORD, f"198.51.100.{i}") is None
    assert await service.authenticate(ALICE, WRONG_PASSWORD, "198.51.100.9") is None  # sets 1 s
    with pytest.raises(RateLimited, match="recent failed sign-in attempts") as slowed:
        await service.authenticate(ALICE, ALICE_PASSWORD, "198.51.100.10")
    assert slowed.value.retry_after == 1
    await asyncio.sleep(1.05)
    assert await service.authenticate(ALICE, WRONG_PASSWORD, "198.51.100.11") is None  # 2 s
    with pytest.raises(RateLimited) as capped:
        await service.authenticate(ALICE, ALICE_PASSWORD, "198.51.100.12")
    assert capped.value.retry_after == 2
    await asyncio.sleep(2.05)
    assert await service.authenticate(ALICE, WRONG_PASSWORD, "198.51.100.13") is None  # 2 s, cap
    assert await redis.hget(account_key(ALICE), "failures") == "5"
    # The owner's known host goes straight through, and its success resets the back-off.
    assert await service.authenticate(ALICE, ALICE_PASSWORD, CLIENT) is not None
    assert not await redis.exists(account_key(ALICE))
    assert await service.authenticate(ALICE, ALICE_PASSWORD, "198.51.100.14") is not None


async def test_known_clients_are_bounded(make_service: MakeService, redis: Redis) -> None:
    service = make_service(limits=LoginLimits(known_clients=3))
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    for i in range(6):
        assert await service.authenticate(ALICE, ALICE_PASSWORD, f"198.51.100.{i}") is not None
    known = await redis.smembers(known_clients_key(ALICE))
    assert len(known) == 3 and "198.51.100.5" in known
    assert 29 * 86400 < await redis.ttl(known_clients_key(ALICE)) <= 30 * 86400


async def test_registrations_are_limited_per_client(
    make_service: MakeService, redis: Redis
) -> None:
    service = make_service(limits=LoginLimits(register_attempts=2, register_window_seconds=60))
    await service.register("A", ALICE, ALICE_PASSWORD, CLIENT)
    with pytest.raises(AlreadyExists):  # a duplicate is not counted
        await service.register("A", ALICE, ALICE_PASSWORD, CLIENT)
    await service.register("B", BOB, BOB_PASSWORD, CLIENT)
    with pytest.raises(RateLimited, match="too many registrations") as limited:
        await service.register("C", "cy@example.com", ALICE_PASSWORD, CLIENT)
    assert 59 <= limited.value.retry_after <= 60
    assert not await redis.exists(user_key("cy@example.com"))
    await service.register("C", "cy@example.com", ALICE_PASSWORD, "198.51.100.1")
    await service.register("D", "dee@example.com", ALICE_PASSWORD)  # in-process: not limited


async def test_only_operators_list_users(service: UserService) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    with pytest.raises(PermissionDenied):
        await service.list_users(None, None, Principal("user", ALICE))
    with pytest.raises(PermissionDenied):  # an unknown (deleted) account is no operator either
        await service.list_users(None, None, Principal("user", BOB))
    assert (await service.list_users(None, None, Principal("service", "message")))[0]
    await service.set_role(ALICE, "operator")
    users, _ = await service.list_users(None, None, Principal("user", ALICE))
    assert [u.email for u in users] == [ALICE]
    with pytest.raises(InvalidArgument):
        await service.set_role(ALICE, "admin")
    with pytest.raises(NotFound):
        await service.set_role(BOB, "operator")
