"""The layout a newcomer reads (issue 11): modules of a readable size, or a reason at the top;
test modules that import support modules, never each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG = 430  # "~400 lines": past this a module says at its top why it is one module
REASON = re.compile(r"\bfor a reason\b|\bover ~400 lines\b", re.IGNORECASE)


def modules(*packages: str) -> list[Path]:
    return [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]


def test_a_long_module_says_at_its_top_why_it_is_one_module() -> None:
    unexplained = []
    for path in modules("gatekeeper", "exports"):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > LONG and not REASON.search(doc):
            unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert unexplained == []


def test_the_check_notices_a_long_module_without_a_reason(tmp_path: Path) -> None:
    text = '"""A module."""\n' + "x = 1\n" * (LONG + 1)
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert text.count("\n") > LONG and not REASON.search(doc)


def test_no_test_module_imports_another() -> None:
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    found = []
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in tests]
    assert found == []
