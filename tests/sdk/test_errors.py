"""The one exception family and its translation tables (gRPC status names, HTTP problem+json)."""

from __future__ import annotations

import json

import missive_client as mc
import pytest
from missive_client._errors import from_grpc, from_http, parse_retry_after

GRPC_CASES = [
    ("INVALID_ARGUMENT", mc.InvalidArgument),
    ("OUT_OF_RANGE", mc.InvalidArgument),
    ("FAILED_PRECONDITION", mc.InvalidArgument),
    ("UNAUTHENTICATED", mc.Unauthenticated),
    ("PERMISSION_DENIED", mc.PermissionDenied),
    ("NOT_FOUND", mc.NotFound),
    ("ALREADY_EXISTS", mc.AlreadyExists),
    ("ABORTED", mc.AlreadyExists),
    ("RESOURCE_EXHAUSTED", mc.RateLimited),
    ("UNAVAILABLE", mc.Unavailable),
    ("DEADLINE_EXCEEDED", mc.DeadlineExceeded),
    ("INTERNAL", mc.ServerError),
    ("UNKNOWN", mc.ServerError),
    ("UNIMPLEMENTED", mc.ServerError),
    ("DATA_LOSS", mc.ServerError),
    ("CANCELLED", mc.ServerError),
]

HTTP_CASES = [
    (400, mc.InvalidArgument, "INVALID_ARGUMENT"),
    (401, mc.Unauthenticated, "UNAUTHENTICATED"),
    (403, mc.PermissionDenied, "PERMISSION_DENIED"),
    (404, mc.NotFound, "NOT_FOUND"),
    (409, mc.AlreadyExists, "ALREADY_EXISTS"),
    (413, mc.InvalidArgument, "INVALID_ARGUMENT"),
    (422, mc.InvalidArgument, "INVALID_ARGUMENT"),
    (429, mc.RateLimited, "RESOURCE_EXHAUSTED"),
    (500, mc.ServerError, "INTERNAL"),
    (502, mc.Unavailable, "UNAVAILABLE"),
    (503, mc.Unavailable, "UNAVAILABLE"),
    (504, mc.DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (418, mc.ServerError, "INTERNAL"),
]


@pytest.mark.parametrize(("code", "expected"), GRPC_CASES)
def test_grpc_status_maps_to_one_class_and_keeps_the_message(
    code: str, expected: type[mc.MissiveError]
) -> None:
    error = from_grpc(code, "the server's own words", service="message")
    assert type(error) is expected
    assert str(error) == error.message == "the server's own words"
    assert error.code == code
    assert error.http_status is None and error.service == "message"


@pytest.mark.parametrize(("status", "expected", "code"), HTTP_CASES)
def test_problem_json_maps_to_the_same_classes(
    status: int, expected: type[mc.MissiveError], code: str
) -> None:
    body = json.dumps({"type": "about:blank", "title": "T", "status": status, "detail": "why"})
    error = from_http(status, body.encode(), {})
    assert type(error) is expected
    assert error.message == "why" and error.http_status == status and error.code == code


def test_problem_without_detail_uses_the_title_and_a_non_json_body_the_status() -> None:
    assert from_http(404, b'{"title": "Not Found"}', {}).message == "Not Found"
    assert from_http(502, b"<html>bad gateway</html>", {}).message == "the server answered HTTP 502"
    assert from_http(500, b"[1, 2]", {}).message == "the server answered HTTP 500"
    assert from_grpc("INTERNAL", "").message == "the server answered INTERNAL"


def test_rate_limited_carries_retry_after_from_header_or_trailer() -> None:
    error = from_http(429, b'{"detail": "slow down"}', {"retry-after": "30"})
    assert isinstance(error, mc.RateLimited) and error.retry_after == 30.0
    trailer = from_grpc("RESOURCE_EXHAUSTED", "busy", retry_after=5.0)
    assert isinstance(trailer, mc.RateLimited) and trailer.retry_after == 5.0
    assert isinstance(from_http(429, b"", {}), mc.RateLimited)
    assert from_http(429, b"", {}).retry_after is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30", 30.0), (b"5", 5.0), (" 1.5 ", 1.5), ("-1", None), ("soon", None), (None, None)],
)
def test_retry_after_accepts_delta_seconds_only(raw: str | bytes | None, seconds: float | None):
    assert parse_retry_after(raw) == seconds


def test_every_class_is_a_missive_error_and_config_error_is_also_a_value_error() -> None:
    for name in mc.__all__:
        obj = getattr(mc, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, mc.MissiveError), name
    assert issubclass(mc.ConfigError, ValueError)
