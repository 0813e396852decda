"""The compiled validators accept and refuse exactly what the reference `jsonschema` ones do.

The REST runtime validates every parameter, request body and response body with jsonschema-rs
and asks the reference validator (jsonschema, as Connexion extends it for OpenAPI) only to
explain a refusal. These tests run a corpus through both for every schema of the contracts:
documents schemathesis generates from each operation, valid and invalid (response schemas
are given to it as request bodies of a derived document), the invalid bodies of the REST unit
tests, and edge cases where the two engines' defaults differ (regex dialects, formats, big and
float integers, lone surrogates, nullable).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
import schemathesis
import yaml
from connexion.json_schema import resolve_refs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from missive.rest._runtime import (
    PARAMETER,
    REQUEST,
    RESPONSE,
    CompiledValidator,
    compiled_schema,
    compiled_validator,
    native_pattern,
    query_pairs,
)
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode

from tests.unit.message import test_rest as message_rest
from tests.unit.user import test_rest as user_rest

ROOT = Path(__file__).resolve().parents[3]
SPECS = sorted((ROOT / "openapi").glob("*.yaml"))
RESPONSE_PREFIX = "/__response__"


def _resolved(spec: Path) -> dict[str, Any]:
    """The document with its references resolved, as Connexion hands schemas to validators."""
    document: dict[str, Any] = resolve_refs(yaml.safe_load(spec.read_text(encoding="utf-8")))
    return document


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                yield path, method, operation


def _json_schema(content: dict[str, Any]) -> dict[str, Any] | None:
    schema = content.get("application/json", {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _derived(document: dict[str, Any]) -> dict[str, Any]:
    """The document plus one POST per JSON response, taking that response's schema as its body.

    Schemathesis generates requests only; this lets it generate response documents too.
    """
    derived = copy.deepcopy(document)
    for path, method, operation in list(_operations(document)):
        for status, response in operation["responses"].items():
            schema = _json_schema(response.get("content", {}))
            if schema is None:
                continue
            derived["paths"][f"{RESPONSE_PREFIX}/{operation['operationId']}/{status}"] = {
                "post": {
                    "operationId": f"{operation['operationId']}Response{status}",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": copy.deepcopy(schema)}},
                    },
                    "responses": {"204": {"description": "derived"}},
                }
            }
        del path, method
    return derived


class Checker:
    """Both validators of every schema of one derived document, looked up per case."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.bodies: dict[str, CompiledValidator] = {}
        self.parameters: dict[tuple[str, str, str], CompiledValidator] = {}
        for path, _method, operation in _operations(document):
            kind = RESPONSE if path.startswith(RESPONSE_PREFIX) else REQUEST
            body = _json_schema(operation.get("requestBody", {}).get("content", {}))
            if body is not None:
                self.bodies[operation["operationId"]] = CompiledValidator(body, kind)
            parameters = [*document["paths"][path].get("parameters", [])]
            for parameter in [*parameters, *operation.get("parameters", [])]:
                key = (operation["operationId"], parameter["in"], parameter["name"])
                self.parameters[key] = CompiledValidator(parameter["schema"], PARAMETER)
        self.compared = 0

    def same(self, validator: CompiledValidator, instance: Any) -> None:
        compiled = validator.is_valid(instance)
        reference = validator.reference_error(instance) is None
        assert compiled == reference, (
            f"compiled {'accepts' if compiled else 'refuses'} and the reference "
            f"{'accepts' if reference else 'refuses'} {instance!r}"
        )
        self.compared += 1

    def case(self, operation_id: str, case: Any) -> None:
        if operation_id in self.bodies and case.body is not NOT_SET:
            self.same(self.bodies[operation_id], case.body)
        for name, value in (case.query or {}).items():
            self.parameter(operation_id, "query", name, value)
        for name, value in (case.path_parameters or {}).items():
            # Path parameters come URL-encoded; the router hands them over decoded.
            self.parameter(
                operation_id, "path", name, unquote(value) if isinstance(value, str) else value
            )

    def parameter(self, operation_id: str, location: str, name: str, value: Any) -> None:
        validator = self.parameters.get((operation_id, location, name))
        if validator is not None:
            self.same(validator, value)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.stem)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_corpus_is_judged_alike(spec: Path, mode: GenerationMode) -> None:
    derived = _derived(_resolved(spec))
    checker = Checker(derived)
    loaded = schemathesis.openapi.from_dict(derived)
    strategies = []
    for result in loaded.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        strategies.append(
            st.tuples(st.just(operation.definition.raw["operationId"]), operation.as_strategy(mode))
        )
    assert len(checker.bodies) >= 5

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(strategies))
    def judged_alike(drawn: tuple[str, Any]) -> None:
        checker.case(*drawn)

    judged_alike()
    # Most of the 300 cases carry several documents (parameters and a body); Hypothesis may end
    # early or draw cases with nothing to compare, so only a floor well under that is asserted.
    assert checker.compared > 200


