"""Names with spaces ("mary ann", "de la cruz"): a single space between two other characters is a
character of a name, in training data, the vocabulary and scoring; a line of a list or a names file
loses the whitespace at either end; a name with a space at either end (from Python) or after another
space, or with any other whitespace or control character, is refused naming line and character; files
without spaces (the lecture's) read and encode exactly as before."""

import random
import string

import pytest

from helpers import BUNDLED_NAMES, LECTURE_NAMES, run_main
from wavenet_conv import DataError, ModelConfig, Vocab, load_model, load_names, score_names
from wavenet_conv.data import name_problem
from wavenet_conv.inference.scoring import encode_names
from wavenet_conv import recipe, train

SPACED = Vocab(string.ascii_lowercase + " ")
LETTERS = Vocab(string.ascii_lowercase)


@pytest.mark.parametrize("word,vocab,problem", [
    ("mary ann", SPACED, None),
    ("de la cruz", SPACED, None),
    ("a b", SPACED, None),
    ("mary ann", LETTERS, "character 5 ' ' in 'mary ann' is not in the vocabulary 'abcdefghijklmnopqrstuvwxyz'"),
    ("mary ann", None, None),
    (" ann", SPACED, "character 1 ' ' in ' ann' is whitespace at the start"),
    ("ann ", SPACED, "character 4 ' ' in 'ann ' is whitespace at the end"),
    (" ", SPACED, "character 1 ' ' in ' ' is whitespace at the start"),
    ("mary  ann", SPACED, "character 6 ' ' in 'mary  ann' is whitespace after another space"),
    ("mary\tann", SPACED, "character 5 '\\t' in 'mary\\tann' is whitespace"),
    ("mary\u00a0ann", SPACED, "character 5 '\\xa0' in 'mary\\xa0ann' is whitespace"),
    ("mary\u3000ann", None, "character 5 '\\u3000' in 'mary\\u3000ann' is whitespace"),
    ("mary\x0bann", SPACED, "character 5 '\\x0b' in 'mary\\x0bann' is whitespace"),
    ("mary\x07ann", SPACED, "character 5 '\\x07' in 'mary\\x07ann' is a control character"),
    ("mary.ann", SPACED, "character 5 '.' in 'mary.ann' is not in the vocabulary ' abcdefghijklmnopqrstuvwxyz'"),
    ("mary.ann", None, None),  # '.' is a character like any other: the start/end token is no character
], ids=lambda v: v if isinstance(v, str) else None)
def test_name_problem_takes_single_interior_spaces_only(word, vocab, problem):
    assert name_problem(word, vocab) == problem


@pytest.mark.parametrize("vocab", [SPACED, LETTERS], ids=["spaced", "letters"])
@pytest.mark.parametrize("seed", range(3))
def test_the_scorer_and_the_reader_agree_on_every_name(vocab, seed):
    """``encode_names`` (the scorer's vectorized check) takes exactly the names ``name_problem`` takes."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("ab  \t.") for _ in range(rng.randint(0, 6))) for _ in range(2000)]
    _, _, ok = encode_names(words, vocab)
    assert ok.tolist() == [name_problem(w, vocab) is None for w in words]
    assert 100 < ok.sum() < 1900


@pytest.mark.parametrize("chars,good", [(" ", True), ("ab ", True), ("\t", False), ("\u00a0", False), ("\n", False)])
def test_a_vocabulary_takes_the_space_and_no_other_whitespace(chars, good):
    if good:
        assert Vocab(chars).itos[1] == " "  # the space sorts first, before every letter
    else:
        with pytest.raises(ValueError, match="a space is the only whitespace"):
            Vocab(chars)


@pytest.mark.parametrize("line,reason", [
    ("de  la", "character 4 ' ' in 'de  la' is whitespace after another space"),
    ("de\tla", "character 3 '\\t' in 'de\\tla' is whitespace"),
    (" de \u00a0la ", "character 4 '\\xa0' in 'de \\xa0la' is whitespace"),
])
def test_names_files_refuse_other_whitespace_naming_line_and_character(tmp_path, line, reason):
    path = tmp_path / "names.txt"
    path.write_text(f"mary ann\nemma\n{line}\n")
    with pytest.raises(DataError, match=f"^{str(path)}:3: {reason}$".replace("\\", "\\\\").replace("(", r"\(")):
        load_names(path)


def test_names_files_strip_whitespace_at_either_end_of_a_line(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes(b" mary ann \r\n\temma\n   \n\t\nde la cruz\xe3\x80\x80\n")
    assert load_names(path) == ["mary ann", "emma", "de la cruz"]


@pytest.fixture(scope="module")
def spaced_run(tmp_path_factory):
    """A small run trained on the bundled names, every fifth one joined to the next by a space."""
    words = load_names(BUNDLED_NAMES)[::16][:1200]
    words = [f"{a} {b}" if i % 5 == 0 else a for i, (a, b) in enumerate(zip(words, words[1:]))]
    d = tmp_path_factory.mktemp("spaced")
    (d / "names.txt").write_text("\n".join(words) + "\n")
    config = recipe("default", steps=40, batch_size=32, checkpoint_every=40, rare_chars=0)  # 'q' is rare here
    train(ModelConfig(n_embd=8, n_hidden=32), config, data=d / "names.txt", out=d / "run", log=None, progress=False)
    return d / "run"


def test_a_run_trains_on_names_with_spaces_and_scores_them_exactly(spaced_run):
    model, vocab, _ = load_model(spaced_run)
    assert vocab.chars == SPACED.chars and vocab.unknown and model.config.vocab_size == 29
    names = ["mary ann", "de la cruz", "emma", "a b", "Zoë a"]  # the last with characters it never saw
    tree = load_model(spaced_run, form="tree").model.double()
    fast = score_names(model.double(), names, vocab)
    reference = score_names(tree, names, vocab, method="contexts")  # the lecture's way: the tree on contexts
    assert (fast.nll - reference.nll).abs().max() <= 1e-10
    assert fast.n_targets.tolist() == [9, 11, 5, 4, 6]


def test_the_command_scores_names_with_spaces_and_reports_the_rest(spaced_run, tmp_path, monkeypatch, capsys):
    path = tmp_path / "list.txt"
    path.write_text("mary ann\nann \n\nde la cruz\nde\tla\nmary  ann\n")
    code, out, err = run_main(["score", spaced_run, path, "--skip-invalid", "--format", "tsv"], monkeypatch, capsys)
    assert code == 0
    assert [row.split("\t")[:2] for row in out.splitlines()[1:]] == [["1", "mary ann"], ["2", "ann"], ["4", "de la cruz"]]
    assert err.splitlines()[:2] == [f"{path}:5: character 3 '\\t' in 'de\\tla' is whitespace",
                                    f"{path}:6: character 6 ' ' in 'mary  ann' is whitespace after another space"]


@pytest.mark.parametrize("path", [BUNDLED_NAMES, LECTURE_NAMES], ids=["bundled", "lecture"])
def test_files_without_spaces_read_and_encode_as_before(path):
    """The lecture's files have no spaces: every name is read, the vocabulary is a-z, token ids as
    before (the space, when a file has one, would be token 1)."""
    try:
        words = load_names(path)
    except DataError:
        pytest.skip(f"{path} is absent")
    assert not any(" " in w for w in words) and len(words) > 10_000
    assert Vocab.from_words(words) == LETTERS and LETTERS.stoi["a"] == 1
    assert encode_names(words, LETTERS)[2].all()
