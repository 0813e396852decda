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


def test_invalid_openapi_value_names_its_line_and_rule_in_one_line(project: Path) -> None:
    document = project / "openapi/message.yaml"
    lines = document.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if "maxLength: 4096" in line)
    lines[index] = lines[index].replace("maxLength: 4096", "maxLength: two-hundred")
    document.write_text("".join(lines))
    before = snapshot(project)
    result = run_codegen(project)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problems == [
        f"  openapi/message.yaml:{index + 1}: components.schemas.Message.properties.content."
        "maxLength: 'two-hundred' is not of type 'integer' (rule: type: integer)"
    ], result.stderr
    assert len(result.stderr) < 400, result.stderr  # no dump of the enclosing schema
    assert snapshot(project) == before


def test_invalid_default_is_reported_at_its_own_line(project: Path) -> None:
    # openapi-spec-validator reports a default against its schema relative to the default.
    document = project / "openapi/message.yaml"
    lines = document.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if "maxLength: 4096" in line)
    lines.insert(index + 1, lines[index].replace("maxLength: 4096", "default: 12"))
    document.write_text("".join(lines))
    result = run_codegen(project)
    assert result.returncode == 1
    assert (
        f"openapi/message.yaml:{index + 2}: components.schemas.Message.properties.content."
        "default: 12 is not of type 'string' (rule: type: string)" in result.stderr
    ), result.stderr


def test_proto_semantic_error_names_the_file_relative_to_the_project_once(project: Path) -> None:
    proto = project / "proto_definitions/missive/message/v1/message.proto"
    lines = proto.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line == "  bool read = 6;\n")
    lines[index] = "  Bogus read = 6;\n"  # an undefined type: protoc names the file absolutely
    proto.write_text("".join(lines))
    result = run_codegen(project)
    assert result.returncode == 1
    assert (
        f"  proto_definitions/missive/message/v1/message.proto:{index + 1}:3: "
        '"Bogus" is not defined.' in result.stderr.splitlines()
    ), result.stderr
    assert str(project) not in result.stderr


def _add_message_subject(project: Path) -> tuple[int, int]:
    """`optional string subject = 7` on Message in the proto and the OpenAPI document; the
    lines of both declarations."""
    proto = project / "proto_definitions/missive/message/v1/message.proto"
    lines = proto.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line == "  bool read = 6;\n")
    lines[index + 1 : index + 1] = ["  // Subject line.\n", "  optional string subject = 7;\n"]
    proto.write_text("".join(lines))
    document = project / "openapi/message.yaml"
    doc_lines = document.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(doc_lines) if line == "    Message:\n")
    end = next(i for i in range(start + 1, len(doc_lines)) if re.match(r"^    \S", doc_lines[i]))
    doc_lines[end:end] = [
        "        subject:\n",
        "          type: string\n",
        "          description: Subject line.\n",
    ]
    document.write_text("".join(doc_lines))
    return index + 3, end + 1


def test_a_contract_field_missing_from_the_sdk_model_fails_codegen(project: Path) -> None:
    proto_line, openapi_line = _add_message_subject(project)
    before = snapshot(project)
    result = run_codegen(project)
    assert result.returncode == 1
    models = "clients/python/missive_client/_models.py"
    assert "the SDK's public models disagree with the contracts" in result.stderr
    assert re.search(
        rf"Message\.subject: defined at proto_definitions/missive/message/v1/message\.proto:"
        rf"{proto_line} but missing from the SDK model Message at {re.escape(models)}:\d+",
        result.stderr,
    ), result.stderr
    assert re.search(
        rf"Message\.subject: defined at openapi/message\.yaml:{openapi_line} but missing from "
        rf"the SDK model Message at {re.escape(models)}:\d+",
        result.stderr,
    ), result.stderr
    assert snapshot(project) == before
    # once the SDK model has the field, codegen goes through
    sdk = project / models
    text = sdk.read_text()
    sdk.write_text(
        text.replace(
            "    timestamp: datetime\n    read: bool\n",
            "    timestamp: datetime\n    read: bool\n    subject: str | None = None\n",
            1,
        )
    )
    assert sdk.read_text() != text
    result = run_codegen(project)
    assert result.returncode == 0, result.stderr


def test_an_sdk_model_field_missing_from_the_contracts_fails_codegen(project: Path) -> None:
    sdk = project / "clients/python/missive_client/_models.py"
    lines = sdk.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("class User:"))
    index = next(i for i in range(start, len(lines)) if lines[i] == "    email: str\n")
    lines.insert(index + 1, "    nickname: str\n")
    sdk.write_text("".join(lines))
    result = run_codegen(project)
    assert result.returncode == 1
    where = f"clients/python/missive_client/_models.py:{index + 2}"
    assert (
        f"User.nickname: declared in the SDK model at {where} but missing from message User at "
        "proto_definitions/missive/user/v1/user.proto:" in result.stderr
    ), result.stderr
    assert re.search(
        rf"User\.nickname: declared in the SDK model at {where} but missing from schema User "
        r"at openapi/user\.yaml:\d+",
        result.stderr,
    ), result.stderr


def test_a_new_sdk_model_must_name_its_contract_type(project: Path) -> None:
    sdk = project / "clients/python/missive_client/_models.py"
    sdk.write_text(
        sdk.read_text()
        + "\n\n@dataclass(frozen=True, slots=True)\nclass Attachment:\n    name: str\n"
    )
    result = run_codegen(project)
    assert result.returncode == 1
    assert re.search(
        r"Attachment: SDK model at clients/python/missive_client/_models\.py:\d+ mirrors no "
        r"contract type: add it to MIRRORS in codegen/sdk_models\.py",
        result.stderr,
    ), result.stderr


def test_an_sdk_model_field_of_another_type_fails_codegen(project: Path) -> None:
    sdk = project / "clients/python/missive_client/_models.py"
    lines = sdk.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("class Message:"))
    index = next(i for i in range(start, len(lines)) if lines[i] == "    id: int\n")
    lines[index] = "    id: str\n"
    sdk.write_text("".join(lines))
    result = run_codegen(project)
    assert result.returncode == 1
    assert re.search(
        r"Message\.id: proto_definitions/missive/message/v1/message\.proto:\d+ needs int, but "
        rf"the SDK model declares str at clients/python/missive_client/_models\.py:{index + 1}",
        result.stderr,
    ), result.stderr


def test_misspelt_openapi_key_is_reported_at_its_own_line(project: Path) -> None:
    document = project / "openapi/message.yaml"
    lines = document.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if "maxLength: 4096" in line)
    lines[index] = lines[index].replace("maxLength: 4096", "maxLenght: 4096")
    document.write_text("".join(lines))
    result = run_codegen(project)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problems == [
        f"  openapi/message.yaml:{index + 1}: components.schemas.Message.properties.content."
        "maxLenght: 'maxLenght' is not an allowed key here (rule: additionalProperties: False)"
    ], result.stderr
