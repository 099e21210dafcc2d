"""Every string gets a score: the start/end token is a reserved id (any character trains, '.' too), a
run trained now has an unknown-character token that a character it never saw scores as, and a run
saved without one (before 1.1) refuses such a name as it always did, saying so once."""

import math
import string

import pytest
import torch

from helpers import SMALL, run_main
from wavenet_conv import Vocab, load_model, score_names, train
from wavenet_conv.data import UNKNOWN
from wavenet_conv.training.source import read_data
from wavenet_conv.errors import DataError
from wavenet_conv.inference.sampling import sample_names
from wavenet_conv.inference.scoring import encode_names
from wavenet_conv.models.config import recipe
from wavenet_conv.training.minibatches import NameBatches, add_unknown

LETTERS = string.ascii_lowercase


def test_the_lectures_vocabulary_keeps_its_ids_and_the_boundary_is_no_character():
    v = Vocab(LETTERS)
    assert v.itos[0] == "." and [v.stoi[c] for c in LETTERS] == list(range(1, 27)) and len(v) == 27
    assert v.unknown_id is None and "." not in v.stoi
    dotted = Vocab("ab.")
    assert dotted.stoi == {".": 1, "a": 2, "b": 3} and dotted.encode("a.b") == [2, 1, 3]  # '.' is a character


def test_the_unknown_token_is_the_last_id_and_round_trips_through_a_checkpoints_dict():
    v = Vocab("abc", unknown=True)
    assert len(v) == 5 and v.unknown_id == 4 and v.itos[4] == UNKNOWN and v.chars == "abc"
    assert v.encode("aXc") == [1, 4, 3] and v.decode([1, 4]) == "a" + UNKNOWN and v.unknown_at("aXcY") == [1, 3]
    assert Vocab.from_dict(v.to_dict()) == v and Vocab.from_dict(v.to_dict()).unknown_id == 4
    old = Vocab.from_dict({"chars": "abc"})  # a 1.0 checkpoint's
    assert old.unknown_id is None and len(old) == 4 and "unknown" not in old.to_dict()
    with pytest.raises(DataError, match="character 'X' at position 1"):
        old.encode("aXc")
    refusing = v.refusing_unknown()
    assert len(refusing) == 5 and refusing.unknown_id is None and refusing == v
    with pytest.raises(DataError):
        refusing.encode("aXc")


def test_characters_rarer_than_the_threshold_train_as_the_unknown_token():
    words = ["anna", "bob", "zoe", "bella"]  # z: once, o: twice
    assert Vocab.learned(words, unknown=True, rare=2).chars == "abelno"
    assert Vocab.learned(words, unknown=True, rare=0).chars == "abelnoz"
    assert Vocab.learned(words, unknown=False, rare=9).chars == "abelnoz"  # without the token nothing is dropped


@pytest.mark.parametrize("unknown", [True, False])
def test_a_character_outside_the_vocabulary_encodes_as_the_token_and_a_control_character_never(unknown):
    v = Vocab(LETTERS, unknown=unknown)
    names = ["emma", "Zoë", "a\x07b", "jo ann", "jo  ann", "Светлана"]
    tokens, lengths, ok = encode_names(names, v)
    assert ok.tolist() == ([True, True, False, True, False, True] if unknown else [True, False, False, False, False, False])
    if unknown:
        flat = tokens.tolist()
        zoe = flat[4:7]
        assert zoe == [27, v.stoi["o"], 27]
        assert flat[-8:] == [27] * 8


def test_a_replaced_character_is_the_target_and_the_next_input_alike():
    words = ["emma", "olivia", "ava", "isabella", "sophia"] * 40
    v = Vocab(LETTERS, unknown=True)
    batches = NameBatches(words, v, 64, seed=3, device="cpu")
    x, y, pos = add_unknown(batches(0), 0.3, v.unknown_id, seed=3, step=0)
    again = add_unknown(batches(0), 0.3, v.unknown_id, seed=3, step=0)
    assert all(torch.equal(a, b) for a, b in zip((x, y, pos), again))  # a function of (seed, step)
    assert torch.equal(x, torch.where(pos == 0, 0, y.roll(1)))  # x is y shifted within each name
    hit = y == v.unknown_id
    assert not (hit & (batches(0)[1] == 0)).any()  # the end token is never replaced
    share = hit.sum().item() / (batches(0)[1] != 0).sum().item()
    assert 0.25 < share < 0.35