def _unit_test_bodies() -> list[tuple[str, str, Any]]:
    """The invalid bodies of the REST unit tests, with the spec and operation they were sent to."""
    cases: list[tuple[str, str, Any]] = []
    [user_cases] = [
        mark.args[1]
        for mark in user_rest.test_create_user_bad_input_writes_nothing.pytestmark  # type: ignore[attr-defined]
        if mark.name == "parametrize"
    ]
    cases += [("user", "createUser", body) for body in user_cases]
    for mark in message_rest.test_bad_input_is_400_and_writes_nothing.pytestmark:
        if mark.name == "parametrize":
            for method, url, _params, body in mark.args[1]:
                if (method, url) == ("POST", "/messages") and body is not None:
                    cases.append(("message", "sendMessage", body))
    return cases


def _body_validator(spec: str, operation_id: str, kind: str = REQUEST) -> CompiledValidator:
    document = _resolved(ROOT / "openapi" / f"{spec}.yaml")
    for _path, _method, operation in _operations(document):
        if operation["operationId"] == operation_id:
            schema = _json_schema(operation["requestBody"]["content"])
            assert schema is not None
            return CompiledValidator(schema, kind)
    raise AssertionError(f"no operation {operation_id} in {spec}")


def test_unit_tests_invalid_bodies_are_judged_alike() -> None:
    cases = _unit_test_bodies()
    assert len(cases) > 15
    refused = 0
    for spec, operation_id, body in cases:
        validator = _body_validator(spec, operation_id)
        compiled = validator.is_valid(body)
        assert compiled == (validator.reference_error(body) is None), body
        refused += not compiled
    # Two are refused by the service rather than the schema (e.g. a lone surrogate).
    assert refused >= len(cases) - 2


EMAIL = {"type": "string", "format": "email", "pattern": r"^\s*[^\s@]+@[^\s@]+\.[^\s@]+\s*$"}

