"""Every way out of a function that takes something gives it back: a file it opened, the SIGINT
handler, torch's thread count, the model's train/eval mode, the exporter's log level. The lock of a
run folder (and a checkpoint's temporary file) have theirs in test_runfolder.py (test_checkpoint.py).

Each test ends the function the ways it can end: it returns, its body or its caller raises, a
generator is closed early or abandoned."""

import logging
import signal
import threading

import pytest
import torch

import wavenet_conv.cli.commands as commands_module
import wavenet_conv.data as data_module
import wavenet_conv.device as device_module
import wavenet_conv.inference.export as export_module
from wavenet_conv import (ConvModel, DataError, ModelConfig, TrainingDiverged, TreeModel, export_onnx, load_names,
                          sample_names, score_lines, score_names)
from wavenet_conv.cli.main import main
from wavenet_conv.device import torch_threads
from wavenet_conv.inference.folded import eval_mode
from wavenet_conv.training.progress import DeferredInterrupt

from helpers import VOCAB, ends_with, modes, run_main, threads_set_to


def record_opened(monkeypatch, module) -> list:
    """``module.open_names``, recording every stream it opens."""
    opened, real = [], module.open_names
    monkeypatch.setattr(module, "open_names", lambda path: opened.append(real(path)) or opened[-1])
    return opened


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("ending", ["done", "the run does not load", "a bad line"])
def test_score_closes_its_names_file_however_it_ends(ending, trained_run, tmp_path, monkeypatch, capsys):
    """``wavenet-conv score`` opens the names file first (a missing file is the first error), then
    loads the run: the file is closed when the run does not load, when a line is not a name, and at
    the end."""
    opened = record_opened(monkeypatch, commands_module)
    names = tmp_path / "names.txt"
    names.write_text("anna\nbo\tb\n" if ending == "a bad line" else "anna\n")
    run = tmp_path / "no-run" if ending == "the run does not load" else trained_run[0]
    code, _, err = run_main(["score", run, names], monkeypatch, capsys)
    assert code == (0 if ending == "done" else 2), err
    assert len(opened) == 1 and opened[0].closed


@pytest.mark.parametrize("text", ["anna\nbob\n", "anna\nBob.\n", "\n\n"], ids=["names", "a bad line", "no names"])
def test_load_names_closes_the_file_however_it_ends(text, tmp_path, monkeypatch):
    opened = record_opened(monkeypatch, data_module)
    (tmp_path / "names.txt").write_text(text)
    try:
        load_names(tmp_path / "names.txt")
    except DataError:
        assert text != "anna\nbob\n"
    assert len(opened) == 1 and opened[0].closed


# ----------------------------------------------------------------------------- the SIGINT handler


@pytest.mark.parametrize("error", [None, RuntimeError, KeyboardInterrupt], ids=["returns", "raises", "a second Ctrl-C"])
def test_deferred_interrupt_puts_the_callers_sigint_handler_back(error):
    """Training turns Ctrl-C into a flag for its steps; however the steps end (a bug in one, a second
    Ctrl-C), the caller's own SIGINT handler is in force again afterwards."""
    def callers_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, callers_handler)
    try:
        with ends_with(error):
            with DeferredInterrupt() as interrupt:
                assert signal.getsignal(signal.SIGINT) is not callers_handler
                if error is RuntimeError:
                    raise RuntimeError("a bug mid-step")
                if error is KeyboardInterrupt:
                    signal.raise_signal(signal.SIGINT)
                    assert interrupt.hit  # the first one is only a flag
                    signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is callers_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_deferred_interrupt_outside_the_main_thread_leaves_the_handler_alone():
    """Only the main thread may set a signal handler: elsewhere (a training in a worker thread) it
    does nothing, and raises nothing."""
    handler, errors = signal.getsignal(signal.SIGINT), []

    def work():
        try:
            with DeferredInterrupt() as interrupt:
                assert not interrupt.hit
        except Exception as e:  # noqa: BLE001 -- reported below, from the main thread
            errors.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is handler


# ----------------------------------------------------------------------------- torch's threads


@pytest.mark.parametrize("body", ["returns", "raises"])
@pytest.mark.parametrize("threads,inside", [(1, 1), (3, 3), ("auto", 5), (None, 2)], ids=["1", "3", "auto", "None"])
def test_torch_threads_puts_the_callers_count_back(threads, inside, body, monkeypatch):
    """The block runs on ``threads`` (None: the caller's); the caller's count (2 here) comes back
    whether the block returns or raises."""
    monkeypatch.setattr(device_module, "auto_threads", lambda: 5)
    with threads_set_to(2):
        with ends_with(RuntimeError if body == "raises" else None):
            with torch_threads(threads, "f"):
                assert torch.get_num_threads() == inside
                if body == "raises":
                    raise RuntimeError("a bug in the block")
        assert torch.get_num_threads() == 2


