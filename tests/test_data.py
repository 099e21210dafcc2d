"""Vocabulary, names files, the lecture split, and the two example layouts."""

import hashlib
import io
import random
import sys

import pytest

from helpers import BUNDLED_NAMES, LECTURE_NAMES, VOCAB, main
from wavenet_conv import DataError, Vocab, contexts, lecture_split, load_names, paths, sequences
from wavenet_conv.data import read_lines


def test_vocab_round_trip():
    v = Vocab.from_words(["emma", "zoe", "ava"])
    assert v.itos[0] == "." and v.chars == "aemovz"
    assert v.decode(v.encode("zoe")) == "zoe"
    assert Vocab.from_dict(v.to_dict()) == v and len(v) == 7
    with pytest.raises(DataError, match=r"'q' at position 1"):
        v.encode("aq")


def test_lecture_vocab():
    assert len(VOCAB) == 27 and VOCAB.stoi["a"] == 1 and VOCAB.stoi["z"] == 26


@pytest.mark.slow
def test_lecture_split_counts(lecture_words):
    """The lecture's counts, on the lecture's own file."""
    raw = open(LECTURE_NAMES, "rb").read()
    assert hashlib.sha256(raw).hexdigest() == "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
    assert len(lecture_words) == 32033 and len(set(lecture_words)) == 29494
    train, dev, test = lecture_split(lecture_words)
    assert (len(train), len(dev), len(test)) == (25626, 3203, 3204)
    assert train[:3] == ["yuheng", "diondre", "xavien"]
    vocab = Vocab.from_words(lecture_words)
    assert vocab == VOCAB
    for block_size in (3, 8):
        counts = [contexts(s, vocab, block_size)[0].shape[0] for s in (train, dev, test)]
        assert counts == [182625, 22655, 22866]


def test_bundled_data_split(bundled_words):
    raw = open(BUNDLED_NAMES, "rb").read()
    assert hashlib.sha256(raw).hexdigest() == "113e7a6a96d9aa96f21ff920ad62ba77a52370cbd8cdc1b960760e7e9d99c167"
    assert len(bundled_words) == 32469 and len(set(bundled_words)) == 29910
    assert bundled_words[:3] == ["emma", "olivia", "ava"]
    train, dev, test = lecture_split(bundled_words)
    assert (len(train), len(dev), len(test)) == (25975, 3247, 3247)
    assert train[:3] == ["caycee", "iain", "margot"]
    assert [contexts(s, VOCAB, 8)[0].shape[0] for s in (train, dev, test)] == [185346, 23267, 23105]


def test_split_matches_global_random_and_keeps_input():
    words = [f"w{i}" for i in range(101)]
    copy = list(words)
    random.seed(42)
    random.shuffle(copy)
    train, dev, test = lecture_split(words)
    assert train + dev + test == copy and words == [f"w{i}" for i in range(101)]
    assert (len(train), len(dev), len(test)) == (80, 10, 11)


def test_contexts_lecture_layout():
    X, Y = contexts(["ab"], VOCAB, 3)
    assert X.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2]] and Y.tolist() == [1, 2, 0]


def test_sequences_layout():
    b = sequences(["ab", "c"], VOCAB)
    assert b.x.tolist() == [[0, 1, 2], [0, 3, 0]]
    assert b.y.tolist() == [[1, 2, 0], [3, 0, -100]]
    assert b.mask.tolist() == [[True, True, True], [True, True, False]]
    assert b.lengths.tolist() == [3, 2]


