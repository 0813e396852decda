"""Every exception class, each produced by a real failure of the real system."""

from __future__ import annotations

import grpc
import httpx
import missive_client as mc
import pytest
from grpclib.exceptions import GRPCError

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD, new_email
from tests.sdk.helpers import async_client, async_signed_in, connect, signed_in

pytestmark = pytest.mark.e2e


def _cause(transport: mc.Transport) -> type[BaseException]:
    return grpc.RpcError if transport == "grpc" else httpx.HTTPStatusError


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_each_error_class_from_a_real_failure(live: System, transport: mc.Transport) -> None:
    with (
        signed_in(live, "Ada", transport=transport) as ada,
        signed_in(live, "Bob", transport=transport) as bob,
    ):
        assert ada.email and bob.email

        with pytest.raises(mc.InvalidArgument) as invalid:
            ada.messages.send(bob.email, "x" * 4097)  # content over 4096 characters
        assert "content" in invalid.value.message and "long" in invalid.value.message
        assert isinstance(invalid.value.__cause__, _cause(transport))

        with pytest.raises(mc.InvalidArgument):
            ada.messages.send("not an email", "hi")

        with pytest.raises(mc.NotFound) as missing:
            ada.messages.send("nobody-" + bob.email, "hi")  # not registered
        assert "nobody-" in missing.value.message  # the server names which user
        assert isinstance(missing.value.__cause__, _cause(transport))

        with pytest.raises(mc.NotFound):
            ada.messages.get(10**15)

        with pytest.raises(mc.PermissionDenied) as denied:
            ada.notifications.list(email=bob.email).to_list()  # another user's data
        assert isinstance(denied.value.__cause__, _cause(transport))

        with pytest.raises(mc.AlreadyExists):
            ada.messages.send(bob.email, "first", client_request_id="reused-key")
            ada.messages.send(bob.email, "different content", client_request_id="reused-key")

        with pytest.raises(mc.Unauthenticated) as wrong:
            ada.login(ada.email, "not the password")
        assert ada.token is not None  # the failed login left the session alone

        with connect(live, transport=transport, token="not-a-jwt") as stranger:
            with pytest.raises(mc.Unauthenticated) as refused:
                stranger.messages.list(email=ada.email).to_list()
        assert isinstance(refused.value.__cause__, _cause(transport))
        assert refused.value.code == "UNAUTHENTICATED"
        if transport == "rest":
            assert wrong.value.http_status == 401


def test_registration_conflict_is_already_exists(live: System) -> None:
    with connect(live) as client:
        email = new_email("dup")
        client.users.register("Dup", email, PASSWORD)
        with pytest.raises(mc.AlreadyExists) as conflict:
            client.users.register("Dup", email, PASSWORD)
    assert conflict.value.http_status == 409 and email in conflict.value.message
    assert isinstance(conflict.value.__cause__, httpx.HTTPStatusError)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_repeated_wrong_logins_are_rate_limited(live: System, transport: mc.Transport) -> None:
    with connect(live, transport=transport) as client:
        email = new_email("victim")
        client.users.register("Victim", email, PASSWORD)
        with pytest.raises(mc.RateLimited) as limited:  # the system allows 3 failures
            for _ in range(5):
                with pytest.raises(mc.Unauthenticated):
                    client.login(email, "wrong password!")
    assert limited.value.retry_after is not None and limited.value.retry_after > 0
    assert limited.value.code == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_service_nobody_listens_for_is_unavailable(live: System, transport: mc.Transport):
    # The failure of a service that is down (see test_e2e_faults for one stopped mid-session).
    address = {"message_grpc": "127.0.0.1:1", "message_url": "http://127.0.0.1:1"}
    with connect(live, transport=transport, retries=0, token="t", **address) as down:
        with pytest.raises(mc.Unavailable) as unavailable:
            down.messages.get(1, email="ada@example.com")
    assert "MessageService" in unavailable.value.message
    assert unavailable.value.service == "message"
    assert unavailable.value.__cause__ is not None


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_call_slower_than_its_timeout_is_deadline_exceeded(
    live: System, transport: mc.Transport
) -> None:
    email = new_email("slow")
    with connect(live) as setup:
        setup.users.register("Slow", email, PASSWORD)
    # Checking an Argon2id hash takes far longer than a millisecond.
    with connect(live, transport=transport, timeout=0.001) as hasty:
        with pytest.raises(mc.DeadlineExceeded) as late:
            hasty.login(email, PASSWORD)
    assert late.value.code == "DEADLINE_EXCEEDED"
    assert late.value.__cause__ is not None


def test_a_malformed_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_MESSAGE_GRPC", "missing-port")
    with pytest.raises(mc.ConfigError, match="MISSIVE_MESSAGE_GRPC"):
        mc.Client.connect()


async def test_async_errors_keep_the_server_message_and_cause(live: System) -> None:
    ada = await async_signed_in(live, "Ada")
    async with ada:
        assert ada.email
        with pytest.raises(mc.NotFound) as missing:
            await ada.messages.send("nobody@example.com", "hi")
        assert "nobody@example.com" in missing.value.message
        assert isinstance(missing.value.__cause__, GRPCError)
        with pytest.raises(mc.PermissionDenied):
            await ada.users.get("someone-else@example.com")
        with pytest.raises(mc.InvalidArgument):
            await ada.messages.list(page_size=101).to_list()
        with pytest.raises(mc.Unauthenticated):
            await ada.login(ada.email, "wrong password")
    async with async_client(live, transport="rest") as anonymous:
        with pytest.raises(mc.Unauthenticated) as refused:
            await anonymous.notifications.list(email="x@example.com").to_list()
        assert isinstance(refused.value.__cause__, httpx.HTTPStatusError)
        with pytest.raises(mc.AlreadyExists):
            email = new_email("twice")
            await anonymous.users.register("Twice", email, PASSWORD)
            await anonymous.users.register("Twice", email, PASSWORD)