WAYS_OUT = {  # what a command raises -> main's exit status (None: a bug, it propagates)
    "done": (None, 0), "a user's mistake": (DataError("bad"), 2), "a full disk": (OSError(28, "No space left"), 2),
    "diverged": (TrainingDiverged("diverged", 3, None), 3), "Ctrl-C": (KeyboardInterrupt(), 130),
    "a bug": (RuntimeError("a bug"), None),
}


@pytest.mark.parametrize("way", WAYS_OUT)
def test_main_puts_the_callers_threads_back_on_every_way_out(way, monkeypatch, capsys):
    """``main`` may run inside a Python process: a command that ends any way leaves the process's
    thread count as it found it."""
    error, code = WAYS_OUT[way]

    def command(args):
        assert torch.get_num_threads() == 3
        if error is not None:
            raise error

    monkeypatch.setitem(commands_module.COMMANDS, "score", command)
    with threads_set_to(2):
        if code is None:
            with pytest.raises(RuntimeError, match="a bug"):
                main(["score", "RUN", "--threads", "3"])
        else:
            assert main(["score", "RUN", "--threads", "3"]) == code
        assert torch.get_num_threads() == 2


# ----------------------------------------------------------------------------- the model's mode


@pytest.mark.parametrize("body", ["returns", "raises"])
def test_eval_mode_puts_every_submodules_mode_back(body, conv):
    conv.train()
    conv.blocks[0].eval()  # a mixed mode comes back as it was
    before = modes(conv)
    with ends_with(RuntimeError if body == "raises" else None):
        with eval_mode(conv):
            assert not any(modes(conv))
            if body == "raises":
                raise RuntimeError("a bug in the block")
    assert modes(conv) == before


ENDINGS = ["read to the end", "closed early", "abandoned", "a bad line"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_score_lines_gives_back_the_mode_and_the_threads_however_the_stream_ends(ending, conv):
    """A generator: its consumer may stop early (close it, or drop it after a ``break``), or the
    stream may stop at a line that is not a name. The model's mode comes back each way; the threads
    are set only while a chunk is scored, so the consumer runs on its own count."""
    conv.train()
    conv.blocks[0].eval()
    before = modes(conv)
    lines = ["anna", "bob", "Cy", "dee"] if ending == "a bad line" else ["anna", "bob", "cy", "dee"]
    with threads_set_to(2):
        parts = score_lines(conv, lines, VOCAB, chunk=1)
        if ending == "closed early":
            next(parts)
            parts.close()
        elif ending == "abandoned":
            for _ in parts:
                break
            del parts
        elif ending == "a bad line":
            with pytest.raises(DataError, match="'C' in 'Cy'"):
                for _ in parts:
                    pass
        else:
            assert [part.lines for part in parts if torch.get_num_threads() == 2] == [[1], [2], [3], [4]]
        assert torch.get_num_threads() == 2
    assert modes(conv) == before


def failing_forward(self, *args):
    raise RuntimeError("a failure inside the model")


CALLS = {
    "score_names": lambda model: score_names(model, ["anna", "bob"], VOCAB),
    "score_lines": lambda model: list(score_lines(model, ["anna", "bob"], VOCAB)),
    "sample_names": lambda model: sample_names(model, 3, VOCAB, cached=False),
}


@pytest.mark.parametrize("call", CALLS)
def test_a_failure_inside_the_model_gives_back_its_mode_and_the_threads(call, monkeypatch):
    """Scoring and sampling switch the model to eval mode, torch to their threads (and sampling to
    inference mode): a failure inside the model's forward puts all of it back."""
    tree = TreeModel(ModelConfig(n_embd=4, n_hidden=5, n_layers=2)).train()
    tree.blocks[0].eval()
    before = modes(tree)
    monkeypatch.setattr(TreeModel, "forward", failing_forward)
    with threads_set_to(2):
        with pytest.raises(RuntimeError, match="inside the model"):
            CALLS[call](tree)
        assert torch.get_num_threads() == 2
    assert modes(tree) == before and not torch.is_inference_mode_enabled()


# ----------------------------------------------------------------------------- the exporter's log level


def test_a_failed_onnx_export_puts_the_exporters_log_level_back(monkeypatch, tmp_path):
    """The export quiets torch.onnx's logger while it runs; when the export fails, the logger's level
    is the caller's again, and no file is written."""
    def failing_export(*args, **kwargs):
        raise RuntimeError("the exporter failed")

    log = logging.getLogger("torch.onnx")
    monkeypatch.setattr(export_module, "check_onnx_installed", lambda: None)  # the extra need not be installed
    monkeypatch.setattr(torch.onnx, "export", failing_export)
    level = log.level
    log.setLevel(7)
    try:
        with pytest.raises(RuntimeError, match="the exporter failed"):
            export_onnx(ConvModel(ModelConfig(n_layers=1)), tmp_path / "m.onnx")
        assert log.level == 7
    finally:
        log.setLevel(level)
    assert not (tmp_path / "m.onnx").exists()
