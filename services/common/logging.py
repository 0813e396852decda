"""Process-wide logging set-up (text or one JSON object per line) and the request-id context.

Every log line carries the request id of the work it belongs to: the edges set it per call
(the gRPC interceptor from the ``x-request-id`` metadata, the REST middleware from the
``X-Request-Id`` header, a new one when the caller sent none or an unusable one), channels to
peers pass it on, and relays set the id of the outbox entry they deliver. When tracing is on
(:mod:`services.common.tracing`), every line written inside a span also carries its trace and
span ids (``trace_id``, ``span_id``), the same in every service a traced message went through.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

from services.common.tracing import current_span_ids

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "TextFormatter",
    "accepted_request_id",
    "configure_logging",
    "get_request_id",
    "new_request_id",
    "request_id_scope",
    "reset_request_id",
    "set_request_id",
]

# A ContextVar has to live at module level; it holds per-request data, not a client.
_request_id: ContextVar[str | None] = ContextVar("missive_request_id", default=None)

ACCESS_LOGGER = "uvicorn.access"
"""uvicorn's access log: one line per HTTP request, written only at ``LOG_LEVEL=DEBUG``."""

REQUEST_ID_HEADER = "x-request-id"
"""The gRPC metadata key and (case-insensitive) HTTP header that carry a request id."""
# What a caller may choose as request id: a plain token, so it is safe in any log format.
_USABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

_random_bits = random.Random().getrandbits

# Marks the handler this module installs, so a second configure_logging() replaces it.
_HANDLER_NAME = "missive"


def get_request_id() -> str | None:
    """The request id of the current task/context, if one was set."""
    return _request_id.get()


def set_request_id(value: str | None) -> Token[str | None]:
    """Set the current request id; pass the token to :func:`reset_request_id` when done."""
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    """Restore the request id that was current before :func:`set_request_id`."""
    _request_id.reset(token)


def new_request_id() -> str:
    """A fresh random request id: 32 hex digits, like a UUID's hex.

    Request ids only correlate log lines and spans, they guard nothing: the pseudo-random
    generator is enough, and costs a tenth of ``uuid4`` (a system call per id) on every call
    that arrives without one."""
    return f"{_random_bits(128):032x}"


def accepted_request_id(given: str | None) -> str:
    """``given`` if it is a plain token (letters, digits, ``._-``; at most 64), else a new id."""
    if given and _USABLE_REQUEST_ID.fullmatch(given):
        return given
    return new_request_id()


@contextmanager
def request_id_scope(value: str | None = None) -> Iterator[str]:
    """Run a block with a request id (a new one unless given), restoring the previous one after."""
    rid = value or new_request_id()
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)


class _ContextFilter(logging.Filter):
    """Stamps every record with the service name and the current request id."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = _request_id.get()
        ids = current_span_ids()
        record.trace_id, record.span_id = ids if ids is not None else (None, None)
        return True


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, logger, message, request_id, trace_id,
    span_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "service": getattr(record, "service", None),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
        }
        for key, value in _fields(record).items():
            entry.setdefault(str(key), value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts LEVEL service logger [request_id] trace=id message key=value ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record),
            f"{record.levelname:<7}",
            str(getattr(record, "service", "-")),
            record.name,
        ]
        rid = getattr(record, "request_id", None)
        if rid:
            parts.append(f"[{rid}]")
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            parts.append(f"trace={trace_id}")
        parts.append(record.getMessage())
        parts.extend(f"{key}={value!r}" for key, value in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def configure_logging(
    level: str, fmt: str, service_name: str, *, stream: IO[str] | None = None
) -> None:
    """Send all logging to ``stream`` (stderr) in ``fmt`` ("text" or "json") at ``level``.

    Call once from the entry point; calling again replaces the handler installed before.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (use 'text' or 'json')")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(service_name))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn's access log is a line per request: like every per-call line, DEBUG only (a
    # line costs a request ~20 µs of CPU; a refused one next to nothing).
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
    )
