"""Logging: one JSON object per line (or readable text) with service, request id and fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.common.logging import (
    accepted_request_id,
    configure_logging,
    get_request_id,
    new_request_id,
    request_id_scope,
    reset_request_id,
    set_request_id,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_lines_carry_context_and_fields(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", "user", stream=stream)
    log = logging.getLogger("services.user.test")
    with request_id_scope("req-42"):
        log.info("created %s", "alice@example.com", extra={"fields": {"status": 201}})
    log.debug("hidden below INFO")
    log.warning("no request")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "created alice@example.com"
    assert first["level"] == "INFO"
    assert first["service"] == "user"
    assert first["logger"] == "services.user.test"
    assert first["request_id"] == "req-42"
    assert first["status"] == 201
    assert first["ts"].endswith("Z")
    assert second["request_id"] is None


def test_json_fields_cannot_overwrite_core_keys(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", "user", stream=stream)
    logging.getLogger("x").info("real", extra={"fields": {"message": "fake", "level": "X"}})
    entry = json.loads(stream.getvalue())
    assert (entry["message"], entry["level"]) == ("real", "INFO")


def test_json_exception_stays_on_one_line(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", "user", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exc_info"]


def test_text_format_shows_request_id_and_fields(stream: io.StringIO) -> None:
    configure_logging("DEBUG", "text", "message", stream=stream)
    with request_id_scope("abc"):
        logging.getLogger("services.message").debug("sent", extra={"fields": {"id": "m1"}})
    line = stream.getvalue().strip()
    assert "DEBUG" in line
    assert " message services.message [abc] sent id='m1'" in line


def test_configuring_twice_replaces_the_handler(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", "a", stream=stream)
    configure_logging("INFO", "json", "b", stream=stream)
    logging.getLogger("x").info("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_bad_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "text", "x")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml", "x")


def test_request_id_helpers() -> None:
    assert get_request_id() is None
    token = set_request_id("r1")
    assert get_request_id() == "r1"
    with request_id_scope() as generated:
        assert get_request_id() == generated != "r1"
    assert get_request_id() == "r1"
    reset_request_id(token)
    assert get_request_id() is None


def test_new_request_ids_are_32_hex_digits_and_distinct() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(len(rid) == 32 and int(rid, 16) >= 0 and rid == rid.lower() for rid in ids)
    assert len(set(ids)) == len(ids)
    assert accepted_request_id(ids[0]) == ids[0]  # usable as a caller's id downstream
