"""`python -m codegen --breaking`: each kind of breaking change, non-breaking changes, the
allowlist and the choice of the git ref, on throwaway repositories built from tiny fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.codegen.conftest import ROOT

FIXTURES = Path(__file__).with_name("fixtures") / "breaking"
PROTO = "proto_definitions/shop/v1/shop.proto"
OPENAPI = "openapi/shop.yaml"
ALLOWLIST = "contracts-breaking-allow.txt"

Edit = tuple[str, str, str]
"""(file, text to replace, replacement)"""


def _env(tmp_path: Path) -> dict[str, str]:
    """git isolated from the machine's configuration, and from any repository above tmp_path."""
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=_env(repo.parent), check=True, capture_output=True)


def make_repo(path: Path, branch: str = "main") -> Path:
    """The fixture contracts committed once on `branch` of a new repository at `path`."""
    shutil.copytree(FIXTURES, path)
    git(path, "init", "-q", "-b", branch)
    commit(path, "contracts")
    return path


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def apply(root: Path, edits: list[Edit]) -> None:
    for rel, old, new in edits:
        path = root / rel
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} must occur once in {rel}"
        path.write_text(text.replace(old, new))


def check_breaking(
    root: Path, *args: str, ceiling: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codegen", "--breaking", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(ceiling or root.parent),
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@dataclass(frozen=True)
class Case:
    id: str
    edits: list[Edit]
    element: str
    what: str
    count: int = 1
    """How many changes the edit makes in all (most make exactly the one under test)."""


def _item_field(old: str, new: str) -> Edit:
    return (PROTO, f"  {old}\n", f"  {new}\n" if new else "")


PROTO_CASES = [
    Case(
        "message removed",
        [(PROTO, "message Legacy {\n  string note = 1;\n", "message Old {\n  string note = 1;\n")],
        "shop.v1.Legacy",
        "message removed: shop.v1.Legacy",
    ),
    Case(
        "field removed",
        [_item_field("repeated string tags = 4;", "")],
        "shop.v1.Item.tags",
        "field removed from shop.v1.Item: repeated string tags = 4",
    ),
    Case(
        "map field removed",
        [_item_field("map<string, string> labels = 6;", "")],
        "shop.v1.Item.labels",
        "field removed from shop.v1.Item: repeated shop.v1.Item.LabelsEntry labels = 6",
    ),
    Case(
        "field number changed",
        [_item_field("string name = 2;", "string name = 7;")],
        "shop.v1.Item.name",
        "field number changed for shop.v1.Item.name: 2 -> 7",
    ),
    Case(
        "field number reused with another name",
        [_item_field("string name = 2;", "string title = 2;")],
        "shop.v1.Item.name",
        "field number 2 of shop.v1.Item reused with another name: was string name = 2, "
        "is now string title = 2",
    ),
    Case(
        "scalar field type changed",
        [(PROTO, "message Item {\n  int64 id = 1;", "message Item {\n  string id = 1;")],
        "shop.v1.Item.id",
        "field type changed for shop.v1.Item.id: int64 -> string",
    ),
    Case(
        "message field type changed",
        [_item_field("google.protobuf.Timestamp created_at = 5;", "Legacy created_at = 5;")],
        "shop.v1.Item.created_at",
        "field type changed for shop.v1.Item.created_at: "
        "google.protobuf.Timestamp -> shop.v1.Legacy",
    ),
    Case(
        "field no longer repeated",
        [_item_field("repeated string tags = 4;", "string tags = 4;")],
        "shop.v1.Item.tags",
        "field label changed: shop.v1.Item.tags is no longer repeated",
    ),
    Case(
        "field became repeated",
        [
            (
                PROTO,
                "message GetItemRequest {\n  int64 id",
                "message GetItemRequest {\n  repeated int64 id",
            )
        ],
        "shop.v1.GetItemRequest.id",
        "field label changed: shop.v1.GetItemRequest.id became repeated",
    ),
    Case(
        "enum value removed",
        [(PROTO, "  COLOR_BLUE = 2;\n", "")],
        "shop.v1.Color.COLOR_BLUE",
        "enum value removed: shop.v1.Color.COLOR_BLUE = 2",
    ),
    Case(
        "enum value number reused with another name",
        [(PROTO, "  COLOR_BLUE = 2;\n", "  COLOR_AZURE = 2;\n")],
        "shop.v1.Color.COLOR_BLUE",
        "enum value 2 of shop.v1.Color renamed: COLOR_BLUE -> COLOR_AZURE",
    ),
    Case(
        "RPC removed",
        [(PROTO, "  rpc DeleteItem(GetItemRequest) returns (DeleteItemResponse);\n", "")],
        "shop.v1.ShopService.DeleteItem",
        "RPC removed: shop.v1.ShopService.DeleteItem",
    ),
    Case(
        "service removed",
        [
            (
                PROTO,
                "service AdminService {\n  // Deletes every item.\n"
                "  rpc Purge(ListItemsRequest) returns (DeleteItemResponse);\n}\n",
                "",
            )
        ],
        "shop.v1.AdminService",
        "service removed: shop.v1.AdminService",
    ),
    Case(
        "RPC request type changed",
        [(PROTO, "rpc GetItem(GetItemRequest)", "rpc GetItem(ListItemsRequest)")],
        "shop.v1.ShopService.GetItem",
        "RPC request type changed for shop.v1.ShopService.GetItem: "
        "shop.v1.GetItemRequest -> shop.v1.ListItemsRequest",
    ),
    Case(
        "RPC response type changed",
        [(PROTO, "returns (Item);", "returns (DeleteItemResponse);")],
        "shop.v1.ShopService.GetItem",
        "RPC response type changed for shop.v1.ShopService.GetItem: "
        "shop.v1.Item -> shop.v1.DeleteItemResponse",
    ),
    Case(
        "RPC streaming changed",
        [(PROTO, "returns (stream Item);", "returns (Item);")],
        "shop.v1.ShopService.ListItems",
        "RPC streaming changed: shop.v1.ShopService.ListItems server no longer streams",
    ),
]

_ITEM_ID = "        id:\n          type: integer\n          format: int64\n"
_LIST_PARAMS = "      parameters:\n        - name: page_size\n"

OPENAPI_CASES = [
    Case(
        "operation removed",
        [
            (
                OPENAPI,
                "    delete:\n      operationId: deleteItem\n      responses:\n"
                "        '204':\n          description: Deleted.\n",
                "",
            )
        ],
        "openapi/shop.yaml#/paths/~1items~1{id}/delete",
        "DELETE /items/{id} (deleteItem): operation removed",
    ),
    Case(
        "path removed",
        [(OPENAPI, "  /items/{id}:\n", "  /items/{id}/details:\n")],
        "openapi/shop.yaml#/paths/~1items~1{id}/get",
        "GET /items/{id} (getItem): operation removed",
        count=2,  # and DELETE /items/{id}
    ),
    Case(
        "operationId renamed",
        [(OPENAPI, "operationId: getItem", "operationId: fetchItem")],
        "openapi/shop.yaml#/paths/~1items~1{id}/get/operationId",
        "GET /items/{id} (getItem): operationId renamed getItem -> fetchItem",
    ),
    Case(
        "new required request property",
        [
            (
                OPENAPI,
                "      required: [name]\n      properties:\n",
                "      required: [name, owner]\n      properties:\n"
                "        owner:\n          type: string\n",
            )
        ],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/owner",
        "POST /items (createItem): new required property 'owner' (request schema NewItem)",
    ),
    Case(
        "request property became required",
        [(OPENAPI, "required: [name]", "required: [name, sku]")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/sku",
        "property 'sku' became required (request schema NewItem)",
    ),
    Case(
        "request property removed while extra properties are rejected",
        [(OPENAPI, "        sku:\n          type: string\n", "")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/sku",
        "property 'sku' removed (additional properties are rejected)",
    ),
    Case(
        "new required parameter",
        [
            (
                OPENAPI,
                _LIST_PARAMS,
                "      parameters:\n        - name: shop\n          in: query\n"
                "          required: true\n          schema:\n            type: string\n"
                "        - name: page_size\n",
            )
        ],
        "openapi/shop.yaml#/paths/~1items/get/parameters/0",
        "GET /items (listItems): new required query parameter 'shop'",
    ),
    Case(
        "parameter became required",
        [
            (
                OPENAPI,
                "        - name: tag\n          in: query\n          required: false\n",
                "        - name: tag\n          in: query\n          required: true\n",
            )
        ],
        "openapi/shop.yaml#/paths/~1items/get/parameters/1",
        "GET /items (listItems): query parameter 'tag' became required",
    ),
    Case(
        "parameter maximum lowered",
        [(OPENAPI, "            maximum: 100\n", "            maximum: 50\n")],
        "openapi/shop.yaml#/paths/~1items/get/parameters/0/schema",
        "maximum lowered: 100 -> 50 (request schema of query parameter 'page_size')",
    ),
    Case(
        "maxLength lowered",
        [(OPENAPI, "maxLength: 100", "maxLength: 50")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/name",
        "maxLength lowered: 100 -> 50 (request schema NewItem)",
    ),
    Case(
        "minLength raised",
        [(OPENAPI, "minLength: 1", "minLength: 3")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/name",
        "minLength raised: 1 -> 3 (request schema NewItem)",
    ),
    Case(
        "maximum lowered",
        [(OPENAPI, "maximum: 1000", "maximum: 500")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/price",
        "maximum lowered: 1000 -> 500",
    ),
    Case(
        "minimum raised",
        [(OPENAPI, "          minimum: 0\n", "          minimum: 10\n")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/price",
        "minimum raised: 0 -> 10",
    ),
    Case(
        "maxItems lowered",
        [(OPENAPI, "maxItems: 10", "maxItems: 5")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/tags",
        "maxItems lowered: 10 -> 5",
    ),
    Case(
        "request enum value removed",
        [(OPENAPI, "enum: [red, blue]", "enum: [red]")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/color",
        "enum values removed: blue",
    ),
    Case(
        "pattern added",
        [
            (
                OPENAPI,
                "        sku:\n          type: string\n",
                "        sku:\n          type: string\n          pattern: '^[A-Z]+$'\n",
            )
        ],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/sku",
        "pattern added: (none) -> ^[A-Z]+$",
    ),
    Case(
        "pattern changed",
        [(OPENAPI, "pattern: '^[a-z]+$'", "pattern: '^[a-z]{1,8}$'")],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/code",
        "pattern changed: ^[a-z]+$ -> ^[a-z]{1,8}$",
    ),
    Case(
        "request property type changed",
        [
            (
                OPENAPI,
                "        price:\n          type: number\n",
                "        price:\n          type: string\n",
            )
        ],
        "openapi/shop.yaml#/components/schemas/NewItem/properties/price",
        "type changed: number -> string (request schema NewItem)",
    ),
    Case(
        "response property type changed",
        [(OPENAPI, _ITEM_ID, "        id:\n          type: string\n")],
        "openapi/shop.yaml#/components/schemas/Item/properties/id",
        "type changed: integer -> string (response schema Item)",
    ),
    Case(
        "response property removed",
        [(OPENAPI, "        color:\n          type: string\n        tags:\n", "        tags:\n")],
        "openapi/shop.yaml#/components/schemas/Item/properties/color",
        "property 'color' removed (response schema Item)",
    ),
    Case(
        "inline response property removed",
        [
            (
                OPENAPI,
                "required: [items]\n                properties:\n                  items:",
                "required: [results]\n                properties:\n                  results:",
            )
        ],
        "openapi/shop.yaml#/paths/~1items/get/responses/200/content/application~1json/schema"
        "/properties/items",
        "GET /items (listItems): property 'items' removed (response schema of response 200)",
    ),
    Case(
        "response property no longer required",
        [(OPENAPI, "required: [id, name, tags]", "required: [id, name]")],
        "openapi/shop.yaml#/components/schemas/Item/properties/tags",
        "property 'tags' no longer required (response schema Item)",
    ),
    Case(
        "success status code removed",
        [
            (
                OPENAPI,
                "        '201':\n          description: Created.",
                "        '200':\n          description: Created.",
            )
        ],
        "openapi/shop.yaml#/paths/~1items/post/responses/201",
        "POST /items (createItem): success response 201 removed",
    ),
]


CASES = PROTO_CASES + OPENAPI_CASES


@pytest.fixture(scope="module")
def case_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case's checker run, each in its own repository, run a few at a time (each run is
    a separate `python -m codegen --breaking`, which spends most of its second starting up)."""

    def run(case: Case) -> subprocess.CompletedProcess[str]:
        repo = make_repo(tmp_path_factory.mktemp("case") / "repo")
        apply(repo, case.edits)
        return check_breaking(repo)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return dict(zip([c.id for c in CASES], pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_each_breaking_change_is_reported_with_its_file_and_element(
    case_results: dict[str, subprocess.CompletedProcess[str]], case: Case
) -> None:
    result = case_results[case.id]
    assert result.returncode == 1, result.stdout + result.stderr
    assert case.what in result.stderr
    assert f"element: {case.element}\n" in result.stderr
    file = case.edits[0][0]
    assert f"  {file}:" in result.stderr, "the report names the file and line"
    assert "against the merge base with main" in result.stderr
    plural = "change" if case.count == 1 else "changes"
    assert f"check-breaking: {case.count} breaking {plural} against" in result.stderr, result.stderr


def test_a_renamed_package_is_one_change_not_a_cascade(repo: Path) -> None:
    apply(repo, [(PROTO, "package shop.v1;", "package store.v1;")])
    result = check_breaking(repo)
    assert result.returncode == 1
    assert "package renamed: shop.v1 -> store.v1 in shop/v1/shop.proto" in result.stderr
    assert f"element: {PROTO}#package\n" in result.stderr
    assert "1 breaking change " in result.stderr
    assert "removed" not in result.stderr


def test_a_removed_map_field_does_not_also_report_its_entry_message(repo: Path) -> None:
    apply(repo, [_item_field("map<string, string> labels = 6;", "")])
    result = check_breaking(repo)
    assert "1 breaking change " in result.stderr, result.stderr
    assert "LabelsEntry\n" not in result.stderr


def test_a_shared_schema_change_is_reported_once_naming_every_operation(repo: Path) -> None:
    apply(repo, [(OPENAPI, "required: [id, name, tags]", "required: [id, tags]")])
    result = check_breaking(repo)
    assert "1 breaking change " in result.stderr, result.stderr
    assert "GET /items (listItems): property 'name' no longer required" in result.stderr
    assert "(also createItem, getItem)" in result.stderr


def test_non_breaking_changes_pass(repo: Path) -> None:
    apply(
        repo,
        [
            # protos: a new optional field, enum value, message and RPC
            _item_field(
                "map<string, string> labels = 6;",
                "map<string, string> labels = 6;\n  string note = 7;",
            ),
            (PROTO, "  COLOR_BLUE = 2;\n", "  COLOR_BLUE = 2;\n  COLOR_GREEN = 3;\n"),
            (
                PROTO,
                "message Legacy {",
                "message Count {\n  int64 total = 1;\n}\n\nmessage Legacy {",
            ),
            (
                PROTO,
                "  rpc DeleteItem(GetItemRequest) returns (DeleteItemResponse);\n",
                "  rpc DeleteItem(GetItemRequest) returns (DeleteItemResponse);\n"
                "  // Counts the items.\n  rpc CountItems(ListItemsRequest) returns (Count);\n",
            ),
            # OpenAPI: a new operation, optional parameter and property, widened bounds,
            # a new response property, a renamed path parameter
            (
                OPENAPI,
                "components:\n",
                "  /stats:\n    get:\n      operationId: getStats\n"
                "      responses:\n        '200':\n          description: Statistics.\n"
                "components:\n",
            ),
            (
                OPENAPI,
                _LIST_PARAMS,
                "      parameters:\n        - name: sort\n          in: query\n"
                "          required: false\n          schema:\n            type: string\n"
                "        - name: page_size\n",
            ),
            (
                OPENAPI,
                "      required: [name]\n      properties:\n",
                "      required: [name]\n      properties:\n"
                "        note:\n          type: string\n",
            ),
            (OPENAPI, "maxLength: 100", "maxLength: 200"),
            (OPENAPI, "minLength: 1", "minLength: 0"),
            (OPENAPI, "          minimum: 0\n", "          minimum: -10\n"),
            (OPENAPI, "maximum: 1000", "maximum: 5000"),
            (OPENAPI, "maxItems: 10", "maxItems: 20"),
            (OPENAPI, "enum: [red, blue]", "enum: [red, blue, green]"),
            (OPENAPI, "          pattern: '^[a-z]+$'\n", ""),
            (OPENAPI, _ITEM_ID, _ITEM_ID + "        price:\n          type: number\n"),
            (OPENAPI, "  /items/{id}:\n", "  /items/{item_id}:\n"),
            (OPENAPI, "      - name: id\n", "      - name: item_id\n"),
        ],
    )
    result = check_breaking(repo)
    assert result.returncode == 0, result.stderr
    assert "no breaking contract changes against the merge base with main" in result.stdout


def test_unchanged_contracts_pass(repo: Path) -> None:
    result = check_breaking(repo)
    assert result.returncode == 0, result.stderr
    assert "no breaking contract changes" in result.stdout


def test_allowlisted_changes_pass_and_stale_entries_are_noted(repo: Path) -> None:
    apply(
        repo,
        [
            _item_field("repeated string tags = 4;", ""),
            (OPENAPI, "operationId: getItem", "operationId: fetchItem"),
        ],
    )
    (repo / ALLOWLIST).write_text(
        "# Breaking contract changes made on purpose.\n"
        "shop.v1.Item.tags  # tags moved to the labels map; no client reads them (issue 12)\n"
        "\n"
        "openapi/shop.yaml#/paths/~1items~1{id}/get/operationId  # SDK 2.0 renames the method\n"
        "shop.v1.Item.name  # left over from an earlier change\n"
    )
    result = check_breaking(repo)
    assert result.returncode == 0, result.stderr
    assert "allowed: proto_definitions/shop/v1/shop.proto:" in result.stdout
    assert "# tags moved to the labels map; no client reads them (issue 12)" in result.stdout
    assert "operationId renamed getItem -> fetchItem" in result.stdout
    assert f"note: {ALLOWLIST} lists shop.v1.Item.name, which no longer changes" in result.stdout

    # Only the listed elements are allowed: another break still fails.
    apply(repo, [(PROTO, "  COLOR_BLUE = 2;\n", "")])
    result = check_breaking(repo)
    assert result.returncode == 1
    assert "1 breaking change " in result.stderr
    assert "element: shop.v1.Color.COLOR_BLUE" in result.stderr


def test_an_allowlist_entry_needs_a_reason(repo: Path) -> None:
    apply(repo, [_item_field("repeated string tags = 4;", "")])
    (repo / ALLOWLIST).write_text("shop.v1.Item.tags\n")
    result = check_breaking(repo)
    assert result.returncode == 2
    assert f"{ALLOWLIST}:1: expected `ELEMENT  # why the break is intended`" in result.stderr


def test_default_ref_is_the_merge_base_with_main(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    apply(repo, [_item_field("string name = 2;", "")])
    commit(repo, "drop the name")
    (repo / "NOTES").write_text("unrelated\n")
    commit(repo, "unrelated")  # HEAD~ already lacks the field: only the merge base sees it
    result = check_breaking(repo)
    assert result.returncode == 1
    assert "against the merge base with main" in result.stderr
    assert "element: shop.v1.Item.name" in result.stderr
    # An explicit ref wins over the default.
    assert check_breaking(repo, "HEAD~").returncode == 0
    assert check_breaking(repo, "main").returncode == 1


def test_without_main_the_default_is_head_parent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", branch="trunk")
    apply(repo, [(PROTO, "  COLOR_BLUE = 2;\n", "")])
    commit(repo, "drop blue")
    result = check_breaking(repo)
    assert result.returncode == 1
    assert "against HEAD~" in result.stderr
    assert "element: shop.v1.Color.COLOR_BLUE" in result.stderr


def test_nothing_to_compare_without_history(tmp_path: Path) -> None:
    single = make_repo(tmp_path / "single", branch="trunk")
    result = check_breaking(single)
    assert result.returncode == 0, result.stderr
    assert "nothing to compare with" in result.stdout

    plain = tmp_path / "plain"
    shutil.copytree(FIXTURES, plain)
    result = check_breaking(plain)
    assert result.returncode == 0, result.stderr
    assert "nothing to compare with" in result.stdout


def test_contracts_added_after_the_ref_are_not_breaking(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "empty start")
    shutil.copytree(FIXTURES, repo, dirs_exist_ok=True)
    result = check_breaking(repo)
    assert result.returncode == 0, result.stderr


def test_an_unknown_ref_is_an_error(repo: Path) -> None:
    result = check_breaking(repo, "no-such-branch")
    assert result.returncode == 2
    assert "cannot compare with 'no-such-branch'" in result.stderr


def test_a_broken_current_contract_is_an_error_naming_it(repo: Path) -> None:
    apply(repo, [(PROTO, "int64 id = 1;\n  string name", "int64 id = 1\n  string name")])
    result = check_breaking(repo)
    assert result.returncode == 2
    assert "proto_definitions/shop/v1/shop.proto:" in result.stderr


def test_a_project_in_a_subdirectory_of_the_repository(tmp_path: Path) -> None:
    top = tmp_path / "top"
    shutil.copytree(FIXTURES, top / "project")
    git(top, "init", "-q", "-b", "main")
    commit(top, "contracts in a subdirectory")
    apply(top / "project", [(OPENAPI, "enum: [red, blue]", "enum: [blue]")])
    result = check_breaking(top / "project", ceiling=tmp_path)
    assert result.returncode == 1
    assert "enum values removed: red" in result.stderr
    assert (
        "element: openapi/shop.yaml#/components/schemas/NewItem/properties/color" in result.stderr
    )


def test_the_project_contracts_check_against_head() -> None:
    """The real contracts compile and compare cleanly with themselves."""
    result = check_breaking(ROOT, "HEAD")
    if "nothing to compare" in result.stdout:
        pytest.skip("no git history")
    assert result.returncode in (0, 1), result.stderr  # 2 would be an error