def write(tmp_path, data: bytes, name="names.txt"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_load_names_accepts_crlf_blank_lines_and_final_newline(tmp_path):
    p = write(tmp_path, b"emma\r\n\r\nava\r\n\nbob\n")
    assert load_names(p) == ["emma", "ava", "bob"]
    assert load_names(write(tmp_path, b"x\ny", "b.txt")) == ["x", "y"]


@pytest.mark.parametrize(
    "data,pattern",
    [
        (b"", r"names\.txt: no names"),
        (b"\n\n\r\n", r"names\.txt: no names"),
        (b"emma\nan  na\n", r"names\.txt:2: character 4 ' ' in 'an  na' is whitespace after another space$"),
        (b"emma\n\xff\xfeava\n", r"names\.txt:2: not valid UTF-8 \(byte 0xff at character 1\)$"),
        (b"emma\nbad\ttab\n", r"names\.txt:2: character 4 '\\t' in 'bad\\ttab' is whitespace$"),
        (b"emma\nbad\x07bell\n", r"names\.txt:2: character 4 '\\x07' in 'bad\\x07bell' is a control character$"),
    ],
    ids=["empty", "blank-only", "space", "bytes", "tab", "control"],
)
def test_load_names_errors(tmp_path, data, pattern):
    with pytest.raises(DataError, match=pattern):
        load_names(write(tmp_path, data))


READER_CASES = {
    "lf": (b"emma\nava\n", ["emma", "ava"]),
    "crlf": (b"emma\r\nava\r\n", ["emma", "ava"]),
    "no-final-newline": (b"emma\nava", ["emma", "ava"]),
    "final-cr": (b"emma\r\nava\r", ["emma", "ava"]),
    "bom": (b"\xef\xbb\xbfemma\nava\n", ["emma", "ava"]),
    "bom-only-at-start": (b"emma\n\xef\xbb\xbfava\n", ["emma", "\ufeffava"]),
    "blank-lines": (b"\n\nemma\n\r\n\nava\n\n", ["", "", "emma", "", "", "ava", ""]),
    "lone-cr-inside": (b"em\rma\n", ["em\rma"]),
    "not-utf8": (b"a\xffb\nc\n", ["a\udcffb", "c"]),
    "multibyte": ("zoë\nJosé\n".encode(), ["zoë", "José"]),
    "empty": (b"", []),
}


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("case", READER_CASES, ids=READER_CASES.keys())
def test_read_lines_any_block_size(case, block_bytes):
    """One reader for files and stdin: the same lines whatever the block size (CRLF or a UTF-8
    character across a block boundary), a BOM dropped at the start only, bad bytes kept for the
    message."""
    data, lines = READER_CASES[case]
    assert list(read_lines(io.BytesIO(data), block_bytes)) == lines


def test_stdin_and_a_file_go_through_the_same_reader(tmp_path, monkeypatch):
    data = b"\xef\xbb\xbfemma\r\n\nava\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert load_names("-") == load_names(write(tmp_path, data)) == ["emma", "ava"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"emma\n\x89PNG\r\n")))
    with pytest.raises(DataError, match=r"^<stdin>:2: not valid UTF-8 \(byte 0x89 at character 1\)$"):
        load_names("-")


def test_messages_stay_short_whatever_the_line(tmp_path):
    long = "a" * 18_000 + "\tb"
    with pytest.raises(DataError) as e:
        load_names(write(tmp_path, f"emma\n{long}\n".encode()))
    message = str(e.value)
    assert "\n" not in message and len(message) <= 200 + len(str(tmp_path))
    assert message.endswith(f"names.txt:2: character 18001 '\\t' in {'a' * 60!r}… (18,002 characters) is whitespace")


def test_load_names_vocabulary_and_missing(tmp_path):
    p = write(tmp_path, "emma\nzoë\n".encode())
    assert load_names(p) == ["emma", "zoë"]  # no vocabulary given: any printable character
    with pytest.raises(DataError, match=r"names\.txt:2: character 3 'ë' in 'zoë' is not in the vocabulary 'abc"):
        load_names(p, VOCAB)
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        load_names(tmp_path / "nope.txt")
    assert issubclass(DataError, ValueError)


def test_encoding_errors_name_the_index():
    with pytest.raises(DataError, match=r"index 1: name 'b!' has character '!' at position 1"):
        contexts(["a", "b!"], VOCAB, 3)
    with pytest.raises(DataError, match=r"index 2: empty name"):
        sequences(["a", "b", ""], VOCAB)
    with pytest.raises(DataError, match="no names"):
        sequences([], VOCAB)


def test_a_missing_bundled_file_says_how_to_give_one(tmp_path, monkeypatch, capsys):
    """The library names its argument; the command line says the same in its flag."""
    monkeypatch.setattr(paths, "PACKAGE_DIR", str(tmp_path / "pkg"))
    with pytest.raises(DataError, match=r"give a names file of your own \(data=PATH\)$"):
        paths.bundled_names()
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert capsys.readouterr().err.strip().endswith("give a names file of your own (--data PATH)")
