"""notebooks/lecture_to_conv.ipynb runs top to bottom on the bundled names, in a fresh working directory
(its runs/ land there), with no cell raising: its own asserts check what it shows (the tree's nodes
equal the conv's outputs, the two forms' logits equal on the dev split in float64, every variant
equal to its tree, the same val loss three ways), and its recipe example trains a recipe's teachers
and student. It draws every figure it shows, writes nothing to stderr, and is committed without
outputs, using only the package's top-level names. Its text quotes the README's results and keeps no
results table of its own.

Needs the dev extra (nbformat, nbclient, ipykernel, matplotlib); a minute or two on one CPU thread.
"""

import os
import re
import time

import pytest

import wavenet_conv
from helpers import ROOT

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = os.path.join(ROOT, "notebooks", "lecture_to_conv.ipynb")
CELL_TIMEOUT = 300  # seconds one cell may take before the run fails
TOTAL_LIMIT = 600  # seconds for the whole notebook: a few minutes even on a busy machine


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_committed_without_outputs():
    for i, cell in enumerate(code_cells(read_notebook())):
        assert not cell.outputs and cell.execution_count is None, (
            f"code cell {i} of {NOTEBOOK} holds outputs: clear them before committing (CI executes the notebook)")


def test_uses_the_top_level_api_only():
    source = "\n".join(c.source for c in code_cells(read_notebook()))
    assert not re.search(r"wavenet_conv\.|import wavenet_conv\b", source), "the notebook imports a submodule"
    names = re.findall(r"from wavenet_conv import \(([^)]*)\)|from wavenet_conv import ([^\n(]+)", source)
    imported = {n.strip() for groups in names for g in groups for n in g.split(",") if n.strip()}
    assert imported and imported <= set(wavenet_conv.__all__), sorted(imported - set(wavenet_conv.__all__))


def test_quotes_the_docs_results_and_keeps_no_table_of_its_own():
    """The README's Results table is the one place recipes' results live: the notebook has no table row
    of a recipe, and every loss its text quotes (1.993, 1.9767) is one README.md or
    experiments/REPRODUCE.md reports."""
    text = "\n".join(c.source for c in read_notebook().cells if c.cell_type == "markdown")
    rows = [line for line in text.splitlines() if line.startswith("|") and "recipe" in line]
    assert not rows, rows
    docs = ""
    for path in ("README.md", os.path.join("experiments", "REPRODUCE.md")):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            docs += f.read()
    quoted = set(re.findall(r"(?<![\d.])\d\.\d{3,4}(?![\d.])", text))
    assert quoted and not {q for q in quoted if q not in docs}, sorted(q for q in quoted if q not in docs)


@pytest.mark.slow
def test_runs_top_to_bottom(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))  # this checkout
    monkeypatch.delenv("WAVENET_CONV_NAMES", raising=False)  # the bundled names
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline figures
    nb = read_notebook()
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()  # a cell that raises fails the test here, with its traceback
    seconds = time.perf_counter() - t0
    assert seconds < TOTAL_LIMIT, f"the notebook took {seconds:.0f} s"
    assert (tmp_path / "runs" / "lecture" / "checkpoint.pt").exists()  # its run landed in the working directory
    for run in ("best/teacher-0", "best/teacher-1", "best"):  # the recipe example ran, teachers and student
        assert (tmp_path / "runs" / run / "checkpoint.pt").exists(), run
    cells = code_cells(nb)
    outputs = [o for c in cells for o in c.outputs]
    shown = sum(c.source.count("plt.show()") for c in cells)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == shown, "a figure was not drawn"
    errors = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not errors, errors