EDGE_CASES: list[tuple[dict[str, Any], str, list[Any]]] = [
    # Python's `$` matches before a final newline; ECMA-262's does not.
    ({"type": "string", "pattern": "^[0-9]{1,19}$"}, PARAMETER, ["123", "123\n", "12a", ""]),
    # Python's `\s` includes \x1c-\x1f; Unicode White_Space does not.
    (
        EMAIL,
        REQUEST,
        ["a@b.co", " a@b.co\n", "\x1ca@b.co", "\x1fa@b.co\x1c", "a@b", "\u00a0a@b.co"],
    ),
    (
        {"type": "string", "format": "email"},
        REQUEST,
        ["a@b", "@", "plain", "a b@c d", "\uff20", "a\n@", "é@é", "a\ud800@b", "", 5],
    ),
    (
        {"type": "string", "format": "date-time"},
        RESPONSE,
        ["2025-01-14T12:00:00Z", "2025-01-14T12:00:00", "2025-02-30T12:00:00Z", "soon"],
    ),
    ({"type": "string", "format": "uri-reference"}, RESPONSE, ["/a b", "::", "http://x/"]),
    (
        {"type": "integer", "format": "int64", "minimum": 0, "maximum": 9223372036854775807},
        PARAMETER,
        [0, -1, 1.0, 1.5, True, 2**63 - 1, 2**63, 2**80, "1"],
    ),
    ({"type": "string", "minLength": 2, "maxLength": 3}, REQUEST, ["é", "éé", "\U0001f600" * 3]),
    ({"type": "string", "maxLength": 8}, REQUEST, ["abc\ud800", "\ud800" * 9]),
    ({"type": "string", "nullable": True, "enum": ["a"]}, REQUEST, [None, "a", "b", 1]),
    ({"type": "string", "enum": ["a"]}, PARAMETER, [None, "a"]),
    ({"type": "string"}, REQUEST, [None, ""]),
    (
        {"type": "object", "properties": {"secret": {"type": "string", "writeOnly": True}}},
        RESPONSE,
        [{}, {"secret": "x"}],
    ),
    (
        {"type": "object", "properties": {"secret": {"type": "string", "writeOnly": True}}},
        REQUEST,
        [{}, {"secret": "x"}],
    ),
    (
        {"type": "object", "additionalProperties": False, "minProperties": 1, "required": ["a"]},
        REQUEST,
        [{}, {"a": 1}, {"a": 1, "b": 2}, [], "a"],
    ),
    ({"type": "number", "minimum": 0}, REQUEST, [0, -0.0, 1e308, -1e-300]),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, REQUEST, [[1, 1.0]]),
]


@pytest.mark.parametrize(("schema", "kind", "instances"), EDGE_CASES)
def test_engine_differences_are_judged_alike(
    schema: dict[str, Any], kind: str, instances: list[Any]
) -> None:
    validator = CompiledValidator(schema, kind)
    for instance in instances:
        compiled = validator.is_valid(instance)
        assert compiled == (validator.reference_error(instance) is None), instance


def test_non_finite_numbers_are_left_to_the_reference() -> None:
    """JSON cannot write them, but the json module reads `Infinity` and `NaN`: jsonschema-rs
    refuses them, and the reference decides, as before."""
    validator = CompiledValidator({"type": "number", "minimum": 0}, REQUEST)
    assert validator.first_error(float("inf")) is None
    assert validator.first_error(float("nan")) is None
    error = validator.first_error(float("-inf"))
    assert error is not None and error.validator == "minimum"


def test_a_refusal_is_explained_by_the_reference_error() -> None:
    validator = CompiledValidator(
        {"type": "object", "properties": {"password": {"type": "string", "minLength": 8}}},
        REQUEST,
    )
    error = validator.first_error({"password": "short"})
    assert error is not None and error.validator == "minLength"
    assert list(error.absolute_path) == ["password"]
    assert validator.first_error({"password": "long enough"}) is None


def test_schemas_are_compiled_once_per_object() -> None:
    schema = {"type": "string", "pattern": "^a"}
    first = compiled_validator(schema, PARAMETER)
    assert compiled_validator(schema, PARAMETER) is first
    assert compiled_validator(dict(schema), PARAMETER) is not first
    assert compiled_validator(schema, REQUEST) is not first


def test_the_translation_keeps_value_keywords_as_they_are() -> None:
    schema = {
        "type": "object",
        "nullable": True,
        "properties": {
            "pattern": {"type": "string", "pattern": "^x"},
            "digits": {"type": "string", "pattern": r"^\d"},
        },
        "default": {"pattern": "^y", "nullable": True, "type": "string"},
        "enum": [{"type": "string", "nullable": True}],
    }
    translated = compiled_schema(schema, REQUEST)
    assert translated["type"] == ["object", "null"]
    assert translated["properties"]["pattern"] == {"type": "string", "pattern": "^x"}
    assert translated["properties"]["digits"] == {
        "type": "string",
        "x-missive-python-pattern": r"^\d",
    }
    assert translated["default"] == schema["default"]
    assert translated["enum"] == [{"type": "string", "nullable": True}, None]
    assert compiled_schema(schema, PARAMETER)["type"] == "object"


