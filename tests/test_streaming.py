"""Per-character scores, and ``score_lines``: any number of lines, a chunk at a time, with line
numbers, blank and invalid lines, case folding and shards."""

import pytest
import torch
import torch.nn.functional as F

from helpers import VARIANTS, VOCAB, make_pair, random_words, variant_id
from wavenet_conv import DataError, FlatConfig, FlatModel, ModelConfig, contexts, score_names
from wavenet_conv.inference.streaming import parse_shard, score_lines
from wavenet_conv.data import fold_case

METHODS = ["fast", "forward", "contexts"]


def tree_per_target(tree, words):
    """The reference: the tree on the lecture's contexts, one NLL per target, name after name."""
    X, Y = contexts(words, VOCAB, tree.block_size)
    with torch.no_grad():
        return F.cross_entropy(tree(X), Y, reduction="none")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", VARIANTS[::3], ids=variant_id)
def test_per_char_equals_the_trees_per_context_losses(variant, method):
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant)
    tree, conv = make_pair(cfg, torch.float64, seed=7)
    words = random_words(20, seed=3, max_len=12) + ["a", "zz", "a"]  # repeated lengths, longer than 2**3
    r = score_names(conv if method != "contexts" else tree, words, VOCAB, method=method, per_char=True)
    ref = tree_per_target(tree, words)
    assert r.char_nll.shape == ref.shape and r.char_nll.dtype == torch.float64
    assert (r.char_nll - ref).abs().max().item() <= 1e-10
    assert r.offsets.tolist() == [0, *torch.cumsum(r.n_targets, 0).tolist()]
    for i, w in enumerate(words):  # name i: its characters, then the end token
        assert len(r.chars(i)) == len(w) + 1
        assert abs(r.chars(i).sum().item() - r.nll[i].item()) <= 1e-10


def test_per_char_is_off_by_default():
    _, conv = make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2))
    r = score_names(conv, ["ab"], VOCAB)
    assert r.char_nll is None and r.offsets is None
    with pytest.raises(ValueError, match="per_char=True"):
        r.chars(0)


LINES = ["anna", "", "Bob", "zoë", "cy\n", "dee\r\n", "  ", "e.f", "gus", "", "h"]
#         1       2    3      4      5      6         7     8      9     10  11


def collect(parts):
    lines, names, nll, invalid, empty = [], [], [], [], 0
    for p in parts:
        lines += p.lines
        names += p.names
        nll += p.scores.nll.tolist()
        invalid += p.invalid
        empty += p.empty
    return lines, names, nll, invalid, empty


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_score_lines_skips_and_reports_and_equals_score_names(conv, chunk):
    lines, names, nll, invalid, empty = collect(score_lines(conv, LINES, VOCAB, chunk=chunk, skip_invalid=True))
    assert lines == [1, 5, 6, 9, 11] and names == ["anna", "cy", "dee", "gus", "h"]
    assert nll == pytest.approx(score_names(conv, names, VOCAB).nll.tolist(), abs=1e-12)
    assert [line for line, _ in invalid] == [3, 4, 8] and empty == 3  # line 7, whitespace, is blank
    assert len(lines) + len(invalid) + empty == len(LINES)
    assert "'B' in 'Bob' is not in the vocabulary" in invalid[0][1]
    assert "'.' in 'e.f' is not in the vocabulary" in invalid[2][1]


def test_lowercase_folds_a_character_at_a_time_and_names_the_inputs_own(conv):
    """'İ' lower-cases to two characters: it stays, and the reason names it at its place. A name is
    shown as it came, scored as folded."""
    got = collect(score_lines(conv, ["İvy", "ZOE", "Ωmega"], VOCAB, skip_invalid=True, lowercase=True))
    assert got[1] == ["ZOE"] and [line for line, _ in got[3]] == [1, 3]
    assert got[2] == score_names(conv, ["zoe"], VOCAB).nll.tolist()
    assert got[3][0][1].startswith("character 1 'İ' in 'İvy' is not in the vocabulary")
    assert got[3][1][1].startswith("character 1 'ω' in 'ωmega' is not in the vocabulary")
    assert fold_case("İvY") == "İvy" and fold_case("ÀB") == "àb"


