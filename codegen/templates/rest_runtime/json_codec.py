"""JSON with orjson for speed, falling back to the json module for what orjson refuses."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import orjson
from connexion.jsonifier import JSONEncoder


def loads_json(text: str | bytes) -> Any:
    """Parse JSON as the json module does, with orjson for speed.

    orjson is stricter (no NaN, no lone surrogates, 64-bit integers): what it refuses is
    parsed by the json module, whose error messages the problem+json bodies keep.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _json_default(value: Any) -> Any:
    """Connexion's JSON encoding of the types JSON lacks (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime.datetime):
        return value.isoformat("T") + ("" if value.tzinfo else "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class FastJSON:
    """The json module's `dumps` and `loads` for Connexion's Jsonifier, with orjson.

    Replies are compact UTF-8 JSON; what orjson cannot encode (integers beyond 64 bits,
    non-string keys) is encoded by the json module as before.
    """

    @staticmethod
    def dumps(data: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(data, default=_json_default, option=_ORJSON_OPTIONS).decode()
        except TypeError:
            return json.dumps(data, **kwargs)

    @staticmethod
    def loads(data: str | bytes) -> Any:
        return loads_json(data)


def dumps_reply(data: Any) -> bytes:
    """A reply body as Connexion's Jsonifier writes it with :class:`FastJSON` (a newline last)."""
    try:
        return orjson.dumps(
            data, default=_json_default, option=_ORJSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
        )
    except TypeError:
        return (json.dumps(data, cls=JSONEncoder) + "\n").encode()
