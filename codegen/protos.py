"""protoc runs: server stubs (grpcio-tools, mypy-protobuf), SDK (betterproto2), descriptors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from codegen.errors import ContractError


def find_protos(proto_root: Path) -> list[Path]:
    protos = sorted(proto_root.rglob("*.proto"))
    if not protos:
        raise ContractError(f"no .proto files under {proto_root}")
    return protos


def _protoc(proto_root: Path, protos: list[Path], args: list[str], cwd: Path | None = None) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    files = (
        [str(path.relative_to(proto_root)) for path in protos] if cwd is None else map(str, protos)
    )
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", *args, *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or proto_root,
        check=False,
    )
    # mypy-protobuf and betterproto2 narrate on stderr; anything else is a protoc error or warning.
    messages = [
        line for line in result.stderr.splitlines() if line and not line.startswith("Writing ")
    ]
    if result.returncode != 0 or messages:
        lines = [_repository_relative(line, proto_root) for line in messages]
        raise ContractError("protoc failed:\n  " + "\n  ".join(lines or ["(no output)"]))


def _repository_relative(line: str, proto_root: Path) -> str:
    """protoc's `file.proto:LINE:COL: reason` with the file relative to the repository.

    protoc names a file as it was given (relative to -I) for syntax errors but by its absolute
    path for some semantic ones (an undefined type, a duplicate field); both become
    `proto_definitions/missive/...`.
    """
    root = proto_root.resolve()
    head, sep, rest = line.partition(".proto:")
    if not sep:
        return line
    file = Path(head + ".proto")
    if file.is_absolute():
        try:
            file = file.resolve().relative_to(root)
        except ValueError:
            return line
    elif " " in head:
        return line  # not a file name: a message that mentions a .proto file
    return f"{(root.name / file).as_posix()}:{rest}"


def load_descriptors(
    proto_root: Path, protos: list[Path], scratch: Path
) -> descriptor_pb2.FileDescriptorSet:
    """Compile once to a descriptor set with source locations (validates every file)."""
    out = scratch / "descriptors.pb"
    _protoc(proto_root, protos, [f"--descriptor_set_out={out}", "--include_source_info"])
    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString(out.read_bytes())
    return descriptors


def generate_server(proto_root: Path, protos: list[Path], out: Path) -> None:
    """`*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` stubs, laid out by proto package."""
    out.mkdir(parents=True, exist_ok=True)
    _protoc(
        proto_root,
        protos,
        [
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
        ],
    )


def generate_sdk(proto_root: Path, protos: list[Path], out: Path, scratch: Path) -> None:
    """betterproto2 dataclasses with sync (grpcio) and async (grpclib) clients."""
    out.mkdir(parents=True, exist_ok=True)
    # betterproto2 pipes its output through ruff, which reads the nearest ruff config from the
    # working directory: run it beside an empty one so the output does not depend on where the
    # tree is generated.
    isolated = scratch / "betterproto2"
    isolated.mkdir()
    (isolated / "ruff.toml").write_text("")
    _protoc(
        proto_root,
        protos,
        [
            f"--python_betterproto2_out={out}",
            "--python_betterproto2_opt=client_generation=sync_async",
        ],
        cwd=isolated,
    )


@dataclass(frozen=True)
class LocatedMessage:
    """A top-level message of a compiled proto file, with where it and its fields are declared."""

    package: str
    message: descriptor_pb2.DescriptorProto
    where: str
    """`proto_definitions/<file>:<line>` of the message (line 0 if unknown)."""
    field_where: dict[str, str]
    """field name -> `proto_definitions/<file>:<line>` of its declaration."""


def top_level_messages(descriptors: descriptor_pb2.FileDescriptorSet) -> Iterator[LocatedMessage]:
    """Every top-level message of `descriptors`, file by file, with its source locations
    (the set must be compiled with source info, as load_descriptors does)."""
    for file in descriptors.file:
        lines = {
            tuple(location.path): location.span[0] + 1
            for location in file.source_code_info.location
        }
        display = f"proto_definitions/{file.name}"
        for index, message in enumerate(file.message_type):
            yield LocatedMessage(
                package=file.package,
                message=message,
                where=f"{display}:{lines.get((4, index), 0)}",
                field_where={
                    item.name: f"{display}:{lines.get((4, index, 2, number), 0)}"
                    for number, item in enumerate(message.field)
                },
            )
