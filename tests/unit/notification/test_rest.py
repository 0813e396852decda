"""NotificationService's REST API: the real Connexion app over HTTP (httpx, in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from missive.rest._runtime import problem_type
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.ports import free_port
from services.common.redis import create_redis
from services.notification.api_rest.app import create_rest_app
from services.notification.service import NotificationService
from services.notification.store import RedisNotificationStore
from tests.unit.notification.conftest import ADA, BOB, EVE, MESSAGE_SERVICE, when

Auth = Callable[[str], dict[str, str]]


@pytest.fixture
def auth(token_for: Callable[[str], str]) -> Auth:
    return lambda email: {"Authorization": f"Bearer {token_for(email)}"}


async def notify(service: NotificationService, *message_ids: int, receiver: str = BOB) -> None:
    for message_id in message_ids:
        await service.create_notification(
            MESSAGE_SERVICE,
            message_id=message_id,
            sender_email=ADA,
            receiver_email=receiver,
            timestamp=when(message_id),
            preview=f"text of message {message_id}",
            sender_name="Ada Lovelace",
        )


def is_problem(response: httpx.Response, status: int) -> bool:
    content_type = response.headers["content-type"]
    return (
        response.status_code == status
        and content_type == "application/problem+json"
        and response.json()["type"] == problem_type(status)
    )


async def test_list_notifications(
    http: httpx.AsyncClient, service: NotificationService, auth: Auth
) -> None:
    await notify(service, 1, 2, 3)
    await service.mark_read(MESSAGE_SERVICE, BOB, "2")

    response = await http.get(
        "/list_notifications", params={"email": BOB, "page_size": 2}, headers=auth(BOB)
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["unread_count"] == 2
    assert body["notifications"] == [
        {
            "id": "3",
            "message_id": 3,
            "sender_email": ADA,
            "receiver_email": BOB,
            "timestamp": "2025-01-14T12:00:03Z",
            "read": False,
            "preview": "text of message 3",
            "sender_name": "Ada Lovelace",
        },
        {
            "id": "2",
            "message_id": 2,
            "sender_email": ADA,
            "receiver_email": BOB,
            "timestamp": "2025-01-14T12:00:02Z",
            "read": True,
            "preview": "text of message 2",
            "sender_name": "Ada Lovelace",
        },
    ]
    rest = await http.get(
        "/list_notifications",
        params={"email": BOB, "page_size": 2, "page_token": body["next_page_token"]},
        headers=auth(BOB),
    )
    assert [n["id"] for n in rest.json()["notifications"]] == ["1"]
    assert rest.json()["next_page_token"] == ""
    unread = await http.get(
        "/list_notifications", params={"email": BOB, "unread_only": "true"}, headers=auth(BOB)
    )
    assert [n["id"] for n in unread.json()["notifications"]] == ["3", "1"]


async def test_mark_one_and_all_read(
    http: httpx.AsyncClient, service: NotificationService, auth: Auth
) -> None:
    await notify(service, 1, 2, 3)

    one = await http.post("/notifications/2/read", json={"email": BOB}, headers=auth(BOB))
    assert one.status_code == 200, one.text
    assert one.json()["read"] is True and one.json()["id"] == "2"
    everything = await http.post("/notifications/read_all", json={"email": BOB}, headers=auth(BOB))
    assert everything.status_code == 200 and everything.json() == {"marked": 2}
    again = await http.post("/notifications/read_all", json={"email": BOB}, headers=auth(BOB))
    assert again.json() == {"marked": 0}
    missing = await http.post("/notifications/9/read", json={"email": BOB}, headers=auth(BOB))
    assert is_problem(missing, 404)


async def test_subscriptions(
    http: httpx.AsyncClient, service: NotificationService, auth: Auth
) -> None:
    url = f"/subscriptions/{BOB}"
    assert (await http.get(url, headers=auth(BOB))).json() == {"email": BOB, "subscribed": True}
    deleted = await http.delete(url, headers=auth(BOB))
    assert deleted.status_code == 200 and deleted.json() == {"email": BOB, "subscribed": False}
    assert (await http.get(url, headers=auth(BOB))).json()["subscribed"] is False
    await notify(service, 1)
    listed = await http.get("/list_notifications", params={"email": BOB}, headers=auth(BOB))
    assert listed.json()["notifications"] == []
    put = await http.put("/subscriptions/Bob@Example.com", headers=auth(BOB))
    assert put.status_code == 200 and put.json() == {"email": BOB, "subscribed": True}


async def test_anonymous_is_401(http: httpx.AsyncClient, redis: Redis) -> None:
    for response in (
        await http.get("/list_notifications", params={"email": BOB}),
        await http.delete(f"/subscriptions/{BOB}"),
        await http.post("/notifications/read_all", json={"email": BOB}),
        await http.get(f"/subscriptions/{BOB}", headers={"Authorization": "Bearer forged"}),
    ):
        assert is_problem(response, 401), response.text
    assert await redis.dbsize() == 0


async def test_other_users_data_is_403_and_unchanged(
    http: httpx.AsyncClient, service: NotificationService, auth: Auth
) -> None:
    await notify(service, 1)
    eve = auth(EVE)
    for response in (
        await http.get("/list_notifications", params={"email": BOB}, headers=eve),
        await http.post("/notifications/1/read", json={"email": BOB}, headers=eve),
        await http.post("/notifications/read_all", json={"email": BOB}, headers=eve),
        await http.get(f"/subscriptions/{BOB}", headers=eve),
        await http.put(f"/subscriptions/{BOB}", headers=eve),
        await http.delete(f"/subscriptions/{BOB}", headers=eve),
    ):
        assert is_problem(response, 403), response.text
    mine = await http.get("/list_notifications", params={"email": BOB}, headers=auth(BOB))
    assert mine.json()["unread_count"] == 1
    assert (await http.get(f"/subscriptions/{BOB}", headers=auth(BOB))).json()["subscribed"]


async def test_the_list_defaults_to_the_caller(
    http: httpx.AsyncClient, service: NotificationService, auth: Auth
) -> None:
    await notify(service, 1, 2)
    listed = await http.get("/list_notifications", headers=auth(BOB))
    assert listed.status_code == 200, listed.text
    assert [n["message_id"] for n in listed.json()["notifications"]] == [2, 1]
    assert (await http.get("/list_notifications", headers=auth(EVE))).json()["notifications"] == []


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("GET", "/list_notifications", {"params": {"email": "not-an-email"}}),
        ("GET", "/list_notifications", {"params": {"email": BOB, "page_size": 101}}),
        ("GET", "/list_notifications", {"params": {"email": BOB, "page_size": 0}}),
        ("GET", "/list_notifications", {"params": {"email": BOB, "page_token": "%%"}}),
        ("GET", "/list_notifications", {"params": {"email": BOB, "unread_only": "maybe"}}),
        ("POST", "/notifications/abc/read", {"json": {"email": BOB}}),
        ("POST", f"/notifications/{'1' * 20}/read", {"json": {"email": BOB}}),
        ("POST", "/notifications/1/read", {"json": {"email": BOB, "read": False}}),
        ("POST", "/notifications/read_all", {"json": {}}),
        ("POST", "/notifications/read_all", {"json": {"email": "b?b@example.com"}}),
        ("DELETE", "/subscriptions/b*b@example.com", {}),
        ("PUT", "/subscriptions/bob", {}),
    ],
)
async def test_bad_input_is_400_and_writes_nothing(
    http: httpx.AsyncClient, redis: Redis, auth: Auth, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    response = await http.request(method, url, headers=auth(BOB), **kwargs)
    assert is_problem(response, 400), response.text
    assert await redis.dbsize() == 0


async def test_oversized_body_is_413(http: httpx.AsyncClient, auth: Auth) -> None:
    body = '{"email": "' + "a" * 70_000 + '"}'
    response = await http.post(
        "/notifications/read_all",
        content=body,
        headers={**auth(BOB), "Content-Type": "application/json"},
    )
    assert is_problem(response, 413)


@pytest.mark.parametrize("escaped", ["%0A", "%0D", "%00", "%1D", "%7F"])
async def test_a_control_character_in_the_path_is_400(
    http: httpx.AsyncClient, auth: Auth, redis: Redis, escaped: str
) -> None:
    response = await http.put(f"/subscriptions/bob{escaped}@example.com", headers=auth(BOB))
    assert is_problem(response, 400), response.text
    assert "control characters" in response.json()["detail"]
    assert await redis.dbsize() == 0


async def test_405_allows_every_method_the_document_gives_the_path(
    http: httpx.AsyncClient, auth: Auth
) -> None:
    response = await http.post(f"/subscriptions/{BOB}", headers=auth(BOB))
    assert is_problem(response, 405)
    assert response.headers["allow"] == "GET, PUT, DELETE"


@pytest.fixture
async def http_without_redis(keys: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The REST app over a Redis address nobody listens on."""
    unreachable = create_redis(f"redis://127.0.0.1:{free_port()}", 2, connect_timeout=0.5)
    store = RedisNotificationStore(unreachable, retention=10)
    verifier = Security.load(keys, "notification").verifier
    app = create_rest_app(NotificationService(store), verifier, store.ping)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as client:
            yield client
    finally:
        await unreachable.aclose()


async def test_health_follows_redis(
    http: httpx.AsyncClient, http_without_redis: httpx.AsyncClient
) -> None:
    serving = await http.get("/health")
    assert serving.status_code == 200 and serving.json() == {"status": "SERVING"}
    down = await http_without_redis.get("/health")
    assert down.status_code == 503 and down.json() == {"status": "NOT_SERVING"}


async def test_redis_outage_is_503_problem(
    http_without_redis: httpx.AsyncClient, auth: Auth
) -> None:
    response = await http_without_redis.delete(f"/subscriptions/{BOB}", headers=auth(BOB))
    assert is_problem(response, 503)
