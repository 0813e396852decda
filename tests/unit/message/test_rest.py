"""The REST API through the real Connexion app (httpx over ASGI), users checked over real gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from missive.rest._runtime import problem_type
from redis.asyncio import Redis

from services.common.auth import KeyRing, UserTokenIssuer
from services.common.bootstrap import Security
from services.common.ports import free_port
from services.common.redis import create_redis
from services.common.sessions import Sessions
from services.message.api_rest.app import create_rest_app
from services.message.peers import GrpcUserDirectory
from services.message.service import MessageService
from services.message.store import RedisMessageStore
from tests.helpers.accounts import account_id_of
from tests.unit.message.conftest import (
    ADA,
    BOB,
    CAROL,
    EVE,
    NOBODY,
    Rest,
    UserServiceRunning,
    db_keys,
    dbsize,
    stream_fields,
    user_channel,
)

PROBLEM = "application/problem+json"


def assert_problem(reply: httpx.Response, status: int, detail: str = "") -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(PROBLEM)
    assert reply.json()["status"] == status
    assert reply.json()["type"] == problem_type(status), reply.text
    assert detail in reply.json().get("detail", "")


@asynccontextmanager
async def app_client(
    keys: Path, token_for: Callable[[str], str], store: RedisMessageStore, user_address: str
) -> AsyncIterator[Rest]:
    channel = user_channel(keys, user_address)
    service = MessageService(store, GrpcUserDirectory(channel))
    app = create_rest_app(service, Security.load(keys, "message").verifier, store.ping)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://message"
        ) as client:
            yield Rest(client, token_for)
    finally:
        await channel.close()


async def test_send_get_list_mark_and_delete(rest: Rest, redis: Redis) -> None:
    sent = await rest.send(ADA, BOB, "Hello Bob", client_request_id="3f2b8c1e-7d4a")
    assert sent.status_code == 201, sent.text
    assert sent.headers["content-type"] == "application/json"
    message = sent.json()
    assert message["id"] == 1 and message["read"] is False
    assert message["timestamp"].endswith("Z")
    assert {k: message[k] for k in ("sender_email", "receiver_email", "content")} == {
        "sender_email": ADA,
        "receiver_email": BOB,
        "content": "Hello Bob",
    }

    got = await rest.client.get("/messages/1", params={"email": BOB}, headers=rest.auth(BOB))
    assert got.status_code == 200 and got.json() == message
    listed = await rest.client.get(
        "/messages", params={"email": BOB, "peer_email": ADA}, headers=rest.auth(BOB)
    )
    assert listed.json() == {"messages": [message], "next_page_token": ""}

    conversations = await rest.client.get(
        "/list_conversations", params={"email": BOB}, headers=rest.auth(BOB)
    )
    assert conversations.status_code == 200
    assert conversations.json() == {
        "conversations": [
            {
                "peer_email": ADA,
                "last_message": message,
                "unread_count": 1,
                "message_count": 1,
                "updated_at": message["timestamp"],
            }
        ],
        "next_page_token": "",
    }

    marked = await rest.client.post(
        f"/conversations/{ADA}/read", json={"email": BOB}, headers=rest.auth(BOB)
    )
    assert marked.status_code == 200, marked.text
    assert marked.json()["unread_count"] == 0 and marked.json()["last_message"]["read"] is True

    deleted = await rest.client.delete("/messages/1", params={"email": ADA}, headers=rest.auth(ADA))
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await rest.client.get("/messages/1", params={"email": ADA}, headers=rest.auth(ADA))
    assert_problem(gone, 404, "message 1 does not exist")
    empty = await rest.client.get(
        "/list_conversations", params={"email": BOB}, headers=rest.auth(BOB)
    )
    assert empty.json() == {"conversations": [], "next_page_token": ""}
    assert await db_keys(redis) == {
        "message_id_counter",
        "outbox:notifications",
        f"idempotency:send:{ADA}:{account_id_of(ADA)}:3f2b8c1e-7d4a",  # kept until it expires
        f"account:{ADA}",  # which account owns each email's data here
        f"account:{BOB}",
    }


async def test_lists_page_across_pages(rest: Rest) -> None:
    for n in range(5):
        assert (await rest.send(ADA, BOB if n % 2 else CAROL, f"m{n}")).status_code == 201
    contents: list[str] = []
    params = {"email": ADA, "page_size": "2"}
    while True:
        page = (await rest.client.get("/messages", params=params, headers=rest.auth(ADA))).json()
        contents += [m["content"] for m in page["messages"]]
        if not page["next_page_token"]:
            break
        params["page_token"] = page["next_page_token"]
    assert contents == ["m4", "m3", "m2", "m1", "m0"]

    first = await rest.client.get(
        "/list_conversations", params={"email": ADA, "page_size": 1}, headers=rest.auth(ADA)
    )
    token = first.json()["next_page_token"]
    second = await rest.client.get(
        "/list_conversations",
        params={"email": ADA, "page_size": 1, "page_token": token},
        headers=rest.auth(ADA),
    )
    peers = [c["peer_email"] for r in (first, second) for c in r.json()["conversations"]]
    assert peers == [CAROL, BOB] and second.json()["next_page_token"] == ""


async def test_idempotent_retries_answer_201_with_the_first_message(
    rest: Rest, redis: Redis
) -> None:
    replies = [await rest.send(ADA, BOB, "once", client_request_id="r1") for _ in range(3)]
    assert [r.status_code for r in replies] == [201, 201, 201]
    assert replies[0].json() == replies[1].json() == replies[2].json()
    burst = await asyncio.gather(
        *(rest.send(ADA, BOB, "burst", client_request_id="r2") for _ in range(10))
    )
    assert {r.status_code for r in burst} == {201} and len({r.json()["id"] for r in burst}) == 1
    conflict = await rest.send(ADA, BOB, "other", client_request_id="r1")
    assert_problem(conflict, 409, "r1 was already used")
    assert len(await stream_fields(redis, "outbox:notifications")) == 2


@pytest.mark.parametrize(
    ("sender", "receiver", "named"),
    [(ADA, NOBODY, "receiver_email"), (NOBODY, ADA, "sender_email")],
)
async def test_unknown_users_are_404_and_nothing_is_written(
    rest: Rest, redis: Redis, sender: str, receiver: str, named: str
) -> None:
    assert_problem(await rest.send(sender, receiver, "hi"), 404, f"{named}: no user is registered")
    assert await dbsize(redis) == 0


async def test_user_service_down_is_503_and_nothing_is_written(
    keys: Path, token_for: Callable[[str], str], store: RedisMessageStore, redis: Redis
) -> None:
    async with app_client(keys, token_for, store, f"127.0.0.1:{free_port()}") as rest:
        assert_problem(await rest.send(ADA, BOB, "hi"), 503, "not stored")
    assert await dbsize(redis) == 0


async def test_a_full_data_store_is_503_and_nothing_is_written(rest: Rest, redis: Redis) -> None:
    """maxmemory reached (noeviction): a clean 503 problem, never a 500, and no partial write."""
    await redis.config_set("maxmemory", "1")  # below what the server already uses
    try:
        assert_problem(await rest.send(ADA, BOB, "hi"), 503, "The data store is full")
    finally:
        await redis.config_set("maxmemory", "0")
    assert await dbsize(redis) == 0
    assert (await rest.send(ADA, BOB, "hi again")).status_code == 201


async def test_redis_down_is_503_and_health_not_serving(
    keys: Path, token_for: Callable[[str], str]
) -> None:
    broken = create_redis(f"redis://127.0.0.1:{free_port()}", 1, connect_timeout=0.5)
    try:
        async with app_client(keys, token_for, RedisMessageStore(broken), "127.0.0.1:1") as rest:
            listed = await rest.client.get(
                "/messages", params={"email": ADA}, headers=rest.auth(ADA)
            )
            assert_problem(listed, 503)
            health = await rest.client.get("/health")
            assert health.status_code == 503 and health.json() == {"status": "NOT_SERVING"}
    finally:
        await broken.aclose()


async def test_health_is_serving_without_a_token(rest: Rest) -> None:
    health = await rest.client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "SERVING"}


async def test_tokens_are_required_and_callers_act_only_on_their_own_data(
    rest: Rest, redis: Redis
) -> None:
    sent = (await rest.send(ADA, BOB, "private")).json()
    before = {key: await redis.dump(key) for key in await db_keys(redis)}
    anonymous = await rest.client.get("/messages", params={"email": ADA})
    assert_problem(anonymous, 401)
    forged = await rest.client.get(
        "/messages", params={"email": ADA}, headers={"Authorization": "Bearer nope"}
    )
    assert_problem(forged, 401)
    eve = rest.auth(EVE)
    for method, url, params, body in [
        ("GET", "/messages", {"email": BOB}, None),
        ("GET", "/list_conversations", {"email": BOB}, None),
        ("GET", f"/messages/{sent['id']}", {"email": BOB}, None),
        ("DELETE", f"/messages/{sent['id']}", {"email": ADA}, None),
        ("POST", f"/conversations/{ADA}/read", None, {"email": BOB}),
        (
            "POST",
            "/messages",
            None,
            {"sender_email": BOB, "receiver_email": ADA, "content": "spoof"},
        ),
    ]:
        reply = await rest.client.request(method, url, params=params, json=body, headers=eve)
        assert_problem(reply, 403)
        assert "private" not in reply.text
    by_receiver = await rest.client.delete(
        f"/messages/{sent['id']}", params={"email": BOB}, headers=rest.auth(BOB)
    )
    assert_problem(by_receiver, 403, "only the sender")
    for hidden in (
        await rest.client.get(f"/messages/{sent['id']}", params={"email": EVE}, headers=eve),
        await rest.client.delete(f"/messages/{sent['id']}", params={"email": EVE}, headers=eve),
        await rest.client.post(f"/conversations/{ADA}/read", json={"email": EVE}, headers=eve),
    ):
        assert_problem(hidden, 404)
        assert "private" not in hidden.text
    after = {key: await redis.dump(key) for key in await db_keys(redis)}
    after.pop(f"account:{EVE}", None)  # Eve's valid requests record who owns her email
    assert after == before


@pytest.mark.parametrize(
    ("method", "url", "params", "body"),
    [
        ("POST", "/messages", None, {"sender_email": ADA, "receiver_email": BOB, "content": ""}),
        (
            "POST",
            "/messages",
            None,
            {"sender_email": ADA, "receiver_email": BOB, "content": "x" * 4097},
        ),
        ("POST", "/messages", None, {"sender_email": ADA, "receiver_email": "bob", "content": "x"}),
        (
            "POST",
            "/messages",
            None,
            {"sender_email": ADA, "receiver_email": "b*b@example.com", "content": "x"},
        ),
        (
            "POST",
            "/messages",
            None,
            {"sender_email": ADA, "receiver_email": BOB, "content": "x", "read": True},
        ),
        (
            "POST",
            "/messages",
            None,
            {
                "sender_email": ADA,
                "receiver_email": BOB,
                "content": "x",
                "client_request_id": "a b",
            },
        ),
        (
            "POST",
            "/messages",
            None,
            {"sender_email": ADA, "receiver_email": "\ud800@example.com", "content": "x"},
        ),
        ("POST", "/messages", None, {"sender_email": ADA, "receiver_email": BOB}),
        ("GET", "/messages", {"email": ADA, "page_size": 101}, None),
        ("GET", "/messages", {"email": ADA, "page_size": 0}, None),
        ("GET", "/messages", {"email": ADA, "page_token": "garbage!"}, None),
        ("GET", "/messages", {"email": ADA, "peer_email": "x:y@example.com"}, None),
        ("GET", "/list_conversations", {"email": ADA, "page_size": 101}, None),
        ("GET", "/list_conversations", {"email": ADA, "page_token": "garbage!"}, None),
        ("GET", "/list_conversations", {"email": "not-an-email"}, None),
        ("GET", "/messages/0", {"email": ADA}, None),
        ("DELETE", "/messages/0", {"email": ADA}, None),
        ("POST", "/conversations/nope/read", None, {"email": ADA}),
        ("POST", f"/conversations/{BOB}/read", None, {"email": ADA, "extra": 1}),
    ],
)
async def test_bad_input_is_400_and_writes_nothing(
    rest: Rest,
    redis: Redis,
    method: str,
    url: str,
    params: dict[str, Any] | None,
    body: dict[str, object] | None,
) -> None:
    # json.dumps escapes non-ASCII (a lone surrogate too), as any JSON client may.
    content = json.dumps(body).encode() if body is not None else None
    headers = {**rest.auth(ADA), "Content-Type": "application/json"}
    reply = await rest.client.request(method, url, params=params, content=content, headers=headers)
    assert_problem(reply, 400)
    assert await dbsize(redis) == 0


async def test_validation_problems_locate_the_field_without_its_value(rest: Rest) -> None:
    secret = "x" * 4097
    body = {"sender_email": ADA, "receiver_email": BOB, "content": secret}
    reply = await rest.client.post("/messages", json=body, headers=rest.auth(ADA))
    assert_problem(reply, 400, "content: longer than 4096 characters")
    problem = reply.json()
    assert problem["type"] == "https://missive.dev/problems/validation"
    assert problem["pointer"] == "/content"
    assert "parameter" not in problem
    assert secret not in reply.text

    missing = await rest.client.post(
        "/messages", json={"sender_email": ADA, "receiver_email": BOB}, headers=rest.auth(ADA)
    )
    assert_problem(missing, 400, "content: required")
    assert missing.json()["pointer"] == "/content"

    page = await rest.client.get(
        "/list_conversations", params={"page_size": 101}, headers=rest.auth(ADA)
    )
    assert_problem(page, 400, "page_size: above the maximum 100")
    assert page.json()["parameter"] == "page_size"
    assert "pointer" not in page.json()


async def test_each_error_kind_has_its_problem_type(rest: Rest) -> None:
    kinds = {
        await rest.client.get("/list_conversations"): "unauthenticated",
        await rest.client.get(
            "/list_conversations", params={"email": BOB}, headers=rest.auth(ADA)
        ): "forbidden",
        await rest.client.get("/messages/12345", headers=rest.auth(ADA)): "not-found",
        await rest.client.get("/no/such/path", headers=rest.auth(ADA)): "not-found",
        await rest.client.put("/messages", headers=rest.auth(ADA)): "method-not-allowed",
        await rest.client.post(
            "/messages", content=b"x" * 70_000, headers=rest.auth(ADA)
        ): "payload-too-large",
    }
    for reply, kind in kinds.items():
        assert reply.headers["content-type"].startswith(PROBLEM), reply.text
        assert reply.json()["type"] == f"https://missive.dev/problems/{kind}", reply.text


async def test_an_oversized_body_is_413(rest: Rest, redis: Redis) -> None:
    body = {"sender_email": ADA, "receiver_email": BOB, "content": "x" * 70_000}
    reply = await rest.client.post("/messages", json=body, headers=rest.auth(ADA))
    assert_problem(reply, 413)
    assert await dbsize(redis) == 0


async def test_mark_read_without_a_conversation_is_404(rest: Rest) -> None:
    reply = await rest.client.post(
        f"/conversations/{BOB}/read", json={"email": ADA}, headers=rest.auth(ADA)
    )
    assert_problem(reply, 404, f"{ADA} has no conversation with {BOB}")


async def test_tokens_are_checked_against_their_account(
    keys: Path, store: RedisMessageStore, user_service: UserServiceRunning
) -> None:
    """With sessions (as the entry point wires it): revoked tokens 401, UserService down 503."""
    issuer = UserTokenIssuer(KeyRing.load(keys, "user", sign_user_tokens=True), 900)
    channel = user_channel(keys, user_service.address)
    directory = GrpcUserDirectory(channel)
    service = MessageService(store, directory)
    verifier = Security.load(keys, "message").verifier
    sessions = Sessions(directory, ttl_seconds=0, stale_grace_seconds=0)  # no outage grace
    app = create_rest_app(service, verifier, store.ping, sessions)
    transport = httpx.ASGITransport(app=app)
    current = issuer.issue(ADA, account_id_of(ADA), 1)[0]
    revoked = issuer.issue(ADA, account_id_of(ADA), 0)[0]
    without_account = issuer.issue(ADA)[0]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://message") as client:

            async def get(token: str) -> httpx.Response:
                return await client.get(
                    "/messages", params={"email": ADA}, headers={"Authorization": f"Bearer {token}"}
                )

            assert (await get(current)).status_code == 200
            assert_problem(await get(revoked), 401)
            assert_problem(await get(without_account), 401)
            user_service.servicer.stall_seconds = 3  # past the deadline: UserService unreachable
            assert_problem(await get(current), 503, "cannot be checked")  # never unchecked
    finally:
        await channel.close()
