"""Vocabulary, the names file, the lecture's split and the two example layouts.

Two layouts of the same data:

* ``contexts`` -- the lecture's examples: one fixed-length context per target (the tree form).
* ``sequences`` -- whole names, ``x = [0, c1..cn]`` and ``y = [c1..cn, 0]``, right-padded with a mask
  (the conv form scores every position of a name at once).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np
import torch

from .errors import ArgumentError, DataError
from .paths import bundled_names

START = "."  # how token 0, the start and end of every name (no character of the text), is shown
UNKNOWN = "\ufffd"  # how the unknown-character token is shown (U+FFFD, the replacement character)
# how a run's text is normalized before its vocabulary sees it: as it is, case folded (``fold_case``),
# accents folded (``fold_accents``), or both
NORMALIZATIONS = ("none", "case", "accents", "both")
# a character outside the vocabulary, at scoring: the unknown token's cost, or the name refused
UNKNOWN_CHOICES = ("score", "error")


def fold_accents(name: str) -> str:
    """``name`` without its accents: each character decomposed (Unicode NFD), its combining marks
    dropped, then composed again (NFC): "José" -> "Jose", "Zoë" -> "Zoe"; "Ł" (no decomposition) stays."""
    if name.isascii():
        return name
    bare = "".join(c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare)


def normalize(name: str, how: str) -> str:
    """``name`` normalized as ``how`` (one of ``NORMALIZATIONS``) says."""
    if how in ("accents", "both"):
        name = fold_accents(name)
    return fold_case(name) if how in ("case", "both") else name


def is_text_char(ch: str) -> bool:
    """Whether ``ch`` may stand in a name at all (whatever the vocabulary): printable, a space being the
    only whitespace (where the single-space rule allows it), no lone surrogate."""
    return ch == " " or (ch.isprintable() and not ch.isspace() and not "\ud800" <= ch <= "\udfff")


class Vocab:
    """Characters <-> token ids. Token 0 is the start and end of every name, a reserved id that no
    character maps to (shown as ``.``; the lecture's ``.`` is its id 0); the characters follow, sorted,
    from 1 (``.`` among them, where the text has it). ``unknown``: one more token, the last, for a
    character outside ``chars``: a run trained with it scores any character (``unknown_id``), one
    without it refuses a name with such a character. ``normalize`` (one of ``NORMALIZATIONS``): how
    text is normalized before it is encoded (``normalized``), part of the vocabulary so that every path
    that scores with it normalizes as its run did.

    >>> v = Vocab.from_words(["emma", "ava"])
    >>> v.encode("ave"), v.decode([1, 4, 3])
    ([1, 4, 3], 'ave')
    """

    def __init__(self, chars: Iterable[str], normalize: str = "none", unknown: bool = False):
        chars = sorted(set(chars))
        for ch in chars:
            if len(ch) != 1 or ch == UNKNOWN or not is_text_char(ch):
                raise ArgumentError("Vocab", "chars", f"hold {ch!r}: each must be one printable character (a space "
                                    "is the only whitespace), not U+FFFD")
        if normalize not in NORMALIZATIONS:
            raise ArgumentError("Vocab", "normalize", f"must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
        self.itos = [START] + chars + [UNKNOWN] * bool(unknown)
        self.stoi = {ch: i for i, ch in enumerate(chars, start=1)}  # the characters only: no id 0, no unknown
        self.normalize, self.unknown = normalize, bool(unknown)
        self.unknown_id = len(chars) + 1 if unknown else None  # what a character outside ``chars`` encodes as

    @classmethod
    def from_words(cls, words: Iterable[str], normalize: str = "none") -> "Vocab":
        return cls(set("".join(words)), normalize)

    @classmethod
    def learned(cls, words: Sequence[str], normalize: str = "none", unknown: bool = False, rare: int = 0) -> "Vocab":
        """A new run's vocabulary of its (normalized) training ``words``: every character, or with an
        ``unknown`` token those seen at least ``rare`` times (the rarer ones train as the unknown token)."""
        counts = Counter("".join(words))
        return cls([ch for ch, n in counts.items() if not unknown or n >= rare], normalize, unknown)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos and self.normalize == other.normalize

    def __repr__(self) -> str:
        how = "" if self.normalize == "none" else f", normalize={self.normalize!r}"
        unknown = "" if not self.unknown else ", unknown=True" if self.unknown_id else ", unknown refused"
        return f"Vocab({self.chars!r}, size={len(self)}{how}{unknown})"

    def normalized(self, names: list[str]) -> list[str]:
        """``names`` as this vocabulary reads them (``normalize``); the same list when it is "none"."""
        if self.normalize == "none":
            return names
        if self.normalize == "accents":
            return [name if name.isascii() else normalize(name, "accents") for name in names]
        # an ASCII name has no accents, and its lower case is one character for one
        return [name.lower() if name.isascii() else normalize(name, self.normalize) for name in names]

    def with_case_folded(self) -> "Vocab":
        """This vocabulary, reading text case folded too (for a run that was not trained so)."""
        both = {"none": "case", "accents": "both"}.get(self.normalize, self.normalize)
        return self.copy(normalize=both)

    def refusing_unknown(self) -> "Vocab":
        """This vocabulary (the same ids), refusing a name with a character outside ``chars`` as a run
        without an unknown token does, instead of scoring it as the unknown token."""
        vocab = self.copy()
        vocab.unknown_id = None
        return vocab

    def copy(self, normalize: str | None = None) -> "Vocab":
        vocab = Vocab(self.chars, normalize or self.normalize, self.unknown)
        vocab.unknown_id = self.unknown_id
        return vocab

    @property
    def chars(self) -> str:
        return "".join(self.itos[1 : 1 + len(self.stoi)])

    def encode(self, word: str, where: str = "") -> list[int]:
        """Token ids of ``word`` (no start/end tokens): a character outside the vocabulary is the
        unknown token's id, or a ``DataError`` where the vocabulary has none (or refuses it)."""
        unknown = self.unknown_id
        if unknown is None:
            for i, ch in enumerate(word):
                if ch not in self.stoi:
                    at = f"{where}: " if where else ""
                    raise DataError(f"{at}name {word!r} has character {ch!r} at position {i} "
                                    f"that is not in the vocabulary ({self.chars!r})")
        return [self.stoi.get(ch, unknown) for ch in word]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def covers(self, words: Iterable[str]) -> bool:
        """Whether every character of ``words`` encodes: it is in the vocabulary, or there is an unknown token."""
        return self.unknown_id is not None or all(ch in self.stoi for w in words for ch in w)

    def unknown_at(self, word: str) -> list[int]:
        """The positions (from 0) of ``word``'s characters that encode as the unknown token."""
        return [i for i, ch in enumerate(word) if ch not in self.stoi] if self.unknown_id is not None else []

    def to_dict(self) -> dict:
        """What a checkpoint stores; "normalize" and "unknown" only where they are set (a file of 1.0
        has neither)."""
        d = {"chars": self.chars}
        if self.normalize != "none":
            d["normalize"] = self.normalize
        if self.unknown:
            d["unknown"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["chars"], d.get("normalize", "none"), d.get("unknown", False))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


QUOTE_LIMIT = 60  # characters of a name quoted in an error message, at most


EMPTY_NAME = "empty name"  # the reason of a blank line, where a row must give one (the batch scorer, Ray)


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``repr(text)``, cut to about ``limit`` characters of output (escapes count): a message stays one
    short line whatever the input."""
    if len(repr(text)) <= limit + 2:
        return repr(text)
    used, cut = 0, 0
    for cut, ch in enumerate(text):
        used += len(repr(ch)) - 2
        if used > limit:
            break
    return f"{text[:cut]!r}… ({len(text):,} characters)"


SPACE_FAULTS = ("whitespace at the start", "whitespace at the end", "whitespace after another space")


def space_faults(cps: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The single-space rule, the one place it is written: a space is a character of a name ("mary ann")
    only as a single space between two other characters of that name.

    cps: (sum of lengths,) the names' code points back to back; lengths: (N,) characters per name.
    Returns (3, sum of lengths) bool: row k is True at each space that breaks the rule as
    ``SPACE_FAULTS[k]`` says (its name's first character, its name's last, right after another space).
    """
    space = cps == ord(" ")
    nonempty = lengths[lengths > 0]
    ends = np.cumsum(nonempty)  # one past each non-empty name's last character
    first, last, after_space = np.zeros_like(space), np.zeros_like(space), np.zeros_like(space)
    first[ends - nonempty], last[ends - 1] = True, True
    after_space[1:] = space[:-1]
    return np.stack([space & first, space & last, space & after_space & ~first])


def misplaced_spaces(cps: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(sum of lengths,) True at each space of the names' code points ``cps`` (lengths (N,)) that breaks
    the single-space rule (``space_faults``): the scorer's vectorized check."""
    if not (cps == ord(" ")).any():
        return np.zeros(len(cps), dtype=bool)
    return space_faults(cps, lengths).any(0)


def whitespace_problem(word: str, i: int) -> str:
    """Why the whitespace ``word[i]`` cannot stand there, or "" where it can: a space by the single-space
    rule (``space_faults``); any other whitespace never."""
    if word[i] != " ":
        return "whitespace"
    cps = np.frombuffer(word.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (len(word),)
    faults = np.flatnonzero(space_faults(cps, np.array([len(word)]))[:, i])
    return SPACE_FAULTS[faults[0]] if len(faults) else ""


def name_problem(word: str, vocab: Vocab | None) -> str | None:
    """Why ``word`` cannot be a name, in a few words (no location), or None when it can."""
    if not word:
        return EMPTY_NAME
    for i, ch in enumerate(word):
        if "\udc80" <= ch <= "\udcff":  # a byte that was not UTF-8, kept by ``read_lines``
            return f"not valid UTF-8 (byte 0x{ord(ch) - 0xDC00:02x} at character {i + 1})"
        if "\ud800" <= ch <= "\udfff":
            return f"character {i + 1} {ch!r} in {quote(word)} is a lone surrogate, not a character"
        bad = None
        if ch.isspace():
            bad = whitespace_problem(word, i)
        elif not ch.isprintable():
            bad = "a control character"
        if not bad and vocab is not None and ch not in vocab.stoi and vocab.unknown_id is None:
            bad = f"not in the vocabulary {quote(vocab.chars)}"
        if bad:
            return f"character {i + 1} {ch!r} in {quote(word)} is {bad}"
    return None


def check_name(word: str, vocab: Vocab | None, where: str) -> None:
    """Raise ``DataError`` ``"{where}: {problem}"`` if ``word`` is not a valid name."""
    problem = name_problem(word, vocab)
    if problem:
        raise DataError(f"{where}: {problem}")


def split_lines(text: str) -> list[str]:
    """``text`` cut at LF into lines, a CR before each LF dropped (CRLF line ends)."""
    lines = text.split("\n")
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def read_lines(stream: BinaryIO, block_bytes: int = 1 << 20) -> Iterator[str]:
    """Every line of a byte stream, as str without its line end (LF or CRLF), a block at a time.

    The one reader of names files and stdin: UTF-8, a BOM at the start dropped, the same rules for
    both. A byte that is not UTF-8 is kept as a lone surrogate (U+DC80..U+DCFF, Python's
    ``surrogateescape``), which ``name_problem`` reports as not valid UTF-8: one bad line does not
    stop the lines after it from being read.
    """
    rest, first = b"", True
    while True:
        block = stream.read(block_bytes)
        last = not block
        if last:
            block, rest = rest, b""  # a last line without a line end
            if not block:
                return
        else:
            block = rest + block
            cut = block.rfind(b"\n") + 1  # whole lines only; a UTF-8 character never spans a LF byte
            block, rest = block[:cut], block[cut:]
            if not block:
                continue
        text = block.decode("utf-8", "surrogateescape")
        if first:
            text, first = text.removeprefix("\ufeff"), False
        lines = split_lines(text if last else text[:-1])  # without the last LF: nothing follows it
        if last and lines[-1] == "":
            lines.pop()  # a lone CR at the very end
        yield from lines
        if last:
            return


def open_names(path: str | os.PathLike) -> BinaryIO:
    """A names file opened for ``read_lines`` (``"-"``: stdin), or a one-line ``DataError``."""
    if os.fspath(path) == "-":
        return sys.stdin.buffer
    return open_input(path, "a names file", mode="rb")


def open_input(path: str | os.PathLike, what: str, **how):
    """``open(path, **how)``, or a one-line ``DataError`` naming ``path`` (``what`` it should be)."""
    try:
        return open(path, **how)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def source_name(path: str | os.PathLike) -> str:
    """How messages name an input: the path, or ``<stdin>`` for ``"-"``."""
    return "<stdin>" if os.fspath(path) == "-" else os.fspath(path)


def line_name(line: str) -> str:
    """The name on a line of a list: the line without whitespace at either end (its line end too); ""
    for a blank line."""
    return line.strip()


def line_names(lines: list[str]) -> list[str]:
    """``line_name`` of each line, in one C loop (a ``TypeError`` for an item that is not a str)."""
    return list(map(str.strip, lines))


def fold_case(name: str) -> str:
    """``name`` lower-cased character by character: a character whose lower case is more than one
    character ('İ') stays as it is, so that a reason names the input's own character at its place."""
    low = name.lower()
    if len(low) == len(name):
        return low
    return "".join(low_c if len(low_c := c.lower()) == 1 else c for c in name)


def collect_names(lines: Iterable[str], source: str, vocab: Vocab | None = None) -> list[str]:
    """The names among ``lines`` (numbered from 1; ``line_name``'s of each); blank lines are skipped.
    The first bad line is a ``DataError`` ``"{source}:{line}: {problem}"``; no name at all is one too."""
    words = []
    for lineno, line in enumerate(lines, start=1):
        name = line_name(line)
        if name:
            check_name(name, vocab, f"{source}:{lineno}")
            words.append(name)
    if not words:
        raise DataError(f"{source}: no names in it")
    return words


def parse_names(text: str, source: str = "<input>", vocab: Vocab | None = None) -> list[str]:
    """Names from text, one per line, with the rules of ``load_names`` (a BOM at the start dropped)."""
    lines = split_lines(text.removeprefix("\ufeff")) if text else []
    return collect_names(lines[:-1] if lines and lines[-1] == "" else lines, source, vocab)


def load_names(path: str | os.PathLike, vocab: Vocab | None = None) -> list[str]:
    """Read a names file (``"-"``: stdin): UTF-8, one name per line, whitespace at either end of a line
    stripped, blank lines skipped.

    Raises ``DataError`` (a ``ValueError``) naming the file and line (``FILE:LINE: problem``) for: a
    missing or empty file, bytes that are not UTF-8, a name with whitespace inside it (but a single
    space, as in "mary ann"), a control character or a character outside ``vocab``.
    """
    f = open_names(path)
    try:
        return collect_names(read_lines(f), source_name(path), vocab)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def lecture_split(words: Sequence[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """The lecture's 80/10/10 split: ``random.seed(seed); random.shuffle(words)`` then cut.

    The input is not modified. Same result as seeding the global ``random`` module.
    """
    words = list(words)
    random.Random(seed).shuffle(words)
    n1, n2 = split_sizes(len(words))
    return words[:n1], words[n1:n2], words[n2:]


def split_sizes(n: int) -> tuple[int, int]:
    """Where the lecture's split of ``n`` names cuts: the train split is the first n1, val up to n2."""
    return int(0.8 * n), int(0.9 * n)


MIN_NAMES = 6  # the fewest names whose lecture split has a train and a val name (so has every larger count)


def same_data(a: dict | None, b: dict | None) -> bool:
    """Whether two records of a names file (``read_data``'s {"path", "sha256", "n_words"}) are the same
    file: the same bytes (sha256), wherever it lies. The one definition of "the same data"."""
    return a is not None and b is not None and a.get("sha256") == b.get("sha256")


def check_split(words, data: dict) -> None:
    """Refuse a names file too small for the lecture's 80/10/10 split: an empty train or val split
    (``data``: its record, for the message)."""
    for part, names in zip(("train", "val"), lecture_split(words)):
        if not names:
            raise DataError(f"{data['path']}: {len(words)} name(s) are too few for the lecture's 80/10/10 split: "
                            f"its {part} split would be empty (at least {MIN_NAMES} names are needed)")


def contexts(words: Sequence[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's examples: ``X`` (N, block_size) contexts and ``Y`` (N,) next tokens.

    One example per character of each word plus one for the end token, contexts left-padded with 0.
    """
    if block_size < 1:
        raise ArgumentError("contexts", "block_size", f"must be >= 1, got {block_size}")
    X, Y = [], []
    for i, w in enumerate(words):
        ids = vocab.encode(w, where=f"index {i}")
        context = [0] * block_size
        for ix in ids + [0]:
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X, dtype=torch.long).view(-1, block_size), torch.tensor(Y, dtype=torch.long)


@dataclass
class SequenceBatch:
    """Whole names for the conv form. ``x``, ``y``: (B, T) long; ``mask``: (B, T) bool, True on real
    positions; ``lengths``: (B,) number of targets per name (characters + end token)."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def to(self, device) -> "SequenceBatch":
        return SequenceBatch(*(t.to(device) for t in (self.x, self.y, self.mask, self.lengths)))


IGNORE = -100  # target id on padding positions (cross_entropy's default ignore_index)


def sequences(words: Sequence[str], vocab: Vocab, pad_to: int | None = None) -> SequenceBatch:
    """Encode names as whole sequences: ``x = [0, c1..cn]``, ``y = [c1..cn, 0]``.

    Shorter names are right-padded: ``x`` with 0, ``y`` with -100 (ignored by ``cross_entropy``).
    """
    if len(words) == 0:
        raise DataError("no names to encode")
    enc = [vocab.encode(w, where=f"index {i}") for i, w in enumerate(words)]
    for i, ids in enumerate(enc):
        if not ids:
            raise DataError(f"index {i}: empty name")
    T = max(len(ids) for ids in enc) + 1
    if pad_to is not None:
        T = max(T, pad_to)
    B = len(enc)
    x = torch.zeros(B, T, dtype=torch.long)
    y = torch.full((B, T), IGNORE, dtype=torch.long)
    lengths = torch.tensor([len(ids) + 1 for ids in enc], dtype=torch.long)
    for b, ids in enumerate(enc):
        n = len(ids)
        x[b, 1 : n + 1] = torch.tensor(ids, dtype=torch.long)
        y[b, :n] = x[b, 1 : n + 1]
        y[b, n] = 0
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return SequenceBatch(x, y, mask, lengths)