def test_score_lines_strips_whitespace_at_either_end_of_a_line(conv):
    """A name is its line without whitespace at either end; a line of whitespace is blank."""
    lines = [" anna", "cy \t", "\u3000dee\r\n", " \t ", "b ob"]
    got = collect(score_lines(conv, lines, VOCAB, skip_invalid=True))
    assert got[:2] == ([1, 2, 3], ["anna", "cy", "dee"]) and got[4] == 1
    assert got[2] == pytest.approx(score_names(conv, ["anna", "cy", "dee"], VOCAB).nll.tolist(), abs=1e-12)
    assert got[3] == [(5, "character 2 ' ' in 'b ob' is not in the vocabulary 'abcdefghijklmnopqrstuvwxyz'")]


@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_score_lines_stops_at_the_first_bad_line_after_the_lines_before_it(conv, chunk):
    seen = []
    with pytest.raises(DataError, match=r"^names\.txt:3: character 1 'B' in 'Bob' is not in the vocabulary"):
        for part in score_lines(conv, LINES, VOCAB, chunk=chunk, source="names.txt"):
            seen += part.lines
    assert seen == [1]  # everything before line 3, nothing after


def test_a_stop_counts_only_the_blank_lines_before_it(conv):
    parts = []
    with pytest.raises(DataError, match=r"^<input>:3: character 2 '1' in 'x1'"):
        for part in score_lines(conv, ["emma", "", "x1", "", "", "ava"], VOCAB):
            parts.append(part)
    assert len(parts) == 1 and parts[0].lines == [1] and parts[0].empty == 1 and parts[0].invalid == []


def test_score_lines_lowercase(conv):
    lines, names, _, invalid, _ = collect(score_lines(conv, ["Anna", "BOB", "zoë"], VOCAB, lowercase=True, skip_invalid=True))
    assert names == ["Anna", "BOB"] and lines == [1, 2] and [line for line, _ in invalid] == [3]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_partition_the_lines(conv, n):
    words = random_words(23, seed=5)
    whole = collect(score_lines(conv, words, VOCAB, chunk=4))
    got = {}
    for k in range(n):
        lines, names, nll, _, _ = collect(score_lines(conv, words, VOCAB, chunk=4, shard=(k, n)))
        assert all((line - 1) % n == k for line in lines)
        got.update({line: (name, v) for line, name, v in zip(lines, names, nll)})
    assert sorted(got) == whole[0]
    assert [got[line] for line in whole[0]] == [(w, pytest.approx(v, abs=1e-12)) for w, v in zip(whole[1], whole[2])]


def test_score_lines_per_char_and_other_models(conv):
    part = next(score_lines(conv, ["ab", "c"], VOCAB, per_char=True))
    assert part.scores.chars(0).shape == (3,) and part.scores.chars(1).shape == (2,)
    flat = FlatModel(FlatConfig(vocab_size=27)).eval()
    lines, names, nll, _, _ = collect(score_lines(flat, ["ab", "", "c"], VOCAB))
    assert lines == [1, 3] and nll == pytest.approx(score_names(flat, ["ab", "c"], VOCAB).nll.tolist())


def test_score_lines_streams_a_generator_lazily(conv):
    """It reads ``chunk`` lines at a time: the first chunk's scores come before the input ends."""
    read = []

    def lines():
        for i in range(10):
            read.append(i)
            yield "ab"

    parts = score_lines(conv, lines(), VOCAB, chunk=3)
    first = next(parts)
    assert first.lines == [1, 2, 3] and len(read) == 3


@pytest.mark.parametrize("text,match", [("1/1/2", "K/N"), ("x", "K/N"), ("2/2", "0 <= K < N"), ("-1/3", "0 <= K < N")])
def test_bad_shards(text, match):
    with pytest.raises(ValueError, match=match):
        parse_shard(text)
    assert parse_shard("1/3") == (1, 3)
