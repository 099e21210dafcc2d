"""The library's layout rewards cohesion, not size: subpackages by role with imports that run one way
between them, the command line alone speaking in flags, one module alone reading and writing
checkpoints, no function over MAX_FUNCTION_LINES lines (its ``def`` line to its last line, docstring
included), and a README of at most MAX_README_LINES lines whose layout names every subpackage.

Each rule is a function over a package folder (or the README's text) that returns its violations as
``path:line: what`` lines; ``test_a_planted_violation_is_found`` runs each on a small tree with one
violation planted, so that a rule that stops seeing its violations fails here too.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap

import pytest

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "wavenet_conv")
MAX_FUNCTION_LINES = 60
MAX_README_LINES = 200

# the one-way order: a module imports from its own layer and the layers before it, never after
LAYERS = ("base", "models", "inference", "store", "training", "cluster", "cli")
BASE = ("errors", "validate", "device", "data", "tables", "version", "paths")  # the top-level modules of the base
EXEMPT = ("__init__", "__main__")  # the top-level API and ``python -m``: they import from every layer
API = "the package's __init__"  # ranked after cli: a library module never imports the public API

COMMAND_LINE = "cli"  # the one subpackage that speaks in flags
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
FLAG_ALLOWED: dict[str, set[str]] = {}  # {"sub/module.py": {"--flag"}}, each with why; none needed

CHECKPOINT_OWNER = "store/checkpoint.py"  # the one module that reads and writes checkpoint.pt
CHECKPOINT_NAME = re.compile(r"(^|_)(ckpt|checkpoint|meta)s?(_|$)")  # meta: load_model's checkpoint fields
KEY_METHODS = ("get", "pop", "setdefault")


def modules(package: str) -> dict[str, str]:
    """{path relative to ``package`` ("models/config.py"): source} of every module, recursively."""
    found = {}
    for folder, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                found[os.path.relpath(path, package).replace(os.sep, "/")] = f.read()
    return found


def parsed(package: str):
    """(relative path, ast) of every module of ``package``."""
    return [(rel, ast.parse(source, rel)) for rel, source in modules(package).items()]


def nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` that has a line, in source order (functions' bodies included)."""
    return sorted((n for n in ast.walk(tree) if hasattr(n, "lineno")), key=lambda n: (n.lineno, n.col_offset))


# ----------------------------------------------------------------------------- imports run one way


def layer(parts: list[str]) -> str | None:
    """The layer of the module or package ``parts`` (under the package: ["models", "config"]); API for
    the package itself; None for a top-level module in no layer."""
    if not parts or parts == ["__init__"]:
        return API
    if parts[0] in LAYERS[1:]:
        return parts[0]
    return "base" if parts[0] in BASE else None


def rank(name: str) -> int:
    return LAYERS.index(name) if name in LAYERS else len(LAYERS)


def imported(rel: str, tree: ast.Module, known: set[str]):
    """(line, parts under the package) of every import of the package's own modules in ``tree``, at
    any depth (inside functions too): relative, absolute or ``importlib.import_module("wavenet_conv.x")``.
    ``known``: every module and package, as dotted names, so that ``from .. import errors`` resolves to
    the module ``errors``."""
    package = rel[: -len(".py")].split("/")[:-1]  # the folder the module is in: [] or ["models"]
    for node in nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "wavenet_conv":
                    yield node.lineno, alias.name.split(".")[1:]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            name = str(node.args[0].value) if node.args and isinstance(node.args[0], ast.Constant) else ""
            if name.split(".")[0] == "wavenet_conv":
                yield node.lineno, name.split(".")[1:]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                assert up <= len(package), f"{rel}:{node.lineno}: a relative import above the package"
                base = package[: len(package) - up] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "wavenet_conv":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = base + [alias.name]
                yield node.lineno, sub if ".".join(sub) in known else base


