"""The generated REST runtime's lean middleware stack answers as Connexion's own would.

A generated app (openapi/message.yaml) over handlers written here: responses are still
validated (a reply the contract does not admit is a 500 problem, never sent), parameters are
still validated and cast, the Swagger UI and the OpenAPI document are still served, and the
bearer check and the guards still refuse what they refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from missive.rest._runtime import TokenInfo
from missive.rest.message import MessageApi, create_app

OWNER = "ada@example.com"
TOKEN = "good-token"
MESSAGE = {
    "id": 7,
    "sender_email": OWNER,
    "receiver_email": "bob@example.com",
    "content": "Hi",
    "timestamp": "2026-12-05T10:00:00Z",
    "read": False,
}


class Handlers(MessageApi):
    """Answers from what the test sets; records the arguments the views received."""

    def __init__(self) -> None:
        self.conversations: Any = {"conversations": [], "next_page_token": ""}
        self.calls: list[dict[str, Any]] = []

    async def list_conversations(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.conversations

    async def get_messages(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return {"messages": [MESSAGE], "next_page_token": ""}

    async def send_message(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return MESSAGE

    async def get_message(self, **kwargs: Any) -> Any:
        return MESSAGE

    async def delete_message(self, **kwargs: Any) -> None:
        return None

    async def mark_conversation_read(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def health(self) -> Any:
        return {"status": "SERVING"}


async def verify(token: str) -> TokenInfo | None:
    return {"sub": OWNER} if token == TOKEN else None


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
async def http(handlers: Handlers) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(handlers, verify_token=verify)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        yield client


async def test_a_reply_the_contract_does_not_admit_is_a_500_problem(
    http: httpx.AsyncClient, handlers: Handlers
) -> None:
    handlers.conversations = {"conversations": [{"peer_email": 3}], "next_page_token": ""}
    reply = await http.get("/list_conversations")
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["type"] == "https://missive.dev/problems/internal"
    assert problem["detail"].startswith("Response body does not conform to the contract.")


async def test_a_conforming_reply_is_sent_as_serialised(http: httpx.AsyncClient) -> None:
    reply = await http.get("/messages", params={"peer_email": "bob@example.com"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.content.endswith(b"\n")
    assert reply.json() == {"messages": [MESSAGE], "next_page_token": ""}


async def test_parameters_are_validated_and_cast_for_the_view(
    http: httpx.AsyncClient, handlers: Handlers
) -> None:
    refused = await http.get("/list_conversations", params={"page_size": 0})
    assert refused.status_code == 400
    assert refused.json()["parameter"] == "page_size"
    extra = await http.get("/list_conversations", params={"colour": "red"})
    assert extra.status_code == 400
    for size in ("5", "7"):  # the same view twice: each call gets its own arguments
        ok = await http.get("/list_conversations", params={"page_size": size})
        assert ok.status_code == 200
    assert [call["page_size"] for call in handlers.calls] == [5, 7]
    assert handlers.calls[0]["token_info"]["sub"] == OWNER


async def test_a_json_body_reaches_the_view_and_a_bad_one_does_not(
    http: httpx.AsyncClient, handlers: Handlers
) -> None:
    body = {"sender_email": OWNER, "receiver_email": "bob@example.com", "content": "Hi"}
    sent = await http.post("/messages", json=body)
    assert sent.status_code == 201
    assert handlers.calls[-1]["body"] == body
    refused = await http.post("/messages", json={**body, "content": 5})
    assert refused.status_code == 400
    assert refused.json()["pointer"] == "/content"
    unsupported = await http.post("/messages", content=b"x", headers={"Content-Type": "text/plain"})
    assert unsupported.status_code == 415


async def test_the_bearer_check_refuses_as_before(http: httpx.AsyncClient) -> None:
    missing = await http.get("/list_conversations", headers={"Authorization": ""})
    assert missing.status_code == 401
    invalid = await http.get("/list_conversations", headers={"Authorization": "Bearer nope"})
    assert invalid.status_code == 401
    assert invalid.json()["detail"] == "Provided token is not valid"
    malformed = await http.get("/list_conversations", headers={"Authorization": "Bearer"})
    assert malformed.status_code == 401
    basic = await http.get("/list_conversations", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    twice = await http.get(
        "/list_conversations",
        headers=[("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")],
    )
    assert twice.status_code == 401
    assert "more than one Authorization" in twice.json()["detail"]


async def test_the_swagger_ui_and_the_document_are_served(http: httpx.AsyncClient) -> None:
    document = await http.get("/openapi.json")
    assert document.status_code == 200
    assert "/list_conversations" in document.json()["paths"]
    ui = await http.get("/ui/")
    assert ui.status_code == 200
    assert "swagger" in ui.text.lower()
    unknown = await http.get("/nowhere")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_the_guards_still_refuse_first(http: httpx.AsyncClient) -> None:
    deep = b"[" * 40 + b"]" * 40
    nested = await http.post(
        "/messages", content=deep, headers={"Content-Type": "application/json"}
    )
    assert nested.status_code == 400
    assert "nested deeper" in nested.json()["detail"]
    large = await http.post(
        "/messages",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert large.status_code == 413
    control = await http.get("/messages/1%0A")
    assert control.status_code == 400
