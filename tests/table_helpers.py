"""Tables for the tests: the issue's cells, as a CRM export holds them, written as CSV, TSV, JSONL
and Parquet (``WRITERS``: format -> a function of a path), keyed by an id column."""

import json

import pytest

# quoted commas, an embedded newline, a blank, a number
CELLS = ["José", "Mary-Jane", "O'Brien", "EMMA", "Łukasz", "Zoë", "user123", "Светлана", "Anne Marie", "", "emma",
         "ava"]


def write_csv(path, delimiter=","):
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", "first_name", "city"])
        for i, name in enumerate(CELLS):
            w.writerow([f"u{i}", name, "Paris, France" if i % 2 else "a\nmultiline \"place\""])
    return path


def write_jsonl(path):
    rows = [{"id": f"u{i}", "first_name": name or None} for i, name in enumerate(CELLS)]
    rows[9] = {"id": "u9"}  # a missing key: a blank row, as a null
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def write_parquet(path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(len(CELLS))],
                             "first_name": [name or None for name in CELLS]}), path)
    return path


WRITERS = {"csv": write_csv, "tsv": lambda p: write_csv(p, "\t"), "jsonl": write_jsonl, "parquet": write_parquet}

