"""REST generation: typed models, a handler interface and a Connexion app per OpenAPI document."""

from __future__ import annotations

import keyword
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from codegen.errors import ContractError
from codegen.openapi import Document

_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def snake_case(name: str) -> str:
    """`listConversations` → `list_conversations`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def pascal_case(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", name) if part)


def _docstring(text: str, indent: str) -> str:
    """A docstring block: paragraphs re-filled to 88 columns, blank lines between them (no
    newline after the closing quotes: the template has it)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    width = max(40, 96 - len(indent))
    body = "\n\n".join(
        textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False) for p in paragraphs
    )
    body = body.replace("\\", "\\\\").replace('"""', "'''")
    lines = body.splitlines() or [""]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""'
    joined = "\n".join(f"{indent}{line}" if line else "" for line in lines)
    return f'{indent}"""\n{joined}\n{indent}"""'


_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates") / "rest"),
    autoescape=False,  # the output is Python source, not HTML
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["docstring"] = _docstring
_TEMPLATES.filters["pyrepr"] = repr


@dataclass(frozen=True)
class _Field:
    name: str
    annotation: str
    description: str | None


@dataclass(frozen=True)
class _Model:
    """A TypedDict (`fields`) or, for a named scalar schema, an alias (`alias`)."""

    name: str
    description: str = ""
    fields: tuple[_Field, ...] = ()
    alias: str | None = None


@dataclass(frozen=True)
class _Argument:
    """One keyword argument of a handler method and of the Connexion view calling it."""

    name: str
    annotation: str
    required: bool
    default: Any = None
    view_annotation: str = "Any"


@dataclass
class _Operation:
    operation_id: str
    method_name: str
    http: str
    summary: str
    description: str
    secured: bool
    params: list[_Argument]
    body: _Argument | None
    status: int
    result_type: str | None

    @property
    def arguments(self) -> list[_Argument]:
        """token_info, body, then the required and the optional parameters."""
        token = [_Argument("token_info", "TokenInfo", True, view_annotation="TokenInfo")]
        return [
            *(token if self.secured else []),
            *([self.body] if self.body else []),
            *sorted(self.params, key=lambda param: not param.required),
        ]

    @property
    def call_names(self) -> list[str]:
        """The handler's keyword arguments in the order the view passes them."""
        return [
            *(["token_info"] if self.secured else []),
            *(["body"] if self.body else []),
            *(param.name for param in self.params),
        ]


