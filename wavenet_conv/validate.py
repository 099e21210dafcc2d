"""The checks of the library's arguments, in one place: each names the function and the argument.

A value of the wrong kind is a ``TypeError`` (a bug in the caller's code); a value of the right kind
that cannot be used is an ``ArgumentError`` (an ``InputError``: a mistake the command line reports in
one line, with its own option's name).
"""

from __future__ import annotations

import math
import numbers
import operator
import os

from .data import Vocab
from .errors import ArgumentError


def integer(who: str, name: str, v, low: int, optional: bool = False) -> int | None:
    """``v`` as an int (any integer type: ``operator.index``; not a bool), at least ``low``."""
    if optional and v is None:
        return None
    try:
        i = operator.index(v)
    except TypeError:
        i = None
    if i is None or isinstance(v, bool) or i < low:
        raise ArgumentError(who, name, f"must be an integer >= {low}{' or None' if optional else ''}, got {v!r}")
    return i


def positive_number(who: str, name: str, v) -> float:
    """``v`` as a float: a real number (numpy's too, not a bool), finite and > 0."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not 0 < v < math.inf:
        raise ArgumentError(who, name, f"must be a positive finite number, got {v!r}")
    return float(v)


def one_of(who: str, name: str, v, choices: tuple) -> str:
    if v not in choices:
        raise ArgumentError(who, name, f"must be one of {choices}, got {v!r}")
    return v


def model_of(who: str, model, kinds: tuple, what: str):
    """``model`` if it is an instance of one of ``kinds`` (``what`` names them), else a ``TypeError``."""
    if not isinstance(model, kinds):
        raise TypeError(f"{who}: expected a {what}, got {type(model).__name__}")
    return model


def vocab_of(who: str, vocab, vocab_size: int) -> Vocab:
    """A ``Vocab`` of exactly ``vocab_size`` tokens (the model's)."""
    if not isinstance(vocab, Vocab):
        raise TypeError(f"{who}: expected a Vocab, got {type(vocab).__name__}")
    if len(vocab) != vocab_size:
        raise ArgumentError(who, "vocab", f"has {len(vocab)} tokens but the model's vocab_size is {vocab_size}")
    return vocab


def paths(who: str, **given) -> None:
    """An ``ArgumentError`` for a path given as "" (``Path("")`` is the current folder, not a mistake's
    "nothing"); None and any other path pass."""
    for name, path in given.items():
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == "":
            raise ArgumentError(who, name, "is an empty path")


def string_list(who: str, name: str, items) -> list[str]:
    """``items`` as a list of str, or a ``TypeError`` naming the first item that is not one."""
    if isinstance(items, str):
        raise TypeError(f"{who}: {name} must be a list of strings, got a single str")
    items = list(items)
    for i, w in enumerate(items):
        if not isinstance(w, str):
            raise TypeError(f"{who}: {name}[{i}] is a {type(w).__name__}, not a str: {w!r}")
    return items
