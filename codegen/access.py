"""The RPC access table, read from the `Auth:` line that ends each RPC's doc comment."""

from __future__ import annotations

import re

from google.protobuf import descriptor_pb2

from codegen.errors import ContractError

_SERVICE = re.compile(r"\b([A-Z][A-Za-z]*)Service\b")


def parse_auth(comment: str) -> tuple[bool, bool, list[str]] | None:
    """(public, users, services) from a comment's `Auth:` text, or None if it has none."""
    text = " ".join(comment.split())
    start = text.find("Auth:")
    if start < 0:
        return None
    auth = text[start + len("Auth:") :]
    public = auth.strip().startswith("public")
    users = "user token" in auth
    internal = auth.find("internal")
    services = (
        sorted({name.lower() for name in _SERVICE.findall(auth[internal:])})
        if internal >= 0
        else []
    )
    return public, users, services


def render_access(descriptors: descriptor_pb2.FileDescriptorSet, header: str) -> str:
    rows = []
    for file in descriptors.file:
        if not file.package.startswith("missive."):
            continue
        locations = {tuple(loc.path): loc for loc in file.source_code_info.location}
        for s_index, service in enumerate(file.service):
            for m_index, method in enumerate(service.method):
                location = locations.get((6, s_index, 2, m_index))
                comment = location.leading_comments if location else ""
                line = location.span[0] + 1 if location else 0
                parsed = parse_auth(comment)
                where = f"proto_definitions/{file.name}:{line}"
                if parsed is None:
                    raise ContractError(
                        f"{where}: rpc {method.name} has no `Auth:` line saying who may call it"
                    )
                public, users, services = parsed
                if not (public or users or services):
                    raise ContractError(f"{where}: rpc {method.name}: `Auth:` names no caller")
                rows.append(
                    f'    "/{file.package}.{service.name}/{method.name}": RpcAccess(\n'
                    f"        public={public}, users={users}, services=frozenset({services!r})\n"
                    "    ),\n"
                )
    return (
        header
        + '"""Who may call each RPC: the `Auth:` line of its doc comment in the .proto files.\n\n'
        "A method missing from RPC_ACCESS is not part of the contracts and must be denied.\n"
        '"""\n\n'
        "from typing import NamedTuple\n\n\n"
        "class RpcAccess(NamedTuple):\n"
        '    """Callers allowed on one RPC."""\n\n'
        "    public: bool\n"
        '    """Anyone, without credentials."""\n'
        "    users: bool\n"
        '    """A user with an access token (acting on their own data)."""\n'
        "    services: frozenset[str]\n"
        '    """Services, by name (`message`, `notification`, ...), with their credential."""\n\n\n'
        "RPC_ACCESS: dict[str, RpcAccess] = {\n" + "".join(rows) + "}\n"
    )
