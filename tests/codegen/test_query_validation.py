"""The parameter validator's direct path for operations whose parameters are all one-value
query parameters resolves and refuses every query exactly as Connexion's request and URI
parser do (the path it takes for any other operation or query).

Each operation of the three contracts is checked; Hypothesis builds the queries from the
operations' own parameter names, names they do not declare, the deepObject form, repeated
names, blank and missing values, values of each type and percent-encoding.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from connexion.exceptions import ProblemException
from connexion.json_schema import resolve_refs
from hypothesis import given, settings
from hypothesis import strategies as st
from missive.rest._runtime import PreparedURIParser, SafeParameterValidator
from missive.rest._runtime.validators import QUERY_PARAMS_KEY

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "openapi").glob("*.yaml"))


def _operations() -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    for spec in SPECS:
        document = resolve_refs(yaml.safe_load(spec.read_text(encoding="utf-8")))
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method in ("get", "put", "post", "delete", "patch"):
                    parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
                    found.append((f"{spec.stem} {method.upper()} {path}", parameters))
    return found


OPERATIONS = _operations()
DIRECT = [
    name
    for name, parameters in OPERATIONS
    if parameters
    and all(
        p["in"] == "query" and p.get("schema", {}).get("type") not in ("array", "object")
        for p in parameters
    )
]


def _validator(parameters: list[dict[str, Any]], strict: bool) -> SafeParameterValidator:
    return SafeParameterValidator(
        parameters,
        uri_parser=PreparedURIParser(parameters, {}),
        strict_validation=strict,
        security_query_params=[],
    )


@functools.cache
def _validators(name: str, strict: bool) -> tuple[SafeParameterValidator, SafeParameterValidator]:
    """The validator as built, and one made to take Connexion's path for every query."""
    parameters = dict(OPERATIONS)[name]
    direct, reference = _validator(parameters, strict), _validator(parameters, strict)
    reference.__dict__["_scalar_query"] = None
    return direct, reference


def _outcome(validator: SafeParameterValidator, query: str) -> tuple[Any, ...]:
    scope: dict[str, Any] = {
        "type": "http",
        "query_string": query.encode("latin-1"),
        "headers": [],
        "path_params": {},
    }
    try:
        validator.validate(scope)
    except ProblemException as problem:
        return (
            "problem",
            type(problem),
            problem.status,
            problem.title,
            problem.detail,
            getattr(problem, "ext", None),
        )
    resolved = scope[QUERY_PARAMS_KEY]
    return ("ok", {k: (type(v), v) for k, v in resolved.items()}, list(resolved))


def test_the_list_operations_take_the_direct_path() -> None:
    assert {"message GET /list_conversations", "notification GET /list_notifications"} <= set(
        DIRECT
    )
    for name in DIRECT:
        assert _validators(name, True)[0]._scalar_query is not None


def _queries(name: str) -> st.SearchStrategy[str]:
    declared = [p["name"] for p in dict(OPERATIONS)[name]]
    names = st.sampled_from([*declared, "colour", "a[b]", f"{declared[0]}[x]", ""])
    values = st.sampled_from(
        [
            "",
            "0",
            "5",
            "-1",
            "1.5",
            "x",
            "true",
            "99999999999999999999",
            "ada@example.com",
            "ada%40example.com",
            "%zz",
            "a+b",
            "null",
            "é",
        ]
    )
    pair = st.one_of(st.tuples(names, values).map("=".join), names)
    return st.lists(pair, max_size=5).map("&".join)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("name", DIRECT)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_query_gets_what_connexions_path_gives(name: str, strict: bool, data: Any) -> None:
    query = data.draw(_queries(name))
    direct, reference = _validators(name, strict)
    assert _outcome(direct, query) == _outcome(reference, query), query
