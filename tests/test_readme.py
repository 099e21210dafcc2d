"""The docs' code blocks run as written at the root of a fresh clone: each Python block of the README
and of docs/ runs on its own, and every ``wavenet-conv`` command line in the Markdown files parses with
the command's parser."""

import glob
import os
import re
import shlex

import pytest

from wavenet_conv.cli import build_parser

from helpers import ROOT

RUNNABLE = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
DOCS = [*RUNNABLE, os.path.join(ROOT, "data", "README.md"), *sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*.md"))),
        *sorted(glob.glob(os.path.join(ROOT, "experiments", "*.md")))]


def code_blocks(path: str, lang: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return re.findall(rf"^```{lang}\n(.*?)^```", f.read(), flags=re.M | re.S)


def command_lines():
    """(file, words) of every wavenet-conv command in a bash block (each side of a pipe)."""
    for path in DOCS:
        for block in code_blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"\|\||&&|[|;&]", line):
                    words = shlex.split(part, comments=True)
                    words = words[: next((i for i, w in enumerate(words) if w.startswith((">", "<", "2>"))), len(words))]
                    if words and words[0] == "wavenet-conv":
                        yield os.path.relpath(path, ROOT), words


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
