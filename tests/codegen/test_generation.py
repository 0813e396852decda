"""The generator: determinism, drift detection, the contract cross-check and bad contracts."""

from __future__ import annotations

import re
from pathlib import Path

from tests.codegen.conftest import ROOT, run_codegen, snapshot


def test_committed_tree_is_up_to_date() -> None:
    result = run_codegen(ROOT, "--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_two_runs_give_identical_bytes(project: Path) -> None:
    first = run_codegen(project)
    assert first.returncode == 0, first.stderr
    before = snapshot(project)
    second = run_codegen(project)
    assert second.returncode == 0, second.stderr
    assert snapshot(project) == before
    assert before == snapshot(ROOT)  # and identical to what is committed
    assert not list(project.glob(".codegen-*")), "staging directories must be cleaned up"


def test_check_names_an_edited_generated_file(project: Path) -> None:
    target = project / "generated/missive/user/v1/user_pb2_grpc.py"
    target.write_text(target.read_text() + "\n# hand edit\n")
    result = run_codegen(project, "--check")
    assert result.returncode == 1
    assert "differs   generated/missive/user/v1/user_pb2_grpc.py" in result.stderr


def test_check_catches_an_edited_proto(project: Path) -> None:
    proto = project / "proto_definitions/missive/user/v1/user.proto"
    text = proto.read_text()
    added = "message CheckUserExistsResponse {\n  // Added.\n  string nickname = 99;"
    proto.write_text(re.sub(r"message CheckUserExistsResponse \{", added, text, count=1))
    result = run_codegen(project, "--check")
    assert result.returncode == 1
    # the stubs, the stub types and the SDK messages all go stale
    assert "differs   generated/missive/user/v1/user_pb2.py" in result.stderr
    assert "differs   generated/missive/user/v1/user_pb2.pyi" in result.stderr
    assert (
        "differs   clients/python/missive_client/_generated/grpc/missive/user/v1/__init__.py"
        in result.stderr
    )


def test_check_catches_a_stale_sdk_and_missing_and_extra_files(project: Path) -> None:
    sdk = project / "clients/python/missive_client/_generated/rest/message/client.py"
    sdk.write_text(sdk.read_text().replace("class Client", "class StaleClient", 1))
    (project / "generated/missive/rest/user/models.py").unlink()
    (project / "generated/missive/rest/user/leftover.py").write_text("x = 1\n")
    result = run_codegen(project, "--check")
    assert result.returncode == 1
    assert (
        "differs   clients/python/missive_client/_generated/rest/message/client.py" in result.stderr
    )
    assert "missing   generated/missive/rest/user/models.py" in result.stderr
    assert "extra     generated/missive/rest/user/leftover.py" in result.stderr


def test_cross_check_names_both_locations_of_a_mismatched_field(project: Path) -> None:
    document = project / "openapi/message.yaml"
    lines = document.read_text().splitlines(keepends=True)
    # Message.content becomes an integer in the OpenAPI document only.
    start = next(i for i, line in enumerate(lines) if re.match(r"^    Message:\s*$", line))
    content = next(i for i in range(start, len(lines)) if re.match(r"^        content:", lines[i]))
    type_line = next(i for i in range(content, len(lines)) if "type: string" in lines[i])
    lines[type_line] = lines[type_line].replace("type: string", "type: integer")
    document.write_text("".join(lines))
    before = snapshot(project)
    result = run_codegen(project)
    assert result.returncode == 1
    assert "contracts disagree" in result.stderr
    assert re.search(
        r"Message\.content: proto_definitions/missive/message/v1/message\.proto:\d+ needs string",
        result.stderr,
    )
    assert re.search(r"openapi/message\.yaml:\d+ declares integer", result.stderr)
    assert snapshot(project) == before


def test_cross_check_catches_a_field_missing_on_one_side(project: Path) -> None:
    proto = project / "proto_definitions/missive/notification/v1/notification.proto"
    text = proto.read_text()
    proto.write_text(
        re.sub(
            r"message Notification \{",
            "message Notification {\n  // Only in the proto.\n  string channel = 42;",
            text,
            count=1,
        )
    )
    result = run_codegen(project)
    assert result.returncode == 1
    assert re.search(
        r"Notification\.channel: defined at "
        r"proto_definitions/missive/notification/v1/notification\.proto:\d+ "
        r"but missing from openapi/notification\.yaml:\d+",
        result.stderr,
    )


def test_malformed_proto_reports_file_and_line_and_leaves_tree_untouched(project: Path) -> None:
    proto = project / "proto_definitions/missive/message/v1/message.proto"
    lines = proto.read_text().splitlines(keepends=True)
    broken_line = next(i for i, line in enumerate(lines) if line.startswith("message Message"))
    lines[broken_line] = "message Message {{ oops\n"
    proto.write_text("".join(lines))
    before = snapshot(project)
    result = run_codegen(project)
    assert result.returncode == 1
    assert re.search(
        rf"proto_definitions/missive/message/v1/message\.proto:{broken_line + 1}:\d+: ",
        result.stderr,
    ), result.stderr
    assert "left untouched" in result.stderr
    assert snapshot(project) == before


def test_malformed_openapi_yaml_reports_file_and_line(project: Path) -> None:
    document = project / "openapi/user.yaml"
    lines = document.read_text().splitlines(keepends=True)
    lines.insert(5, "  broken: [unclosed\n")
    document.write_text("".join(lines))
    before = snapshot(project)
    result = run_codegen(project)
    assert result.returncode == 1
    assert re.search(r"openapi/user\.yaml:\d+: invalid YAML", result.stderr), result.stderr
    assert snapshot(project) == before


def test_invalid_openapi_schema_reports_the_element_line(project: Path) -> None:
    document = project / "openapi/notification.yaml"
    lines = document.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if "operationId: listNotifications" in line)
    lines[index] = lines[index].replace(
        "operationId: listNotifications", "operationId: [not, a, string]"
    )
    document.write_text("".join(lines))
    before = snapshot(project)
    result = run_codegen(project)
    assert result.returncode == 1
    assert f"openapi/notification.yaml:{index + 1}:" in result.stderr, result.stderr
    assert snapshot(project) == before
