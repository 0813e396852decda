"""Retries and token renewal, against the scripted fake on a real gRPC server."""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
import missive_client as mc
import pytest

from tests.sdk.fakes import FakeServer

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_send_retries_unavailable_with_one_request_id(fake: FakeServer) -> None:
    with mc.Client.connect(**fake.client_kwargs()) as client:
        client.login("ada@example.com", "correct horse")
        fake.backend.fail = [UNAVAILABLE, UNAVAILABLE]
        message = client.messages.send("bob@example.com", "hi")
    assert message.content == "hi"
    sends = fake.backend.calls_to("SendMessage")
    assert len(sends) == 3
    ids = {call.request.client_request_id for call in sends}
    assert len(ids) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", ids.pop())  # uuid4, hex
    assert {call.metadata["authorization"].split()[0] for call in sends} == {"Bearer"}


async def test_async_send_retries_unavailable_with_one_request_id(fake: FakeServer) -> None:
    async with mc.AsyncClient(**fake.client_kwargs()) as client:
        await client.login("ada@example.com", "correct horse")
        fake.backend.fail = [UNAVAILABLE]
        first = await client.messages.send("bob@example.com", "one")
        second = await client.messages.send("bob@example.com", "two")
    assert (first.content, second.content) == ("one", "two")
    ids = [call.request.client_request_id for call in fake.backend.calls_to("SendMessage")]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]  # a new send gets a new id


def test_a_caller_supplied_request_id_is_sent_as_is(fake: FakeServer) -> None:
    with mc.Client.connect(**fake.client_kwargs()) as client:
        client.login("ada@example.com", "correct horse")
        client.messages.send("bob@example.com", "hi", client_request_id="my-key_1")
    [call] = fake.backend.calls_to("SendMessage")
    assert call.request.client_request_id == "my-key_1"


def test_retries_are_bounded_and_the_last_error_is_raised(fake: FakeServer) -> None:
    with mc.Client.connect(**fake.client_kwargs()) as client:
        client.login("ada@example.com", "correct horse")
        fake.backend.fail = [UNAVAILABLE] * 5
        with pytest.raises(mc.Unavailable, match="scripted UNAVAILABLE") as failure:
            client.messages.send("bob@example.com", "hi")
    assert isinstance(failure.value.__cause__, grpc.RpcError)
    assert len(fake.backend.calls_to("SendMessage")) == 3  # 1 + retries=2


def test_a_delete_is_not_retried(fake: FakeServer) -> None:
    with mc.Client.connect(**fake.client_kwargs()) as client:
        client.login("ada@example.com", "correct horse")
        fake.backend.fail = [UNAVAILABLE]
        with pytest.raises(mc.Unavailable):
            client.messages.delete(5)
    assert len(fake.backend.calls_to("DeleteMessage")) == 1


def test_rate_limited_is_not_retried_and_carries_the_trailer(fake: FakeServer) -> None:
    fake.backend.fail = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    with (
        mc.Client.connect(**fake.client_kwargs()) as client,
        pytest.raises(mc.RateLimited) as failure,
    ):
        client.login("ada@example.com", "correct horse")
    assert failure.value.retry_after == 7.0
    assert len(fake.backend.calls_to("AuthenticateUser")) == 1


async def test_async_rate_limited_carries_the_trailer(fake: FakeServer) -> None:
    fake.backend.fail = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    async with mc.AsyncClient(**fake.client_kwargs()) as client:
        with pytest.raises(mc.RateLimited) as failure:
            await client.login("ada@example.com", "correct horse")
    assert failure.value.retry_after == 7.0


def test_wrong_credentials_are_unauthenticated(fake: FakeServer) -> None:
    with mc.Client.connect(**fake.client_kwargs()) as client:
        with pytest.raises(mc.Unauthenticated, match="invalid email or password"):
            client.login("ada@example.com", "wrong password")
        assert client.token is None
        with pytest.raises(mc.Unauthenticated, match="login"):
            client.users.get()  # nobody signed in: refused before any call


