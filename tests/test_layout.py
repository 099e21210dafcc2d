"""The library's layout stays one a newcomer can read: each job in a module of at most
MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES (its ``def`` line to its last line,
docstring included), a README of at most MAX_README_LINES lines that names every module."""

import ast
import glob
import os

from helpers import ROOT

MAX_MODULE_LINES = 375
MAX_FUNCTION_LINES = 60
MAX_README_LINES = 200
MODULES = sorted(glob.glob(os.path.join(ROOT, "wavenet_conv", "*.py")))


def source(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_there_are_modules():
    assert len(MODULES) >= 20


def test_no_module_is_over_the_limit():
    long = {os.path.basename(p): n for p in MODULES if (n := len(source(p).splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_limit():
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(source(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{os.path.basename(path)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_readme_is_short_and_its_layout_names_every_module():
    readme = source(os.path.join(ROOT, "README.md"))
    assert len(readme.splitlines()) <= MAX_README_LINES
    layout = readme[readme.index("wavenet_conv/  "):]
    missing = [os.path.basename(p) for p in MODULES if os.path.basename(p) not in layout]
    assert missing == ["__init__.py", "__main__.py", "version.py"], missing