def import_violations(package: str) -> list[str]:
    """Every import of a later layer (or of the package's __init__) and every module in no layer."""
    trees = parsed(package)
    known = {rel[: -len(".py")].replace("/", ".").removesuffix(".__init__") for rel, _ in trees}
    found = []
    for rel, tree in trees:
        if rel[: -len(".py")] in EXEMPT:
            continue
        own = layer(rel[: -len(".py")].split("/"))
        if own is None:
            found.append(f"{rel}: in no layer (a top-level module of the base goes in BASE)")
            continue
        for line, parts in imported(rel, tree, known):
            other = layer(parts)
            if other is None or rank(other) > rank(own):
                found.append(f"{rel}:{line}: {own} imports {'.'.join(parts) or 'wavenet_conv'} ({other})")
    return found


def test_imports_run_one_way_between_subpackages():
    found = import_violations(PACKAGE)
    assert not found, f"imports against the order {' < '.join(LAYERS)}:\n" + "\n".join(found)


def import_graph(package: str) -> dict[str, dict[str, int]]:
    """{module: {module it imports: the line of the first such import}}, every import at any depth
    (inside functions too: a lazy import is an import), between the package's own modules."""
    trees = parsed(package)
    known, folders = set(), set()
    for rel, _ in trees:
        dotted = rel[: -len(".py")].replace("/", ".")
        if dotted.endswith("__init__"):
            folders.add(dotted.removesuffix(".__init__").removesuffix("__init__"))
        known.add(dotted.removesuffix(".__init__").removesuffix("__init__"))
    graph = {}
    for rel, tree in trees:
        edges = graph.setdefault(rel, {})
        for line, parts in imported(rel, tree, known):
            name = ".".join(parts)
            if name not in known:
                continue
            target = (name.replace(".", "/") + "/__init__.py" if name else "__init__.py") if name in folders \
                else name.replace(".", "/") + ".py"
            if target != rel:
                edges.setdefault(target, line)
    return graph


def import_cycles(package: str) -> list[str]:
    """Every cycle of imports among the package's modules, one line each from its last module by name
    (``b.py:LINE: b.py -> a.py -> b.py``, LINE its import of the next). The package's own ``__init__.py`` (the public API, which
    imports every layer) is left out: a library module never imports it (the one-way rule)."""
    graph = {m: {t: n for t, n in e.items() if t != "__init__.py"} for m, e in import_graph(package).items()
             if m != "__init__.py"}
    found, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, {})):
                if nxt == start:
                    cycle = path + [start]
                    key = tuple(cycle)
                    if key not in seen:
                        seen.add(key)
                        last = cycle.index(max(cycle))
                        cycle = cycle[last:-1] + cycle[:last] + [cycle[last]]  # from its last module
                        found.append(f"{cycle[0]}:{graph[cycle[0]][cycle[1]]}: " + " -> ".join(cycle))
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_import_cycle():
    found = import_cycles(PACKAGE)
    assert not found, "import cycles (a lazy import inside a function is one too):\n" + "\n".join(found)


# ----------------------------------------------------------------------------- parameters: threads and counts

MAX_PARAMETERS = 6  # an internal function's parameters (self and cls not counted)
# the public API that keeps its arguments (a user's calls go on working), each of which may take more
PUBLIC_SIGNATURES = {("training/train.py", "train"), ("training/teachers.py", "train_recipe"),
                     ("inference/scoring.py", "score_names"), ("inference/scoring.py", "of"),
                     ("inference/streaming.py", "score_lines"), ("inference/sampling.py", "sample_names"),
                     ("inference/sampling.py", "sample_batches"), ("cluster/job.py", "score_files"),
                     ("inference/bucketed.py", "__init__")}  # BucketedScorer: the GPU path's options
# the functions that take ``threads``: the two that set them, a Scorer's, and train's (where a process
# starts its work: a training); everything else runs on the threads its caller set
THREADS_TAKEN = {("device.py", "check_threads"), ("device.py", "torch_threads"), ("inference/scoring.py", "of"),
                 ("training/train.py", "train")}


