"""Training: the recipes lower the loss, write a run folder, and resume exactly."""

import json
import math

import pytest
import torch

from wavenet_conv import FlatConfig, FlatModel, ModelConfig, lecture_split, load_names
from wavenet_conv.checkpoint import load_model
from wavenet_conv.train import NameBatches, add_input_noise, recalibrate_batchnorm, TrainConfig, lr_at, recipe, train

from conftest import BUNDLED_NAMES, VOCAB

SMALL = ModelConfig(n_embd=8, n_hidden=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a small shared CPU, more threads than free cores slow these tiny models
    down by an order of magnitude (the results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_names(tmp_path_factory):
    """1,000 names of the bundled file: a few hundred steps train in a second or two."""
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n".join(load_names(BUNDLED_NAMES)[::32][:1000]) + "\n")
    return path


def quick(name="default", **kw):
    return recipe(name, **{"steps": 300, "batch_size": 32, "checkpoint_every": 100, **kw})


def test_default_recipe_lowers_loss_and_writes_a_run_folder(small_names, tmp_path):
    r = train(SMALL, quick(), data=small_names, out=tmp_path / "run", log=None)
    m = r.metrics
    assert m["val_loss"] < math.log(27) - 0.6 and m["train_loss"] < math.log(27) - 0.6
    assert m["steps"] == 300 and m["params"] == r.model.num_params()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "params", "steps", "train_seconds"):
        assert saved[key] == m[key]
    assert saved["data"]["sha256"] and saved["data"]["path"].endswith("small.txt")
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    model, vocab, meta = load_model(tmp_path / "run")
    assert not model.training and meta["step"] == 300 and meta["metrics"]["val_loss"] == m["val_loss"]
    x = torch.tensor([[0, 5, 13, 13, 1]])
    assert torch.equal(model(x), r.model.eval()(x))


def test_split_losses_are_score_names(small_names):
    from wavenet_conv.scoring import score_names

    r = train(SMALL, quick(steps=50), data=small_names, log=None)
    _, val, test = lecture_split(load_names(small_names))
    assert r.metrics["val_loss"] == pytest.approx(score_names(r.model, val, r.vocab).mean_loss, abs=1e-6)
    assert r.metrics["test_loss"] == pytest.approx(score_names(r.model, test, r.vocab).mean_loss, abs=1e-6)


def test_lecture_recipe_is_sgd_on_contexts_with_the_step_decay():
    tc = recipe("lecture")
    assert (tc.form, tc.optimizer, tc.steps, tc.batch_size, tc.lr) == ("tree", "sgd", 200_000, 32, 0.1)
    assert lr_at(tc, 149_999) == 0.1 and lr_at(tc, 150_000) == pytest.approx(0.01)


def test_lecture_recipe_lowers_loss(small_names):
    r = train(SMALL, quick("lecture", steps=400), data=small_names, log=None)
    assert type(r.model).__name__ == "TreeModel"
    assert r.metrics["val_loss"] < math.log(27) - 0.5


def test_cosine_schedule_warms_up_and_decays():
    tc = TrainConfig(steps=1000, warmup=100, lr=1e-2, lr_decay=0.1)
    lrs = [lr_at(tc, s) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[99] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[99:], lrs[100:])) and lrs[-1] == pytest.approx(1e-3, rel=1e-3)


def test_name_batches_are_an_epoch_shuffle():
    words = [w * (1 + i % 5) for i, w in enumerate("abcdefghij" * 3)]
    batches = NameBatches(words, VOCAB, batch_size=10, seed=0, device="cpu")
    seen = torch.cat([batches(s)[0][:, 1] for s in range(3)])  # first characters, one epoch
    assert sorted(seen.tolist()) == sorted(VOCAB.encode("abcdefghij") * 3)
    x, y, mask = batches(4)
    assert x.shape == y.shape == mask.shape and bool(mask[:, 0].all()) and (y[~mask] == -100).all()
    assert torch.equal(NameBatches(words, VOCAB, 10, 0, "cpu")(4)[0], x)  # a function of (seed, step)


def test_input_noise_replaces_characters_only_and_is_a_function_of_seed_and_step():
    x = torch.tensor([[0, 5, 6, 7, 0, 0]] * 400)
    a = add_input_noise(x, 0.3, 27, seed=1, step=5)
    assert torch.equal(a, add_input_noise(x, 0.3, 27, seed=1, step=5))
    assert not torch.equal(a, add_input_noise(x, 0.3, 27, seed=1, step=6))
    assert (a[x == 0] == 0).all() and (a[x != 0] > 0).all()
    assert 0.24 < (a != x).float().sum() / (x != 0).sum() < 0.34  # 0.3 * 25/26 land on another character


def test_batchnorm_recalibration_uses_clean_training_batches():
    import copy

    from wavenet_conv import ConvModel

    words = load_names(BUNDLED_NAMES)[:300]
    model = ConvModel(SMALL)
    batches = NameBatches(words, VOCAB, batch_size=16, seed=0, device="cpu")
    ref = copy.deepcopy(model)
    recalibrate_batchnorm(model, batches)  # 300 names: one chunk, so the batch statistics themselves
    for m in ref.modules():
        if hasattr(m, "running_mean"):
            m.momentum = 1.0
    x, _, mask = batches.take(torch.arange(300))
    ref.train()(x, mask)
    for (name, a), b in zip(model.named_buffers(), ref.buffers()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert all(m.momentum == 0.1 for m in model.modules() if hasattr(m, "momentum"))


def test_flat_model_trains_on_contexts(small_names):
    make = lambda V: FlatModel(FlatConfig(vocab_size=V, n_embd=4, n_hidden=32, block_size=3))  # noqa: E731
    r = train(config=quick("lecture", steps=300), data=small_names, make_model=make, log=None)
    assert type(r.model) is FlatModel
    assert r.metrics["val_loss"] < math.log(27) - 0.5


@pytest.mark.parametrize("name", ["default", "lecture"])
def test_resume_ends_where_an_uninterrupted_run_ends(small_names, tmp_path, name):
    tc = quick(name, steps=250, input_noise=0.1)
    full = train(SMALL, tc, data=small_names, out=tmp_path / "full", log=None)
    stopped = train(SMALL, tc, data=small_names, out=tmp_path / "cut", stop_at=120, log=None)
    assert stopped.metrics["stopped_at"] == 120 and load_model(tmp_path / "cut").meta["step"] == 120
    torch.manual_seed(12345)  # whatever happened to the global RNG in between
    resumed = train(resume=tmp_path / "cut", log=None)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert resumed.metrics["val_loss"] == full.metrics["val_loss"]
    losses_full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["losses"]
    losses_res = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["losses"]
    assert torch.equal(losses_full, losses_res)


def test_resume_refuses_a_changed_data_file(small_names, tmp_path):
    data = tmp_path / "names.txt"
    data.write_text(small_names.read_text())
    train(SMALL, quick(steps=20), data=data, out=tmp_path / "run", stop_at=10, log=None)
    data.write_text(small_names.read_text() + "zzz\n")
    with pytest.raises(ValueError, match="differs"):
        train(resume=tmp_path / "run", log=None)


def test_train_config_validates():
    with pytest.raises(ValueError, match="form"):
        TrainConfig(form="lstm")
    with pytest.raises(ValueError, match="recipe"):
        recipe("fast")
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