class RestGenerator:
    """Builds the source of one generated REST package from a validated Document."""

    def __init__(self, document: Document, package: str, api_name: str) -> None:
        self.doc = document
        self.package = package
        self.api_name = api_name
        self.models: dict[str, _Model] = {}

    # -- schemas → TypedDicts -------------------------------------------------

    def _type_of(self, schema: dict[str, Any], hint: str) -> str:
        if "$ref" in schema:
            name: str = schema["$ref"].rsplit("/", 1)[-1]
            self._model(name, self.doc.resolve(schema))
            return name
        result = self._bare_type(schema, hint)
        if schema.get("nullable"):
            result = f"{result} | None"
        return result

    def _bare_type(self, schema: dict[str, Any], hint: str) -> str:
        kind = schema.get("type")
        if "enum" in schema and kind == "string":
            return "Literal[" + ", ".join(repr(value) for value in schema["enum"]) + "]"
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind == "array":
            return f"list[{self._type_of(schema.get('items', {}), hint + 'Item')}]"
        if kind == "object" or "properties" in schema:
            if schema.get("properties"):
                self._model(hint, schema)
                return hint
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return f"dict[str, {self._type_of(extra, hint + 'Value')}]"
            return "dict[str, Any]"
        return "Any"

    def _model(self, name: str, schema: dict[str, Any]) -> None:
        if name in self.models:
            return
        if schema.get("type") not in (None, "object"):
            # A named scalar schema: emit an alias so the name still exists.
            self.models[name] = _Model(name, alias=self._bare_type(schema, name))
            return
        self.models[name] = _Model(name)  # reserve the name: schemas may refer to themselves
        required = set(schema.get("required", []))
        fields = []
        for prop, prop_schema in schema.get("properties", {}).items():
            if not prop.isidentifier() or keyword.iskeyword(prop):
                raise ContractError(
                    f"{self.doc.display}: property {prop!r} of {name} is not a Python identifier"
                )
            annotation = self._type_of(prop_schema, name + pascal_case(prop))
            if prop not in required:
                annotation = f"NotRequired[{annotation}]"
            description = self.doc.resolve(prop_schema).get("description") or prop_schema.get(
                "description"
            )
            fields.append(_Field(prop, annotation, description))
        description = schema.get("description", f"The {name} schema.")
        self.models[name] = _Model(name, description, tuple(fields))

    # -- operations -----------------------------------------------------------

    def _operations(self) -> list[_Operation]:
        default_security = self.doc.data.get("security", [])
        operations = []
        for route, method, op in self.doc.operations():
            status, result_type = self._result(route, method, op)
            security = op.get("security", default_security)
            operations.append(
                _Operation(
                    operation_id=op["operationId"],
                    method_name=snake_case(op["operationId"]),
                    http=f"{method.upper()} {route}",
                    summary=op.get("summary", ""),
                    description=op.get("description", ""),
                    secured=any(requirement for requirement in security),
                    params=self._params(route, method, op),
                    body=self._body(route, method, op),
                    status=status,
                    result_type=result_type,
                )
            )
        return operations

    def _params(self, route: str, method: str, op: dict[str, Any]) -> list[_Argument]:
        """The path and query parameters (headers and cookies are not passed to handlers)."""
        item = self.doc.data["paths"][route]
        params = []
        for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
            param = self.doc.resolve(raw)
            if param["in"] not in ("path", "query"):
                continue
            name = param["name"]
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ContractError(
                    f"{self.doc.where(['paths', route, method])}: parameter {name!r} "
                    "is not a Python identifier"
                )
            schema = param.get("schema", {})
            hint = pascal_case(op["operationId"]) + pascal_case(name)
            params.append(
                _Argument(
                    name=name,
                    annotation=self._type_of(schema, hint),
                    required=bool(param.get("required")),
                    default=self.doc.resolve(schema).get("default"),
                )
            )
        return params

    def _body(self, route: str, method: str, op: dict[str, Any]) -> _Argument | None:
        if "requestBody" not in op:
            return None
        body = self.doc.resolve(op["requestBody"])
        schema = body.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            raise ContractError(
                f"{self.doc.where(['paths', route, method, 'requestBody'])}: "
                "request bodies must be application/json"
            )
        annotation = self._type_of(schema, pascal_case(op["operationId"]) + "Request")
        return _Argument("body", annotation, bool(body.get("required")))

    def _result(self, route: str, method: str, op: dict[str, Any]) -> tuple[int, str | None]:
        """The first 2xx status and the handler's return type (None: no content)."""
        statuses = sorted(int(code) for code in op["responses"] if str(code).startswith("2"))
        if not statuses:
            raise ContractError(
                f"{self.doc.where(['paths', route, method, 'responses'])}: "
                f"{op['operationId']} declares no 2xx response"
            )
        status = statuses[0]
        response = self.doc.resolve(op["responses"][str(status)])
        result_schema = response.get("content", {}).get("application/json", {}).get("schema")
        if result_schema is None:
            return status, None
        result_type = self._type_of(result_schema, pascal_case(op["operationId"]) + "Response")
        other_json = any(
            "application/json" in self.doc.resolve(reply).get("content", {})
            for code, reply in op["responses"].items()
            if str(code) != str(status)
        )
        if response.get("headers") or other_json:
            # The handler chooses the status or sets headers the contract declares.
            result_type = f"Reply[{result_type}]"
        return status, result_type

    # -- rendering ------------------------------------------------------------

    def render(self, header: str) -> dict[str, str]:
        """File name → content for the package."""
        operations = self._operations()
        for name, schema in self.doc.data.get("components", {}).get("schemas", {}).items():
            self._model(name, schema)
        context = {
            "header": header,
            "title": self.doc.data["info"]["title"],
            "display": self.doc.display,
            "api_name": self.api_name,
            "models": [self.models[name] for name in sorted(self.models)],
            "operations": operations,
        }
        return {
            filename: _TEMPLATES.get_template(f"{filename}.j2").render(context)
            for filename in ("__init__.py", "models.py", "interface.py", "app.py")
        }
