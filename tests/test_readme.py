"""The docs' code blocks run as written at the root of a fresh clone: each Python block of the README
and of docs/ runs on its own, and every ``wavenet-conv`` command line in the Markdown files and in the
notebook's text parses with the command's parser."""

import glob
import json
import os
import re
import shlex

import pytest

from wavenet_conv.cli.main import build_parser

from helpers import ROOT

RUNNABLE = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
DOCS = [*RUNNABLE, os.path.join(ROOT, "data", "README.md"), *sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*.md"))),
        *sorted(glob.glob(os.path.join(ROOT, "experiments", "*.md")))]
NOTEBOOK = os.path.join(ROOT, "notebooks", "lecture_to_conv.ipynb")


def code_blocks(path: str, lang: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return re.findall(rf"^```{lang}\n(.*?)^```", f.read(), flags=re.M | re.S)


def commands_in(line: str):
    """The words of each wavenet-conv command in a shell line (each side of a pipe, redirections cut)."""
    for part in re.split(r"\|\||&&|[|;&]", line):
        words = shlex.split(part, comments=True)
        words = words[: next((i for i, w in enumerate(words) if w.startswith((">", "<", "2>"))), len(words))]
        if words and words[0] == "wavenet-conv":
            yield words


def command_lines():
    """(file, words) of every wavenet-conv command in a bash block, and in the notebook's text (its
    inline code; ``--help`` aside, which exits)."""
    for path in DOCS:
        for block in code_blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                yield from ((os.path.relpath(path, ROOT), words) for words in commands_in(line))
    with open(NOTEBOOK, encoding="utf-8") as f:
        text = " ".join("".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "markdown")
    for span in re.findall(r"`([^`]*wavenet-conv [^`]*)`", text.replace("\n", " ")):
        if "--help" not in span:
            yield from ((os.path.relpath(NOTEBOOK, ROOT), words) for words in commands_in(span))


PYTHON = [(os.path.relpath(path, ROOT), code) for path in RUNNABLE for code in code_blocks(path, "python")]
COMMANDS = list(command_lines())


def test_the_readme_has_code():
    assert sum(path == "README.md" for path, _ in PYTHON) >= 2 and sum(path == "README.md" for path, _ in COMMANDS) >= 5


@pytest.mark.slow  # a block trains a model
@pytest.mark.filterwarnings("error::DeprecationWarning:readme")  # the README uses no deprecated name
@pytest.mark.parametrize("path,code", PYTHON, ids=[f"{path}: block{i}" for i, (path, _) in enumerate(PYTHON)])
def test_python_blocks_run(path, code, tmp_path, monkeypatch):
    (tmp_path / "data").symlink_to(os.path.join(ROOT, "data"))  # a fresh clone's data/; runs/ lands in tmp_path
    monkeypatch.chdir(tmp_path)
    exec(compile(code, path, "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("path,words", COMMANDS, ids=[f"{p}: {' '.join(w)[:60]}" for p, w in COMMANDS])
def test_commands_parse(path, words):
    build_parser().parse_args(words[1:])  # a wrong option or value exits with status 2