def functions(package: str):
    """(relative path, function node, its parameter names less self and cls) of every function."""
    for rel, tree in parsed(package):
        for node in nodes(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
                yield rel, node, names + [p.arg for p in (a.vararg, a.kwarg) if p is not None]


def threads_violations(package: str) -> list[str]:
    """Every function that takes ``threads`` but THREADS_TAKEN's."""
    return [f"{rel}:{node.lineno}: {node.name} takes threads" for rel, node, names in functions(package)
            if "threads" in names and (rel, node.name) not in THREADS_TAKEN]


def parameter_violations(package: str) -> list[str]:
    """Every function of more than MAX_PARAMETERS parameters but the public ones (PUBLIC_SIGNATURES)."""
    return [f"{rel}:{node.lineno}: {node.name} takes {len(names)} parameters" for rel, node, names in functions(package)
            if len(names) > MAX_PARAMETERS and (rel, node.name) not in PUBLIC_SIGNATURES]


def test_at_most_four_functions_take_threads():
    assert len(THREADS_TAKEN) <= 4
    found = threads_violations(PACKAGE)
    assert not found, "threads are set where a process starts its work, not passed down:\n" + "\n".join(found)


def test_internal_functions_take_few_parameters():
    found = parameter_violations(PACKAGE)
    assert not found, f"functions of more than {MAX_PARAMETERS} parameters (a dataclass of options?):\n" + "\n".join(found)


def test_every_subpackage_is_a_layer():
    folders = {d for d in os.listdir(PACKAGE) if os.path.exists(os.path.join(PACKAGE, d, "__init__.py"))}
    assert folders == set(LAYERS[1:]), folders ^ set(LAYERS[1:])


# ----------------------------------------------------------------------------- flags: the command line's alone


def flags_in(node: ast.AST) -> list[str]:
    """The flags a string constant spells, and a ``--`` joined to a value (``f"--{name}"``, ``"--" + name``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return FLAG.findall(node.value)
    if isinstance(node, ast.JoinedStr):
        pairs = zip(node.values, node.values[1:])
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        pairs = [(node.left, node.right)]
    else:
        return []
    return [f"{a.value}{{{ast.unparse(b)}}}" for a, b in pairs
            if isinstance(a, ast.Constant) and isinstance(a.value, str) and re.search(r"(?<![\w-])--$", a.value)]


def flag_violations(package: str) -> list[str]:
    """Every flag spelled in a module outside the command line (docstrings and messages included)."""
    found = []
    for rel, tree in parsed(package):
        if rel.split("/")[0] == COMMAND_LINE:
            continue
        for node in nodes(tree):
            found += [f"{rel}:{node.lineno}: {flag}" for flag in flags_in(node) if flag not in FLAG_ALLOWED.get(rel, ())]
    return found


def test_no_flag_outside_the_command_line():
    found = flag_violations(PACKAGE)
    assert not found, "flags in library code (name the function's argument instead):\n" + "\n".join(found)


# ----------------------------------------------------------------------------- the checkpoint's one owner


def names_a_checkpoint(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return bool(CHECKPOINT_NAME.search(name.lower()))


def is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def checkpoint_violations(package: str) -> list[str]:
    """Outside CHECKPOINT_OWNER: ``ckpt["key"]``, ``checkpoint.get("key")`` (and pop, setdefault) on a
    name or attribute that names a checkpoint, and every ``torch.load`` / ``torch.save``."""
    found = []
    for rel, tree in parsed(package):
        if rel == CHECKPOINT_OWNER:
            continue
        for node in nodes(tree):
            if isinstance(node, ast.Subscript) and names_a_checkpoint(node.value) and is_str(node.slice):
                found.append(f"{rel}:{node.lineno}: [{node.slice.value!r}]")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr in KEY_METHODS and names_a_checkpoint(f.value) and node.args and is_str(node.args[0]):
                    found.append(f"{rel}:{node.lineno}: .{f.attr}({node.args[0].value!r})")
                elif f.attr in ("load", "save") and isinstance(f.value, ast.Name) and f.value.id == "torch":
                    found.append(f"{rel}:{node.lineno}: torch.{f.attr}")
    return found


def test_no_checkpoint_key_is_read_outside_its_owner():
    found = checkpoint_violations(PACKAGE)
    assert not found, f"checkpoint keys read outside {CHECKPOINT_OWNER} (use its Checkpoint):\n" + "\n".join(found)


# ----------------------------------------------------------------------------- functions and the README


def long_functions(package: str) -> list[str]:
    found = []
    for rel, tree in parsed(package):
        for node in nodes(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno}: {node.name} is {n} lines")
    return found


def test_no_function_is_over_the_limit():
    found = long_functions(PACKAGE)
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


def layout_misses(readme: str, package: str) -> list[str]:
    """The subpackage folders that the README's layout block (its ```text block naming wavenet_conv/)
    does not name as ``folder/``."""
    blocks = [b for b in re.findall(r"^```text\n(.*?)^```", readme, flags=re.M | re.S) if "wavenet_conv/" in b]
    folders = sorted(d for d in os.listdir(package) if os.path.exists(os.path.join(package, d, "__init__.py")))
    if not blocks:
        return ["the README has no layout block (```text naming wavenet_conv/)"]
    return [f"{d}/" for d in folders if not re.search(rf"(?<![\w-]){d}/", blocks[-1])]


def test_the_readme_is_short_and_its_layout_names_every_subpackage():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert len(readme.splitlines()) <= MAX_README_LINES
    missing = layout_misses(readme, PACKAGE)
    assert not missing, f"the README's layout does not name {missing}"


# ----------------------------------------------------------------------------- each rule sees a planted violation

CLEAN = {
    "__init__.py": "from .training.train import train\nfrom .cli.main import main\n",
    "__main__.py": "from .cli.main import main\nmain()\n",
    "errors.py": "class ConfigError(ValueError):\n    pass\n",
    "data.py": "from .errors import ConfigError\nfrom . import errors\n",
    "models/__init__.py": '"""models"""\n',
    "models/config.py": "from ..errors import ConfigError\nfrom .. import data\nfrom . import tree\n",
    "models/tree.py": "import torch\nimport wavenet_conv.errors\n",
    "store/__init__.py": "",
    "store/checkpoint.py": ("import torch\nfrom ..models.config import ConfigError\n\n"
                            "def load(path):\n    ckpt = torch.load(path)\n    return ckpt['step'], ckpt.get('data')\n"),
    "training/__init__.py": "",
    "training/train.py": ("from ..store.checkpoint import load\n\n"
                          "def train(resume=None, threads=1, a=0, b=0, c=0, d=0, e=0):\n    from ..models import config\n"
                          "    if resume is None:\n        raise ValueError('train: resume is None: pass resume=path')\n"
                          "    return load(resume), {'step': 1}['step'], f'a-- b {resume}', '--', 'x--y'\n"),
    "cli/__init__.py": "from .main import main\n",
    "cli/main.py": ("from ..training.train import train\n\n"
                    "def main(argv=None):\n    name = 'out'\n    return f'--{name}', '--resume', train()\n"),
}
README = ("# x\n\n```text\nwavenet_conv/  base\n  models/  inference/  store/  training/\n"
          "  cluster/  cli/ (the command line)\n```\n")

PLANTED = [
    (import_violations, "models/config.py", "from ..training.train import train\n"),
    (import_violations, "store/checkpoint.py", "def f():\n    from wavenet_conv.cli import main\n"),
    (import_violations, "models/tree.py", "import wavenet_conv.training.train\n"),
    (import_violations, "training/train.py", "from .. import train\n"),
    (import_violations, "data.py", "from .models import config\n"),
    (import_violations, "models/tree.py", "from wavenet_conv import train\n"),
    (import_violations, "helpers.py", "x = 1\n"),
    (import_violations, "inference/bucketed.py",
     "import importlib\n\ndef f():\n    importlib.import_module('wavenet_conv.cluster.job')\n"),
    (flag_violations, "training/train.py", "def f():\n    raise ValueError('pass --force to replace it')\n"),
    (flag_violations, "store/checkpoint.py", "def f(out):\n    return f'{out} exists: use --resume'\n"),
    (flag_violations, "models/config.py", "def f(name):\n    return f'--{name}'\n"),
    (flag_violations, "models/config.py", "def f(name):\n    return '--' + name.replace('_', '-')\n"),
    (flag_violations, "models/tree.py", '"""Scores a file (--id-column keys its rows)."""\n'),
    (checkpoint_violations, "training/train.py", "def f(ckpt):\n    return ckpt['step']\n"),
    (checkpoint_violations, "training/train.py", "def f(checkpoint):\n    return checkpoint.get('data')\n"),
    (checkpoint_violations, "cli/main.py", "def f(loaded):\n    return loaded.meta.get('step')\n"),
    (checkpoint_violations, "training/train.py", "def f(teacher_ckpt):\n    teacher_ckpt['metrics'] = None\n"),
    (checkpoint_violations, "cluster/job.py", "import torch\n\ndef f(p):\n    return torch.load(p)\n"),
    (checkpoint_violations, "training/train.py", "import torch\n\ndef f(m, p):\n    torch.save(m, p)\n"),
    (long_functions, "cluster/job.py", "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES),
    (import_cycles, "models/tree.py", "from .config import ConfigError\n"),
    (import_cycles, "models/tree.py", "def f():\n    from . import config\n"),
    (import_cycles, "training/train.py", "def f():\n    from ..cli.main import main\n"),
    (threads_violations, "cluster/job.py", "def score(names, threads=None):\n    return names\n"),
    (threads_violations, "training/train.py", "class S:\n    def of(self, threads):\n        return threads\n"),
    (parameter_violations, "cluster/job.py", "def f(a, b, c, d, e, f, g):\n    return a\n"),
    (parameter_violations, "cluster/job.py", "def f(a, b, c, d, e, f, *, g=1):\n    return a\n"),
    (parameter_violations, "cluster/job.py", "def f(a, b, c, d, e, f, **more):\n    return a\n"),
]


def write_tree(root, files: dict[str, str]) -> str:
    for rel, source in files.items():
        path = root / "wavenet_conv" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return str(root / "wavenet_conv")


@pytest.mark.parametrize("check", [import_violations, flag_violations, checkpoint_violations, long_functions,
                                   import_cycles, threads_violations, parameter_violations])
def test_a_clean_tree_passes(check, tmp_path):
    assert check(write_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("check,rel,planted", PLANTED, ids=[f"{c.__name__}-{r}-{i}" for i, (c, r, _) in enumerate(PLANTED)])
def test_a_planted_violation_is_found(check, rel, planted, tmp_path):
    files = {**CLEAN, rel: textwrap.dedent(planted) + "\n" + CLEAN.get(rel, "")}
    found = check(write_tree(tmp_path, files))
    assert len(found) == 1 and found[0].startswith(rel), found


def test_a_function_of_the_limit_passes(tmp_path):
    files = {**CLEAN, "cluster/job.py": "def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 2) + "    return x\n"}
    assert long_functions(write_tree(tmp_path, files)) == []


@pytest.mark.parametrize("readme,missing", [
    (README, []),
    (README.replace("cluster/  ", ""), ["cluster/"]),
    (README.replace("store/", "store"), ["store/"]),
    (README.replace("cli/", "other-cli/"), ["cli/"]),
    (README.replace("  models/", "  wavenet_conv/models/"), []),
    (README.replace("```text", "```"), ["the README has no layout block (```text naming wavenet_conv/)"]),
], ids=["all named", "one missing", "one without its slash", "one inside another name", "as a path", "no block"])
def test_the_layout_check_sees_a_missing_folder(readme, missing, tmp_path):
    package = write_tree(tmp_path, {**CLEAN, "inference/__init__.py": "", "cluster/__init__.py": ""})
    assert layout_misses(readme, package) == missing
