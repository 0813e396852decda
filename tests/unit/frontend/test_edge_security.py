"""FrontendService's gRPC edge against undecodable requests, on its stream and internal RPC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest

from services.common.bootstrap import Security
from services.common.grpc_edge import SERVICE_TOKEN_HEADER, UNDECODABLE_MESSAGE
from tests.unit.frontend.conftest import BOB, Frontend

INVALID_UTF8 = bytes.fromhex("0a03fffefd")  # field 1 (a string), three bytes that are not UTF-8


@pytest.mark.parametrize("caller", ["anonymous", "user", "service"])
async def test_an_undecodable_subscription_is_invalid_argument(
    frontend: Frontend, token_for: Callable[[str], str], keys: Path, caller: str
) -> None:
    metadata: tuple[tuple[str, str], ...] = ()
    if caller == "user":
        metadata = (("authorization", f"Bearer {token_for(BOB)}"),)
    elif caller == "service":
        credentials = Security.load(keys, "notification").credentials
        metadata = ((SERVICE_TOKEN_HEADER, credentials.token_for("frontend")),)
    async with grpc.aio.insecure_channel(frontend.address) as channel:
        subscribe: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            "/missive.frontend.v1.FrontendService/SubscribeNotifications"
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in subscribe(INVALID_UTF8, metadata=metadata, timeout=5):
                pass
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == UNDECODABLE_MESSAGE
        receive: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/missive.frontend.v1.FrontendService/ReceiveNotification"
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await receive(bytes.fromhex("0a0512"), metadata=metadata, timeout=5)  # truncated
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == UNDECODABLE_MESSAGE