def test_token_is_renewed_before_expiry_with_a_kept_password(fake: FakeServer) -> None:
    fake.backend.token_ttl = 60
    with mc.Client.connect(refresh_margin=58.5, **fake.client_kwargs()) as client:
        first = client.login("ada@example.com", "correct horse", keep_password=True)
        client.users.get()
        assert fake.backend.logins == 1
        time.sleep(2.0)  # now less than 58.5 s are left
        client.users.get()
        assert fake.backend.logins == 2
        assert client.token is not None and client.token.access_token != first.access_token
    gets = fake.backend.calls_to("GetUser")
    assert gets[-1].metadata["authorization"] == f"Bearer {client.token.access_token}"
    # The renewal itself never carries the stale token.
    assert "authorization" not in fake.backend.calls_to("AuthenticateUser")[-1].metadata


def test_without_a_kept_password_nothing_is_renewed(fake: FakeServer) -> None:
    fake.backend.token_ttl = 60
    with mc.Client.connect(refresh_margin=59.9, **fake.client_kwargs()) as client:
        token = client.login("ada@example.com", "correct horse")
        fake.backend.refused_tokens.add(token.access_token)
        with pytest.raises(mc.Unauthenticated, match="expired"):
            client.users.get()
    assert fake.backend.logins == 1
    assert "correct horse" not in repr(client) + repr(client._core.session)


def test_a_refused_token_is_renewed_once_and_the_call_repeated(fake: FakeServer) -> None:
    with mc.Client.connect(**fake.client_kwargs()) as client:
        token = client.login("ada@example.com", "correct horse", keep_password=True)
        fake.backend.refused_tokens.add(token.access_token)
        assert client.users.get().email == "ada@example.com"
        assert fake.backend.logins == 2
        assert "correct horse" not in repr(client._core.session)
        client.logout()
        assert client.token is None and not client._core.session.can_refresh


async def test_async_refused_token_is_renewed_once(fake: FakeServer) -> None:
    async with mc.AsyncClient(**fake.client_kwargs()) as client:
        token = await client.login("ada@example.com", "correct horse", keep_password=True)
        fake.backend.refused_tokens.add(token.access_token)
        assert (await client.users.get()).email == "ada@example.com"
        assert fake.backend.logins == 2


def test_an_unreachable_service_is_unavailable_naming_it() -> None:
    with mc.Client.connect(message_grpc="127.0.0.1:1", retries=0, token="x") as client:
        with pytest.raises(mc.Unavailable, match=r"MessageService at 127\.0\.0\.1:1") as failure:
            client.messages.get(1, email="ada@example.com")
    assert failure.value.service == "message"


async def test_async_unreachable_service_is_unavailable_naming_it() -> None:
    async with mc.AsyncClient(message_grpc="127.0.0.1:1", retries=0, token="x") as client:
        with pytest.raises(mc.Unavailable, match=r"MessageService at 127\.0\.0\.1:1"):
            await client.messages.get(1, email="ada@example.com")


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_status_reports_unreachable_endpoints(transport: mc.Transport) -> None:
    closed: dict[str, Any] = {
        "user_url": "http://127.0.0.1:1",
        "message_url": "http://127.0.0.1:1",
        "notification_url": "http://127.0.0.1:1",
        "user_grpc": "127.0.0.1:1",
        "message_grpc": "127.0.0.1:1",
        "notification_grpc": "127.0.0.1:1",
        "frontend_grpc": "127.0.0.1:1",
    }
    with mc.Client.connect(transport=transport, **closed) as client:
        results = client.status()
    assert len(results) == 7
    assert {item.status for item in results} == {"UNREACHABLE"}
    assert not any(item.serving for item in results)


def test_a_closed_client_refuses_calls(fake: FakeServer) -> None:
    client = mc.Client.connect(**fake.client_kwargs())
    client.login("ada@example.com", "correct horse")
    client.close()
    with pytest.raises(mc.MissiveError, match="the client is closed"):
        client.users.get()


async def test_a_closed_async_client_refuses_calls(fake: FakeServer) -> None:
    client = mc.AsyncClient(**fake.client_kwargs())
    await client.login("ada@example.com", "correct horse")
    await client.close()
    with pytest.raises(mc.MissiveError, match="the client is closed"):
        await client.users.get()
