"""Fine-tuning (``train(init=RUN)``, ``train --init RUN``): the run starts from RUN's model, weights,
BatchNorm statistics and text settings, over its vocabulary extended with the new file's characters."""

import math
from pathlib import Path

import pytest
import torch

from wavenet_conv import ArgumentError, ConfigError, ModelConfig, load_model, score_names, train
from wavenet_conv.data import Vocab
from wavenet_conv.models.config import recipe
from wavenet_conv.paths import bundled_model
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.training.finetune import extended_model, extended_vocab, load_init

from helpers import run_main, same_weights

NEW = ["олесь", "євген", "ірина", "оксана", "іван", "євгенія", "тарас"] * 20  # є and і: new to the bundled model


@pytest.fixture
def ukrainian(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(f"{n}{'' if i < 7 else chr(97 + i % 26)}" for i, n in enumerate(NEW)) + "\n",
                    encoding="utf-8")
    return path


def quick_tune(**kw):
    return recipe("finetune", **{"epochs": 2.0, "batch_size": 16, "checkpoint_every": 0, "eval_test": False, **kw})


def test_the_extended_model_gives_what_the_model_gave_before_its_first_step():
    """Every name the old vocabulary spells has the probability it had; a new character costs what the
    unknown token cost, less the share it now splits with the others of its rows (log 3: є, і, unknown)."""
    ckpt, _ = load_init("bundled")
    vocab = extended_vocab(ckpt.vocab, Vocab.learned(NEW, "both", True, 1))
    assert vocab.chars == "".join(sorted(ckpt.vocab.chars + "єі")) and vocab.unknown_id == len(vocab) - 1
    old, new = ckpt.model().eval().double(), extended_model(ckpt, vocab, "conv").eval().double()
    names = ["emma", "olivia", "xqzzyv", "qq"]
    # to float32's rounding of the split output biases (stored in float32)
    assert torch.allclose(score_names(new, names, vocab).nll, score_names(old, names, ckpt.vocab).nll, rtol=0, atol=1e-6)
    before = score_names(old, ["ірина", "ієа"], ckpt.vocab).nll  # є, і: the unknown token
    after = score_names(new, ["ірина", "ієа"], vocab).nll
    assert torch.allclose(after - before, torch.tensor([1, 2], dtype=torch.float64) * math.log(3), rtol=0, atol=1e-5)


def test_a_vocabulary_that_adds_nothing_keeps_the_model():
    ckpt, _ = load_init("bundled")
    assert same_weights(extended_model(ckpt, ckpt.vocab, "conv"), ckpt.model())


def test_a_fine_tuned_run_starts_from_the_bundled_model_and_scores_every_name(ukrainian, tmp_path):
    result = train(config=quick_tune(), data=ukrainian, init="bundled", out=tmp_path / "r", log=None)
    m, bundled = result.metrics, load_model()
    assert m["init"]["path"] == str(Path(bundled_model()).resolve())
    assert m["recipe"] == "finetune" and m["model_config"] == {**bundled.model.config.to_dict(), "vocab_size": len(result.vocab)}
    assert result.vocab.normalize == bundled.vocab.normalize and set(bundled.vocab.chars) < set(result.vocab.chars)
    scores = load_model(tmp_path / "r").scorer().names(["Олексій", "Євгенія", "Łukasz", "José", "Светлана"])
    assert torch.isfinite(torch.as_tensor(scores.nll)).all()


def test_a_fine_tuned_run_resumes_bit_for_bit(ukrainian, tmp_path):
    whole = train(config=quick_tune(), data=ukrainian, init="bundled", log=None)
    train(config=quick_tune(), data=ukrainian, init="bundled", out=tmp_path / "a", stop_at=5, log=None)
    resumed = train(resume=tmp_path / "a", log=None)
    assert same_weights(resumed.model, whole.model) and resumed.metrics["init"] == whole.metrics["init"]


@pytest.mark.parametrize("kw,message", [
    (dict(model_config=ModelConfig(n_hidden=64)), r"ModelConfig.n_hidden is 128 in the run this one starts from"),
    (dict(config=quick_tune(normalize="case")), r"TrainConfig.normalize is 'both' in the run this one starts from"),
])
def test_a_setting_that_contradicts_the_run_it_starts_from_is_refused(kw, message, ukrainian):
    with pytest.raises(ConfigError, match=message):
        train(**{"config": quick_tune(), **kw}, data=ukrainian, init="bundled", log=None)


def test_init_and_resume_are_not_one_run(ukrainian, tmp_path):
    train(config=quick_tune(), data=ukrainian, init="bundled", out=tmp_path / "a", stop_at=2, log=None)
    with pytest.raises(ArgumentError, match="init cannot be given with resume"):
        train(resume=tmp_path / "a", init="bundled", log=None)


@pytest.mark.parametrize("extra,message", [
    (["--n-hidden", "64"], "--n-hidden is 128 in the run this one starts from (bundled), not 64"),
    (["--normalize", "accents"], "--normalize is 'both' in the run this one starts from (bundled)"),
    (["--recipe", "small"], "--init trains one run"),
])
def test_the_command_line_names_the_option_that_contradicts_init(extra, message, ukrainian, tmp_path,
                                                                 monkeypatch, capsys):
    code, _, stderr = run_main(["train", "--init", "bundled", "--data", str(ukrainian), "--out", str(tmp_path / "r"),
                                "--quiet", *extra], monkeypatch, capsys)
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_the_command_line_fine_tunes_with_its_recipe(ukrainian, tmp_path, monkeypatch, capsys):
    code, stdout, _ = run_main(["train", "--init", "bundled", "--data", str(ukrainian), "--out", str(tmp_path / "r"),
                                "--quiet", "--epochs", "1", "--samples", "0"], monkeypatch, capsys)
    assert code == 0 and "recipe finetune" in stdout and "fine-tuning " in stdout
    assert Checkpoint.load(tmp_path / "r").init["sha256"] == load_init("bundled")[1]["sha256"]