@pytest.fixture(scope="module")
def handles(tmp_path_factory):
    """A small run trained on e-mail local parts: '.', '_' and digits among the characters."""
    g = torch.Generator().manual_seed(0)
    pick = lambda chars, n: "".join(chars[i] for i in torch.randint(len(chars), (n,), generator=g).tolist())  # noqa: E731
    words = [f"{pick(LETTERS, 4)}.{pick(LETTERS, 5)}" if i % 2 else f"{pick(LETTERS, 5)}_{pick('0123456789', 2)}"
             for i in range(400)]
    d = tmp_path_factory.mktemp("handles")
    (d / "handles.txt").write_text("\n".join(words) + "\n")
    train(SMALL, recipe("default", steps=60, batch_size=32, checkpoint_every=0, unknown_rate=0.05), data=d / "handles.txt",
          out=d / "run", log=None, progress=False)
    return d / "run"


def test_a_run_trained_on_handles_scores_strings_with_characters_it_never_saw(handles):
    model, vocab, _ = load_model(handles)
    assert vocab.chars == "." + "0123456789" + "_" + LETTERS and vocab.unknown and len(vocab) == 40
    strings = ["anna.smith", "bob_12", "josé@mail", "Łukasz", "日本"]
    r = score_names(model, strings, vocab, per_char=True)
    assert torch.isfinite(r.nll).all() and r.n_targets.tolist() == [11, 7, 10, 7, 3]
    tree = load_model(handles, form="tree").model.double()  # the unknown token in both forms, exactly
    exact = score_names(tree, strings, vocab, method="contexts")
    assert (score_names(model.double(), strings, vocab).nll - exact.nll).abs().max() <= 1e-10


def test_sampling_never_draws_the_unknown_token(handles):
    model, vocab, _ = load_model(handles)
    with torch.no_grad():
        model.lm_head.bias[vocab.unknown_id] += 50.0  # the token would be drawn almost every time
    names = sample_names(model, 50, vocab, generator=torch.Generator().manual_seed(1), max_len=12)
    assert names and not any(UNKNOWN in n for n in names)


def test_training_reads_its_text_normalized_as_the_run_records(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("José\nZOË\nAnna\nemma\n")
    words, vocab, _ = read_data(path, text=("both", True, 0))
    assert words == ["jose", "zoe", "anna", "emma"] and vocab.normalize == "both" and vocab.chars == "aejmnosz"
    words, vocab, _ = read_data(path, vocab=vocab)  # a resumed run reads as its vocabulary says
    assert words == ["jose", "zoe", "anna", "emma"]


def strip_to_1_0(path):
    """A checkpoint as wavenet_conv 1.0 wrote it: no unknown token, no normalize or unknown fields."""
    d = torch.load(path, weights_only=True)
    for key in ("normalize", "unknown", "unknown_rate", "rare_chars"):
        d["train_config"].pop(key, None)
    d["vocab"].pop("unknown", None)
    torch.save(d, path)


def test_a_run_without_the_token_refuses_as_before_and_says_so_once(tmp_path, small_names, monkeypatch, capsys):
    out = tmp_path / "old"
    train(SMALL, recipe("default", steps=30, batch_size=32, checkpoint_every=0, unknown=False), data=small_names,
          out=out, log=None, progress=False)
    strip_to_1_0(out / "checkpoint.pt")
    loaded = load_model(out)
    assert not loaded.vocab.unknown and len(loaded.vocab) == 27 and loaded.checkpoint.train_config.unknown is False
    path = tmp_path / "list.txt"
    path.write_text("emma\nZoë\nava\n")
    code, stdout, err = run_main(["score", out, path, "--format", "tsv", "--skip-invalid"], monkeypatch, capsys)
    assert code == 0 and [r.split("\t")[1] for r in stdout.splitlines()[1:]] == ["emma", "ava"]
    assert err.count("has no unknown-character token") == 1 and f"{path}:2: character 1 'Z'" in err
    nats = [float(r.split("\t")[2]) for r in stdout.splitlines()[1:]]
    assert nats == score_names(loaded.model, ["emma", "ava"], loaded.vocab).nll.tolist()
    assert all(math.isfinite(v) for v in nats)
