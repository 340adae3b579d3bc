"""The shape the code keeps (issue 10): small modules and small functions, so that a reader can
hold one in their head. Tests, benchmarks and Lua are not counted."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("worker", "scheduler", "events")

#: Longest module and longest function, in lines.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def modules():
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def name_of(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_packages_hold_modules_to_check():
    assert len(modules()) > 50


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_no_module_is_over_400_lines(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{name_of(path)} has {lines} lines: split it"


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_no_function_is_over_50_lines(path):
    tree = ast.parse(path.read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{name_of(path)}: split {', '.join(long)}"
