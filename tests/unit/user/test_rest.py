"""UserService over real HTTP (httpx on the Connexion app): every operation, auth and abuse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis

from services.common.bootstrap import redis_ready
from services.user.keys import user_key
from services.user.service import UserService
from services.user.settings import LoginLimits
from tests.unit.user.conftest import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    WRONG_PASSWORD,
    MakeRest,
    MakeService,
    snapshot,
)

Tokens = Callable[[str], str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient, name: str, email: str, password: str) -> None:
    response = await http.post("/users", json={"name": name, "email": email, "password": password})
    assert response.status_code == 201, response.text


@pytest.fixture
async def users(http: httpx.AsyncClient) -> None:
    await register(http, "Alice", ALICE, ALICE_PASSWORD)
    await register(http, "Bob", BOB, BOB_PASSWORD)


async def test_create_user(http: httpx.AsyncClient, redis: Redis) -> None:
    response = await http.post(
        "/users", json={"name": "Alice", "email": " Alice@Example.COM", "password": ALICE_PASSWORD}
    )
    assert response.status_code == 201
    assert response.headers["location"] == "/users/alice@example.com"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"name", "email", "created_at", "updated_at"}
    assert body["email"] == ALICE and body["created_at"] == body["updated_at"]
    assert body["created_at"].endswith("Z")
    assert json.loads(str(await redis.get(user_key(ALICE))))["password"].startswith("$argon2id$")


async def test_create_user_conflict(http: httpx.AsyncClient, users: None, redis: Redis) -> None:
    before = await snapshot(redis)
    response = await http.post(
        "/users", json={"name": "Eve", "email": "ALICE@example.com", "password": WRONG_PASSWORD}
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    "body",
    [
        {"name": "A", "email": ALICE},
        {"name": "A", "email": ALICE, "password": "short"},
        {"name": "A", "email": ALICE, "password": "x" * 129},
        {"name": "", "email": ALICE, "password": ALICE_PASSWORD},
        {"name": "A" * 101, "email": ALICE, "password": ALICE_PASSWORD},
        {"name": "A", "email": "not-an-email", "password": ALICE_PASSWORD},
        {"name": "A", "email": "?lice@example.com", "password": ALICE_PASSWORD},
        {"name": "A", "email": "a@b.com\r\nBcc: x@y.com", "password": ALICE_PASSWORD},
        {"name": "A", "email": ALICE, "password": ALICE_PASSWORD, "is_admin": True},
        {"name": "A", "email": 5, "password": ALICE_PASSWORD},
        {"name": "A", "email": ALICE, "password": "abcdefg\ud800"},
        [],
    ],
)
async def test_create_user_bad_input_writes_nothing(
    http: httpx.AsyncClient, redis: Redis, body: object
) -> None:
    # Sent as ASCII JSON, so a lone surrogate travels as the escape `\ud800`.
    response = await http.post(
        "/users", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await redis.dbsize() == 0


async def test_body_that_is_not_utf8_is_400(http: httpx.AsyncClient, redis: Redis) -> None:
    response = await http.post(
        "/users",
        content=b'{"name":"\xff","email":"a@example.com","password":"12345678"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/users"), ("POST", "/login"), ("PUT", f"/users/{ALICE}")]
)
async def test_oversized_body_is_413(
    http: httpx.AsyncClient, redis: Redis, method: str, path: str
) -> None:
    big = json.dumps({"name": "A", "email": ALICE, "password": "x" * (70 * 1024)})
    response = await http.request(
        method, path, content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await redis.dbsize() == 0


async def test_oversized_chunked_body_is_refused(
    make_rest: MakeRest, service: UserService, users: None, token_for: Tokens, redis: Redis
) -> None:
    before = await snapshot(redis)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    async with make_rest(service).client(token=token_for(ALICE)) as client:
        response = await client.put(
            f"/users/{ALICE}", content=chunks(), headers={"content-type": "application/json"}
        )
    # The body is read (bounded) before Connexion sees it, so a chunked body gets the
    # documented 413 like one that announces its length; nothing is written.
    assert response.status_code == 413, response.text
    assert await snapshot(redis) == before


async def test_login(http: httpx.AsyncClient, users: None) -> None:
    response = await http.post(
        "/login", json={"email": "Alice@example.com", "password": ALICE_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is True and body["token_type"] == "Bearer"
    assert body["expires_at"].endswith("Z")
    own = await http.get(f"/users/{ALICE}", headers=auth(body["access_token"]))
    assert own.status_code == 200
    assert own.json()["name"] == "Alice"


async def test_unknown_email_and_wrong_password_are_indistinguishable(
    http: httpx.AsyncClient, users: None
) -> None:
    wrong = await http.post("/login", json={"email": ALICE, "password": WRONG_PASSWORD})
    unknown = await http.post(
        "/login", json={"email": "nobody@example.com", "password": WRONG_PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.content == unknown.content
    # Identical but for the request id every response carries.
    assert _without_request_id(wrong.headers) == _without_request_id(unknown.headers)
    assert wrong.json()["detail"] == "Invalid email or password."


async def test_login_bad_input(http: httpx.AsyncClient, redis: Redis) -> None:
    for body in (
        {"email": ALICE},
        {"email": ALICE, "password": "short"},
        {"email": "bad", "password": ALICE_PASSWORD},
        {"email": ALICE, "password": ALICE_PASSWORD, "extra": 1},
    ):
        assert (await http.post("/login", json=body)).status_code == 400
    assert await redis.dbsize() == 0


async def test_brute_force_gets_429_then_the_lock_expires(
    make_rest: MakeRest, make_service: MakeService
) -> None:
    service = make_service(limits=LoginLimits(max_failures=3, lock_seconds=1))
    async with make_rest(service).client() as http:
        await register(http, "Alice", ALICE, ALICE_PASSWORD)
        for _ in range(3):
            response = await http.post("/login", json={"email": ALICE, "password": WRONG_PASSWORD})
            assert response.status_code == 401
        locked = await http.post("/login", json={"email": ALICE, "password": ALICE_PASSWORD})
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "1"
        assert locked.headers["content-type"] == "application/problem+json"
        # An unknown email locks the same way (no enumeration through lockout).
        for _ in range(3):
            await http.post("/login", json={"email": BOB, "password": WRONG_PASSWORD})
        assert (
            await http.post("/login", json={"email": BOB, "password": WRONG_PASSWORD})
        ).status_code == 429
        await asyncio.sleep(1.2)
        response = await http.post("/login", json={"email": ALICE, "password": ALICE_PASSWORD})
        assert response.status_code == 200


async def test_client_throttling_is_per_client_host(
    make_rest: MakeRest, make_service: MakeService, redis: Redis
) -> None:
    rest = make_rest(make_service(limits=LoginLimits(client_attempts=2)))
    attempt = {"email": "nobody@example.com", "password": WRONG_PASSWORD}
    async with rest.client(host="198.51.100.1") as first, rest.client(host="198.51.100.2") as other:
        for _ in range(2):
            assert (await first.post("/login", json=attempt)).status_code == 401
        throttled = await first.post("/login", json=attempt)
        assert throttled.status_code == 429
        assert 59 <= int(throttled.headers["retry-after"]) <= 60
        assert (await other.post("/login", json=attempt)).status_code == 401
    # Only the two failures count: the refused attempt was never checked.
    assert await redis.get("login_clients:198.51.100.1") == "2"


async def test_anonymous_calls_are_401(http: httpx.AsyncClient, users: None, redis: Redis) -> None:
    before = await snapshot(redis)
    for method, path, body in (
        ("GET", "/users", None),
        ("GET", f"/users/{ALICE}", None),
        ("PUT", f"/users/{ALICE}", {"name": "Mallory"}),
        ("DELETE", f"/users/{ALICE}", None),
    ):
        for headers in ({}, auth("not-a-token"), {"Authorization": "Basic abc"}):
            response = await http.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert "Alice" not in response.text
    assert await snapshot(redis) == before


async def test_get_user(http: httpx.AsyncClient, users: None, token_for: Tokens) -> None:
    response = await http.get("/users/ALICE@example.com", headers=auth(token_for(ALICE)))
    assert response.status_code == 200
    assert response.json()["email"] == ALICE
    assert (await http.get("/users/bad", headers=auth(token_for(ALICE)))).status_code == 400


async def test_another_users_account_is_403_and_unchanged(
    http: httpx.AsyncClient, users: None, token_for: Tokens, redis: Redis
) -> None:
    before = await snapshot(redis)
    as_bob = auth(token_for(BOB))
    for method, body in (("GET", None), ("PUT", {"name": "Mallory"}), ("DELETE", None)):
        for target in (ALICE, "nobody@example.com"):
            response = await http.request(method, f"/users/{target}", json=body, headers=as_bob)
            assert response.status_code == 403, (method, target)
            assert "Alice" not in response.text
    assert await snapshot(redis) == before


async def test_update_user(
    http: httpx.AsyncClient, users: None, token_for: Tokens, redis: Redis
) -> None:
    as_alice = auth(token_for(ALICE))
    created = (await http.get(f"/users/{ALICE}", headers=as_alice)).json()
    await asyncio.sleep(0.005)
    response = await http.put(f"/users/{ALICE}", json={"name": "Alice B."}, headers=as_alice)
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Alice B." and body["created_at"] == created["created_at"]
    assert body["updated_at"] > created["updated_at"]
    response = await http.put(
        f"/users/{ALICE}", json={"password": "brand-new-secret"}, headers=as_alice
    )
    assert response.status_code == 200
    login = await http.post("/login", json={"email": ALICE, "password": "brand-new-secret"})
    assert login.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "mallory@example.com"},
        {"name": "Alice", "email": "mallory@example.com"},
        {"password_hash": "x"},
        {"name": "Alice", "is_admin": True},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"name": ""},
        {"password": "short"},
        {"name": None},
    ],
)
async def test_update_user_rejects_mass_assignment(
    http: httpx.AsyncClient, users: None, token_for: Tokens, redis: Redis, body: object
) -> None:
    before = await snapshot(redis)
    response = await http.put(f"/users/{ALICE}", json=body, headers=auth(token_for(ALICE)))
    assert response.status_code == 400, response.text
    assert await snapshot(redis) == before


async def test_delete_user(
    http: httpx.AsyncClient, users: None, token_for: Tokens, redis: Redis
) -> None:
    as_alice = auth(token_for(ALICE))
    response = await http.delete(f"/users/{ALICE}", headers=as_alice)
    assert response.status_code == 204 and response.content == b""
    assert not await redis.exists(user_key(ALICE))
    assert await redis.zrange("users", 0, -1) == [BOB]
    for method in ("GET", "PUT", "DELETE"):
        body = {"name": "x"} if method == "PUT" else None
        response = await http.request(method, f"/users/{ALICE}", json=body, headers=as_alice)
        assert response.status_code == 404, method


async def test_list_users(
    http: httpx.AsyncClient, users: None, token_for: Tokens, service: UserService
) -> None:
    # Listing every user is for operators (finding: any account could enumerate every email).
    as_bob = auth(token_for(BOB))
    refused = await http.get("/users", headers=as_bob)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert ALICE not in refused.text
    await service.set_role(BOB, "operator")
    first = await http.get("/users", params={"page_size": 1}, headers=as_bob)
    assert first.status_code == 200
    page = first.json()
    assert [u["email"] for u in page["users"]] == [ALICE]
    assert set(page["users"][0]) == {"name", "email", "created_at", "updated_at"}
    second = await http.get(
        "/users", params={"page_size": 1, "page_token": page["next_page_token"]}, headers=as_bob
    )
    assert [u["email"] for u in second.json()["users"]] == [BOB]
    assert second.json()["next_page_token"] == ""
    everyone = (await http.get("/users", headers=as_bob)).json()
    assert len(everyone["users"]) == 2 and everyone["next_page_token"] == ""
    for params in ({"page_size": 0}, {"page_size": 101}, {"page_token": "###"}):
        assert (await http.get("/users", params=params, headers=as_bob)).status_code == 400
    # The role is not a REST field, and it goes away with the account.
    assert "role" not in (await http.get(f"/users/{BOB}", headers=as_bob)).json()
    await service.set_role(BOB, "")
    assert (await http.get("/users", headers=as_bob)).status_code == 403


async def test_health(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "SERVING"}


async def test_redis_down(
    make_rest: MakeRest, make_service: MakeService, dead_redis: Redis
) -> None:
    service = make_service(store_redis=dead_redis)
    async with make_rest(service, ready=redis_ready(dead_redis)).client() as http:
        health = await http.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "NOT_SERVING"}
        login = await http.post("/login", json={"email": ALICE, "password": ALICE_PASSWORD})
        assert login.status_code == 503
        assert login.headers["content-type"] == "application/problem+json"
        created = await http.post(
            "/users", json={"name": "A", "email": ALICE, "password": ALICE_PASSWORD}
        )
        assert created.status_code == 503


async def test_openapi_document_is_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Missive UserService"


def _without_request_id(headers: httpx.Headers) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != "x-request-id"}
