"""The SDK's blocking modules are generated from their asyncio twins (codegen/sdk_sync.py)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from codegen import sdk_sync
from codegen.errors import ContractError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("twin", sdk_sync.TWINS, ids=lambda twin: twin.target.name)
def test_the_committed_blocking_module_is_the_generated_one(twin: sdk_sync.Twin) -> None:
    assert sdk_sync.render(ROOT, twin) == (ROOT / twin.target).read_text(encoding="utf-8")


@pytest.mark.parametrize("twin", sdk_sync.TWINS, ids=lambda twin: twin.target.name)
def test_the_blocking_module_has_no_asyncio_left(twin: sdk_sync.Twin) -> None:
    text = (ROOT / twin.target).read_text(encoding="utf-8")
    assert text.startswith(sdk_sync.HEADER.format(source=twin.source.as_posix()))
    tree = ast.parse(text)
    asyncio_nodes = (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)
    assert [type(node).__name__ for node in ast.walk(tree) if isinstance(node, asyncio_nodes)] == []
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not {name for name in names | attributes if "async" in name.lower()}


def test_the_client_keeps_its_blocking_only_parts() -> None:
    text = (ROOT / sdk_sync.SDK / "_client.py").read_text(encoding="utf-8")
    assert "    def connect(\n" in text
    assert '"""Blocking Missive client. Create it with :meth:`Client.connect`.' in text
    assert "async for" not in text and "aclose" not in text


def test_a_reworded_source_passage_fails_codegen_naming_it(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    twin = sdk_sync.TWINS[0]
    (tmp_path / twin.source).parent.mkdir(parents=True)
    source = (ROOT / twin.source).read_text(encoding="utf-8")
    passage = "fetched page by page (``async for``)."
    assert passage in source
    (tmp_path / twin.source).write_text(source.replace(passage, "fetched lazily."))
    with pytest.raises(ContractError, match=r"no longer contains this passage") as caught:
        sdk_sync.render(tmp_path, twin)
    assert passage in str(caught.value)
    assert twin.source.as_posix() in str(caught.value)