def test_the_email_format_is_checked_by_the_compiled_validator_itself() -> None:
    """The reference's `email` check is `"@" in value`: the pattern `@`, run without a call
    back into Python, next to the contract's own pattern."""
    translated = compiled_schema(EMAIL, RESPONSE)
    assert "format" not in translated and "x-missive-python-pattern" not in translated
    assert translated["pattern"] == "@"
    assert translated["allOf"] == [{"pattern": native_pattern(EMAIL["pattern"])}]


def _contract_patterns() -> list[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for spec in SPECS:
        walk(yaml.safe_load(spec.read_text(encoding="utf-8")))
    return sorted(found)


CONTRACT_PATTERNS = _contract_patterns()
# Where Python's `re` and ECMA-262 read the same text differently, or the translation must
# keep the pieces apart.
TRANSLATED_PATTERNS = [
    *CONTRACT_PATTERNS,
    "^a.b$",
    r"x\s+y",
    "[]a-c]+",
    r"[^\s\-]",
    "(ab|c)?d{2,}?$",
    r"^\x41\u00e9\.\n",
    "a{3}",
    "",
]
# Characters on which the two dialects disagree (whitespace, line terminators, controls),
# those the contracts' patterns name, and a few of everything else.
ALPHABET = st.sampled_from(
    [
        *'abcxyABZ0129_-@.:/*?[]\\{}"é',
        *"\n\r\t\x0b\x0c \x00\x1c\x1f\x7f\x85\xa0\u1680\u2000\u2028\u2029\u3000\ufeff\u200b",
        "\U0001f600",
    ]
)


def test_the_contracts_patterns_are_all_translated() -> None:
    assert CONTRACT_PATTERNS
    assert [p for p in CONTRACT_PATTERNS if native_pattern(p) is None] == []


@pytest.mark.parametrize("pattern", TRANSLATED_PATTERNS)
@settings(max_examples=400, deadline=None)
@given(text=st.lists(ALPHABET, max_size=12).map("".join))
def test_a_translated_pattern_matches_what_pythons_matches(pattern: str, text: str) -> None:
    native = native_pattern(pattern)
    assert native is not None
    compiled = compiled_schema({"type": "string", "pattern": pattern}, PARAMETER)
    assert compiled == {"type": "string", "pattern": native}
    validator = CompiledValidator({"type": "string", "pattern": pattern}, PARAMETER)
    for candidate in (text, f"ab@cd.ef{text}", f"{text}ab@cd.ef", f" {text}x@y.z\n"):
        expected = re.search(pattern, candidate) is not None
        assert validator.is_valid(candidate) == expected, (pattern, candidate)
        assert (validator.reference_error(candidate) is None) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        r"\d",
        r"\w+",
        r"\bword",
        r"a\Z",
        r"(a)\1",
        "a*+",
        "a{,3}",
        "a**",
        "(?=a)",
        "(?i)a",
        "(?P<n>a)",
        "[a-b-c]",
        r"[\s-a]",
        "[[:alpha:]]",
        "^a|^b",
        "a$|b",
        "a{x}",
        "}",
        "\U0001f600",
        "[\U0001f600a]",
        "\\",
    ],
)
def test_what_the_translation_does_not_cover_stays_pythons(pattern: str) -> None:
    assert native_pattern(pattern) is None
    translated = compiled_schema({"type": "string", "pattern": pattern}, PARAMETER)
    assert translated == {"type": "string", "x-missive-python-pattern": pattern}


@settings(max_examples=2000)
@given(st.lists(st.sampled_from([*"ab=&%+;@.", "", "é", "%41", "%zz", "=="]), max_size=12))
def test_the_query_is_split_as_parse_qsl_splits_it(pieces: list[str]) -> None:
    query = "".join(pieces)
    assert query_pairs(query) == parse_qsl(query, keep_blank_values=True)
