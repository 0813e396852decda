"""Breaking-change detection: the current contracts against the ones committed at a git ref.

`python -m codegen --breaking [REF]` (and `make check-breaking`) reads `proto_definitions/` and
`openapi/` as they were at REF (default: the merge base of HEAD with `main`, else `HEAD~`) with
`git show`, and reports every change that breaks a client built against them:

- protos (compared as FileDescriptorSets compiled by protoc): a removed message, field, enum,
  enum value, service or RPC; a field number changed for a name, or reused with another name;
  a field's type or label (repeated) changed; an RPC's request or response type or streaming
  changed; a renamed package;
- OpenAPI: a removed operation, a removed or renamed operationId, a new required parameter or
  request property, a parameter or request body becoming required, narrowed request bounds
  (max* lowered, min* raised, enum values removed, pattern added or changed, ...), a changed
  type, a removed response property, a response property no longer required, a removed
  success status code or media type.

Each change names its file, line and *element*: a fully qualified proto name
(`missive.user.v1.User.email`) or an OpenAPI document plus a JSON pointer
(`openapi/user.yaml#/components/schemas/User/properties/name`). A change made on purpose is
accepted by listing its element in `contracts-breaking-allow.txt` at the project root, one per
line, followed by `# why`.

Modules: `git` (the ref and the contracts at it), `proto_diff`, `openapi_diff`, and `report`
(both diffs over two trees, the allowlist, the CLI lines).
"""

from codegen.breaking.change import Change
from codegen.breaking.git import GitError, default_ref, export_contracts, resolve_ref
from codegen.breaking.openapi_diff import compare_openapi
from codegen.breaking.proto_diff import compare_protos
from codegen.breaking.report import ALLOWLIST, Allowlist, Report, check, compare_trees, render

__all__ = [
    "ALLOWLIST",
    "Allowlist",
    "Change",
    "GitError",
    "Report",
    "check",
    "compare_openapi",
    "compare_protos",
    "compare_trees",
    "default_ref",
    "export_contracts",
    "render",
    "resolve_ref",
]
