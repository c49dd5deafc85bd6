"""The README stays a short front door that is true to the code: its length, its quick start, the names its
snippets use, the backbone numbers in its model table (and in docs/architecture.md), and the CLI it lists."""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import io
import json
import re
from pathlib import Path

import pytest

import spinenet
from spinenet.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _code_blocks(text: str, lang: str = r"\w*") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def test_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it <= 200 and move details to docs/"


def test_quick_start_begins_with_make_demo_and_make_test():
    section = _section(README.read_text(), "Quick start")
    assert section.lstrip().startswith("```"), "the quick start opens with its commands"
    block = _code_blocks(section)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands[:2] == ["make demo", "make test"], commands
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"the Makefile has no '{target}' target"


def test_readme_snippets_name_existing_api():
    """Every name a Python snippet imports, and every ``spinenet.X`` it uses, exists in the package."""
    blocks = _code_blocks(README.read_text(), "python")
    assert len(blocks) >= 5, "the README shows backbone, detector, classifier, weights and search snippets"
    used: set[str] = set()
    for block in blocks:
        tree = ast.parse(block)  # every snippet is valid Python
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README: `from {node.module} import {alias.name}`"
                    used.add(f"{node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "spinenet":
                assert hasattr(spinenet, node.attr), f"README uses spinenet.{node.attr}, which does not exist"
                used.add(f"spinenet.{node.attr}")
    for name in ("spinenet.create_model", "spinenet.list_models", "spinenet.load_weights",
                 "spinenet.search.strategies.make_strategy"):
        assert name in used, f"no README snippet uses {name}"


def _table_rows(text: str) -> dict[str, tuple[int, float, tuple[float, int] | None]]:
    """Backbone rows ``| `name` | family | input | params | MACs G [(MACs G at size)] | ...`` of a model table."""
    rows = {}
    pattern = re.compile(r"^\| `(spinenet[\w]*)` \| [^|]+ \| (\d+) \| ([\d,]+) \| ([\d.]+) G(?: \(([\d.]+) G at (\d+)\))? \|",
                         re.M)
    for name, _size, params, macs, extra_macs, extra_size in pattern.findall(text):
        extra = (float(extra_macs), int(extra_size)) if extra_macs else None
        rows[name] = (int(params.replace(",", "")), float(macs), extra)
    return rows


@functools.lru_cache(maxsize=None)
def _summary(*args: str) -> dict[str, dict]:
    """``spinenet summary --json`` rows by model name."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["summary", "--json", *args]) == 0
    return {row["model"]: row for row in json.loads(out.getvalue())}


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md"])
def test_backbone_table_matches_spinenet_summary(page):
    rows = _table_rows((REPO / page).read_text())
    measured = _summary()
    backbones = set(spinenet.list_models(task="backbone"))
    assert set(rows) == set(measured) == backbones, f"{page}: the table lists other backbones"
    for name, (params, macs, extra) in rows.items():
        assert params == measured[name]["params"], f"{page}: {name} parameters"
        assert macs == round(measured[name]["macs"] / 1e9, 3), f"{page}: {name} multiply-adds"
        if extra is not None:
            at_size = _summary(name, "--size", str(extra[1]))[name]
            assert extra[0] == round(at_size["macs"] / 1e9, 3), f"{page}: {name} multiply-adds at {extra[1]}"


def test_cli_at_a_glance_lists_every_subcommand():
    block = _code_blocks(_section(README.read_text(), "Command line"))[0]
    listed = set(re.findall(r"^spinenet (\w+)", block, re.M))
    subparsers = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert listed == set(subparsers.choices), f"README lists {sorted(listed)}; the CLI has {sorted(subparsers.choices)}"
