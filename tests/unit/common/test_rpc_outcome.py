"""How a relay judges each gRPC status: transient, permanent or unexpected."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from services.common.delivery import PermanentDeliveryError, TransientDeliveryError
from services.common.rpc_outcome import TRANSIENT_CODES, delivery_error

PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT})


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "details here")


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ],
)
def test_outages_and_misconfiguration_are_transient(code: grpc.StatusCode) -> None:
    error = delivery_error(rpc_error(code), permanent=PERMANENT, refused="x refused 1")
    assert isinstance(error, TransientDeliveryError)
    assert code.name in str(error) and "details here" in str(error)


def test_a_documented_refusal_is_permanent_and_says_what_was_refused() -> None:
    error = delivery_error(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT), permanent=PERMANENT, refused="x refused 1"
    )
    assert isinstance(error, PermanentDeliveryError)
    assert str(error) == "x refused 1: INVALID_ARGUMENT: details here"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,  # not documented as permanent for this call
    ],
)
def test_anything_else_is_unexpected_and_left_as_it_is(code: grpc.StatusCode) -> None:
    original = rpc_error(code)
    assert delivery_error(original, permanent=frozenset(), refused="x") is original
    assert code not in TRANSIENT_CODES
