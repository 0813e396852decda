"""REST generation: typed models, a handler interface and a Connexion app per OpenAPI document."""

from __future__ import annotations

import keyword
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from codegen.errors import ContractError
from codegen.openapi import Document

_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def snake_case(name: str) -> str:
    """`listConversations` → `list_conversations`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def pascal_case(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", name) if part)


def _docstring(text: str, indent: str) -> str:
    """A docstring block: paragraphs re-filled to 88 columns, blank lines between them."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    width = max(40, 96 - len(indent))
    body = "\n\n".join(
        textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False) for p in paragraphs
    )
    body = body.replace("\\", "\\\\").replace('"""', "'''")
    lines = body.splitlines() or [""]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""\n'
    joined = "\n".join(f"{indent}{line}" if line else "" for line in lines)
    return f'{indent}"""\n{joined}\n{indent}"""\n'


@dataclass
class _Param:
    name: str
    annotation: str
    required: bool
    default: Any
    description: str


@dataclass
class _Operation:
    operation_id: str
    method_name: str
    http: str
    summary: str
    description: str
    secured: bool
    params: list[_Param]
    body_type: str | None
    body_required: bool
    status: int
    result_type: str | None


class RestGenerator:
    """Builds the source of one generated REST package from a validated Document."""

    def __init__(self, document: Document, package: str, api_name: str) -> None:
        self.doc = document
        self.package = package
        self.api_name = api_name
        self.models: dict[str, str] = {}
        self._model_order: list[str] = []

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
        if name in self.models or schema.get("type") not in (None, "object"):
            if name not in self.models and schema.get("type") not in (None, "object"):
                # A named scalar schema: emit an alias so the name still exists.
                self.models[name] = f"{name} = {self._bare_type(schema, name)}\n"
                self._model_order.append(name)
            return
        self.models[name] = ""  # reserve the name: schemas may refer to themselves
        required = set(schema.get("required", []))
        lines = [f"class {name}(TypedDict):\n"]
        lines.append(_docstring(schema.get("description", f"The {name} schema."), "    "))
        for prop, prop_schema in schema.get("properties", {}).items():
            if not prop.isidentifier() or keyword.iskeyword(prop):
                raise ContractError(
                    f"{self.doc.display}: property {prop!r} of {name} is not a Python identifier"
                )
            annotation = self._type_of(prop_schema, name + pascal_case(prop))
            if prop not in required:
                annotation = f"NotRequired[{annotation}]"
            lines.append(f"    {prop}: {annotation}\n")
            description = self.doc.resolve(prop_schema).get("description") or prop_schema.get(
                "description"
            )
            if description:
                lines.append(_docstring(description, "    "))
        self.models[name] = "".join(lines)
        self._model_order.append(name)

    # -- operations -----------------------------------------------------------

    def _operations(self) -> list[_Operation]:
        default_security = self.doc.data.get("security", [])
        operations = []
        for route, method, op in self.doc.operations():
            op_id = op["operationId"]
            item = self.doc.data["paths"][route]
            params: list[_Param] = []
            for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
                param = self.doc.resolve(raw)
                if param["in"] not in ("path", "query"):
                    continue  # headers and cookies are not passed to handlers
                name = param["name"]
                if not name.isidentifier() or keyword.iskeyword(name):
                    raise ContractError(
                        f"{self.doc.where(['paths', route, method])}: parameter {name!r} "
                        "is not a Python identifier"
                    )
                schema = param.get("schema", {})
                params.append(
                    _Param(
                        name=name,
                        annotation=self._type_of(schema, pascal_case(op_id) + pascal_case(name)),
                        required=bool(param.get("required")),
                        default=self.doc.resolve(schema).get("default"),
                        description=param.get("description", ""),
                    )
                )
            body_type = None
            body_required = False
            if "requestBody" in op:
                body = self.doc.resolve(op["requestBody"])
                schema = body.get("content", {}).get("application/json", {}).get("schema")
                if schema is None:
                    raise ContractError(
                        f"{self.doc.where(['paths', route, method, 'requestBody'])}: "
                        "request bodies must be application/json"
                    )
                body_type = self._type_of(schema, pascal_case(op_id) + "Request")
                body_required = bool(body.get("required"))
            statuses = sorted(int(code) for code in op["responses"] if str(code).startswith("2"))
            if not statuses:
                raise ContractError(
                    f"{self.doc.where(['paths', route, method, 'responses'])}: "
                    f"{op_id} declares no 2xx response"
                )
            status = statuses[0]
            response = self.doc.resolve(op["responses"][str(status)])
            result_schema = response.get("content", {}).get("application/json", {}).get("schema")
            result_type = (
                None
                if result_schema is None
                else self._type_of(result_schema, pascal_case(op_id) + "Response")
            )
            other_json = any(
                "application/json" in self.doc.resolve(reply).get("content", {})
                for code, reply in op["responses"].items()
                if str(code) != str(status)
            )
            if result_type is not None and (response.get("headers") or other_json):
                # The handler chooses the status or sets headers the contract declares.
                result_type = f"Reply[{result_type}]"
            security = op.get("security", default_security)
            operations.append(
                _Operation(
                    operation_id=op_id,
                    method_name=snake_case(op_id),
                    http=f"{method.upper()} {route}",
                    summary=op.get("summary", ""),
                    description=op.get("description", ""),
                    secured=any(requirement for requirement in security),
                    params=params,
                    body_type=body_type,
                    body_required=body_required,
                    status=status,
                    result_type=result_type,
                )
            )
        return operations

    # -- rendering ------------------------------------------------------------

    def render(self, header: str) -> dict[str, str]:
        """File name → content for the package."""
        operations = self._operations()
        for name, schema in self.doc.data.get("components", {}).get("schemas", {}).items():
            self._model(name, schema)
        return {
            "__init__.py": self._render_init(header),
            "models.py": self._render_models(header),
            "interface.py": self._render_interface(header, operations),
            "app.py": self._render_app(header, operations),
        }

    def _render_init(self, header: str) -> str:
        title = self.doc.data["info"]["title"]
        return (
            f"{header}"
            f'"""Generated REST layer of {title}: models, handler interface, app builder."""\n\n'
            f"from .app import create_app\n"
            f"from .interface import {self.api_name}\n\n"
            f'__all__ = ["{self.api_name}", "create_app"]\n'
        )

    def _render_models(self, header: str) -> str:
        body = "\n\n".join(self.models[name] for name in sorted(self._model_order))
        return (
            f"{header}"
            f'"""Typed models for the schemas of {self.doc.display}."""\n\n'
            "from __future__ import annotations\n\n"
            "from typing import Any, Literal, NotRequired, TypedDict\n\n"
            "__all__ = [\n"
            + "".join(f'    "{name}",\n' for name in sorted(self._model_order))
            + "]\n\n\n"
            + body
        )

    def _signature(self, op: _Operation, *, for_wrapper: bool) -> list[str]:
        args = []
        ordered = sorted(op.params, key=lambda param: not param.required)
        for param in ordered:
            if for_wrapper:
                annotation = "Any"
            else:
                annotation = param.annotation
            if param.required:
                args.append(f"{param.name}: {annotation}")
            elif param.default is not None:
                args.append(f"{param.name}: {annotation} = {param.default!r}")
            else:
                args.append(f"{param.name}: {annotation} | None = None")
        if op.body_type:
            annotation = "Any" if for_wrapper else op.body_type
            if op.body_required:
                args.insert(0, f"body: {annotation}")
            else:
                args.insert(0, f"body: {annotation} | None = None")
        if op.secured:
            args.insert(0, "token_info: TokenInfo")
        return args

    def _render_interface(self, header: str, operations: list[_Operation]) -> str:
        title = self.doc.data["info"]["title"]
        out = [
            header,
            f'"""Handler interface for {title}: implement every method to serve the API."""\n\n',
            "from __future__ import annotations\n\n",
            "import abc\n",
            "from typing import Any, Literal\n\n",
            "from missive.rest._runtime import Reply, TokenInfo\n\n",
            "from .models import *  # noqa: F403\n\n",
            "\n",
            f"class {self.api_name}(abc.ABC):\n",
            _docstring(
                f"{title} handlers, one coroutine per operationId of {self.doc.display}. "
                "Raise connexion.exceptions.ProblemException for errors; they become "
                "application/problem+json responses.",
                "    ",
            ),
        ]
        for op in operations:
            args = self._signature(op, for_wrapper=False)
            result = op.result_type or "None"
            auth = (
                "Auth: bearer token (token_info holds its verified claims)."
                if op.secured
                else "Auth: public."
            )
            doc = f"{op.summary}\n\n{op.description}\n\n`{op.http}` → {op.status}. {auth}"
            out.append("\n    @abc.abstractmethod\n")
            out.append(
                f"    async def {op.method_name}(self, *, {', '.join(args)}) -> {result}:\n"
                if args
                else f"    async def {op.method_name}(self) -> {result}:\n"
            )
            out.append(_docstring(doc, "        "))
        return "".join(out)

    def _render_app(self, header: str, operations: list[_Operation]) -> str:
        out = [
            header,
            f'"""Connexion app for {self.doc.display}: each operationId to a handler."""\n\n',
            "from __future__ import annotations\n\n",
            "from collections.abc import Awaitable, Callable, Sequence\n",
            "from pathlib import Path\n",
            "from typing import Any\n\n",
            "from connexion import AsyncApp\n\n",
            "from missive.rest._runtime import (\n",
            "    DEFAULT_MAX_BODY_BYTES,\n    Lifespan,\n    TokenInfo,\n    TokenVerifier,\n",
            "    build_app,\n    json_reply,\n    no_content,\n)\n\n",
            f"from .interface import {self.api_name}\n\n",
            'SPEC = Path(__file__).with_name("openapi.yaml")\n',
            "View = Callable[..., Awaitable[Any]]\n\n\n",
            f"def operations(handlers: {self.api_name}) -> dict[str, View]:\n",
            '    """operationId → Connexion view calling the matching handler method."""\n',
        ]
        for op in operations:
            args = self._signature(op, for_wrapper=True)
            call_args = ", ".join(
                name
                for name in (["token_info"] if op.secured else [])
                + (["body"] if op.body_type else [])
                + [param.name for param in op.params]
            )
            call_kwargs = ", ".join(f"{name}={name}" for name in call_args.split(", ") if name)
            out.append(f"\n    async def {op.operation_id}({', '.join(args)}) -> Any:\n")
            call = f"await handlers.{op.method_name}({call_kwargs})"
            if op.result_type is None:
                out.append(f"        {call}\n        return no_content()\n")
            else:
                out.append(f"        return json_reply({call}, {op.status})\n")
        out.append("\n    return {\n")
        for op in operations:
            out.append(f'        "{op.operation_id}": {op.operation_id},\n')
        out.append("    }\n\n\n")
        out.append(
            f"def create_app(\n"
            f"    handlers: {self.api_name},\n"
            "    *,\n"
            "    verify_token: TokenVerifier,\n"
            "    lifespan: Lifespan | None = None,\n"
            "    validate_responses: bool = True,\n"
            "    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,\n"
            "    middlewares: Sequence[Any] = (),\n"
            ") -> AsyncApp:\n"
            + _docstring(
                f"Build the Connexion AsyncApp serving {self.doc.display} with `handlers`.\n\n"
                "Request and response validation are on; Swagger UI is at /ui/ and the "
                "document at /openapi.json; bearer tokens are checked by `verify_token`.",
                "    ",
            )
            + "    return build_app(\n"
            "        import_name=__name__,\n"
            "        spec=SPEC,\n"
            "        operations=operations(handlers),\n"
            "        verify_token=verify_token,\n"
            "        lifespan=lifespan,\n"
            "        validate_responses=validate_responses,\n"
            "        max_body_bytes=max_body_bytes,\n"
            "        middlewares=middlewares,\n"
            "    )\n"
        )
        return "".join(out)
