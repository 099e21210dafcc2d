"""The ``wavenet-conv`` command: train, score, sample, check.

    wavenet-conv train                      # the lecture's model, conv form, default recipe, bundled names
    wavenet-conv train --recipe lecture     # the lecture's recipe: tree form, SGD, 200k steps
    wavenet-conv score runs/RUN names.txt   # nats per name; '-' reads stdin
    wavenet-conv sample runs/RUN -n 20 --seed 1
    wavenet-conv check                      # the two forms' logits on the dev split, side by side
    wavenet-conv export runs/RUN model.onnx # the conv form as ONNX, for serving

The model and training options are generated from ``ModelConfig`` and ``TrainConfig`` (their fields'
names, types, choices and comments). A user's mistake -- the library's ``InputError``s (a bad names
file, checkpoint, option or run folder) and ``OSError`` -- is one line on stderr and exit status 2; a
training whose loss became non-finite (``TrainingDiverged``) is one line and exit status 3; Ctrl-C is
130; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import typing
from dataclasses import fields, replace
from pathlib import Path

import torch

from .check import compare_forms
from .checkpoint import load_model
from .config import (CHOICES, DEVICES, RECIPES, ModelConfig, TrainConfig, field_docs, recipe, recipe_model,
                     resolve_device)
from .data import Vocab, lecture_split, load_names, open_names, parse_names, read_lines, source_name
from .errors import ConfigError, DataError, InputError, TrainingDiverged
from .export import check_onnx_installed, export_onnx
from .paths import bundled_names
from .sampling import MAX_LEN, batch_size, sample_names
from .scoring import LineScores, parse_shard, score_lines
from .train import CHANGEABLE_ON_RESUME, saved_config, train
from .tree import TreeModel
from .version import __version__

PROG = "wavenet-conv"
MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")  # the data sets vocab_size
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("recipe", "device"))  # own options
ALIASES = {"n_layers": ("--depth",)}
FORMATS = ("table", "tsv", "jsonl")  # wavenet-conv score --format
DEFAULT_THREADS = 1  # chosen by measurement: benchmarks/PERFORMANCE.md, "Threads"


def flag(name: str) -> str:
    """A config field's option: ``n_embd`` -> ``--n-embd``."""
    return "--" + name.replace("_", "-")


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {s!r}") from None
    if not 0 < v < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def nonnegative_int(s: str) -> int:
    return 0 if s == "0" else positive_int(s)


def torch_seed(s: str) -> int:
    """A seed for ``torch.Generator.manual_seed``: an integer that fits in 64 bits."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {s[:40]!r}") from None
    if not -(2**63) <= v < 2**64:
        raise argparse.ArgumentTypeError(f"must be an integer in [-2**63, 2**64) (a 64-bit torch seed), got {s[:40]}"
                                         + ("..." if len(s) > 40 else ""))
    return v


# ----------------------------------------------------------------------------- parser


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block): ``prog cmd: error: message``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def add_config_options(group, cls, names, show_default: bool) -> None:
    """One option per field of ``cls`` in ``names``: its type, choices and comment (the help). Every
    default is None, so that the options a user gave are the ones that are not None."""
    docs, types = field_docs(cls), typing.get_type_hints(cls)
    for name in names:
        kind = types[name]
        kind = next(a for a in typing.get_args(kind) if a is not type(None)) if typing.get_args(kind) else kind
        default = getattr(cls(), name)
        if show_default and default is not None:
            shown = ("on" if default else "off") if kind is bool else default
            text = f"{docs.get(name, '')} (default: {shown})"
        else:
            text = docs.get(name, "")
        kwargs = dict(dest=name, default=None, help=text.replace("%", "%%"))
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if name in CHOICES:
                kwargs["choices"] = CHOICES[name]
            else:
                kwargs["metavar"] = {int: "N", float: "X"}.get(kind)
        group.add_argument(flag(name), *ALIASES.get(name, ()), **kwargs)


EXIT_STATUSES = ("exit status: 0 done; 2 a mistake in the input (a names file, option, checkpoint or run folder) or "
                 "a system error (e.g. a full disk), one line on stderr; 3 training diverged (a non-finite loss: "
                 "the last good checkpoint stays); 130 interrupted (Ctrl-C).")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train, score, sample and check the makemore WaveNet character model.",
               epilog=EXIT_STATUSES)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,score,sample,check,export}")
    device = argparse.ArgumentParser(add_help=False)  # every subcommand that computes takes them
    device.add_argument("--device", choices=DEVICES, default="auto", help="cpu, cuda, or auto: cuda when available (auto)")
    device.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS, metavar="N",
                        help=f"torch CPU threads ({DEFAULT_THREADS}: this model's GEMMs are small, and a second thread "
                             "gains little on an idle CPU but costs several times over when another job shares it)")

    t = sub.add_parser("train", parents=[device], help="train a model on a names file and write a run folder",
                       description="Train on a names file with the lecture's 80/10/10 split; writes checkpoint.pt, "
                                   "metrics.json and loss.png into the run folder. The folder must be new or empty "
                                   "(--force otherwise); a lock file, train.lock, keeps a second training out of it "
                                   "while this one runs.", epilog=EXIT_STATUSES)
    t.add_argument("--data", metavar="PATH", help="names file, one per line (default: the bundled names)")
    t.add_argument("--out", help="run folder, new or empty (default: runs/<date>-<time>-<form>)")
    t.add_argument("--force", action="store_true", help="train into an --out that holds a run or other files "
                   "(the earlier run's checkpoint.pt, metrics.json and loss.png are removed first)")
    t.add_argument("--resume", metavar="RUN", help="continue a run folder (or checkpoint) where it stopped, with its "
                   f"own settings; only {', '.join(map(flag, CHANGEABLE_ON_RESUME))} can change")
    t.add_argument("--recipe", choices=list(RECIPES), help="default: the lecture's model, conv form, 8 epochs of "
                   "whole names, AdamW (seconds); small: the best found at the lecture's 76,579 parameters (under a "
                   "minute); best: the best single model found, 621,603 parameters (minutes); gpu: the default's "
                   "model in 400 steps of 1,024 names, for a GPU (val 1.976 on the lecture's names); lecture: the "
                   "lecture's own recipe, tree form, 200k SGD steps. Options given override the recipe's")
    add_config_options(t.add_argument_group("model (default: the recipe's; the lecture's, 76,579 parameters, "
                                            "unless --recipe best)"), ModelConfig, MODEL_OPTIONS, show_default=True)
    add_config_options(t.add_argument_group("training (default: the recipe's)"), TrainConfig, TRAIN_OPTIONS,
                       show_default=False)
    t.add_argument("--samples", type=nonnegative_int, default=20, help="names to sample at the end, with the run's seed (20)")
    t.add_argument("--quiet", action="store_true", help="no progress (otherwise on stderr: one line redrawn on a "
                   "terminal, a line every few seconds in a log file)")

    s = sub.add_parser("score", parents=[device], help="nats per name (and per character) under a trained model",
                       description="Score a list of names of any length, streamed a chunk at a time: one row per "
                                   "name, in input order, with its line number, total nats, targets (characters + "
                                   "the end token) and nats per character. A name may use only the characters of "
                                   "the run's training names (a-z for the bundled names and the lecture's file); "
                                   "blank lines are skipped. A closing line on stderr counts what was scored and "
                                   "skipped.")
    s.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    s.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="names, one per line ('-' or none: stdin)")
    s.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned, for a terminal; the default), tsv (with a header row) or jsonl "
                        '({"line", "name", "nats", "targets", "nats_per_char"} per row)')
    s.add_argument("--chars", action="store_true", help="also the surprisal of every character and of the end "
                   "token: bits in a table, nats in tsv/jsonl (char_nats)")
    s.add_argument("--skip-invalid", action="store_true", help="report a line that is not a name on stderr "
                   "(FILE:LINE: reason) and go on; without it, the first such line stops the job (exit 2) after "
                   "the rows of the lines before it")
    s.add_argument("--lowercase", action="store_true", help="fold case before checking (for lists like 'Emma')")
    s.add_argument("--shard", metavar="K/N", type=shard_arg, help="score only the lines i with (i - 1) mod N == K "
                   "(line numbers kept): N jobs split one list, their rows joined by line number")
    s.add_argument("--chunk", type=positive_int, default=65536, metavar="LINES",
                   help="lines read and scored at a time (65536); memory grows with it, not with the list")

    g = sub.add_parser("sample", parents=[device], help="sample names from a trained model (cached generation)")
    g.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    g.add_argument("-n", "--num", type=positive_int, default=20, help="how many (20)")
    g.add_argument("--seed", type=torch_seed, default=None, help="random seed (default: unseeded)")
    g.add_argument("--temperature", type=positive_float, default=1.0, help="divides the logits (1.0)")
    g.add_argument("--top-k", type=positive_int, default=None, help="draw from the k most likely tokens only")
    g.add_argument("--prefix", default="", help="every sample starts with these characters")
    g.add_argument("--max-len", type=positive_int, default=MAX_LEN, help=f"longest sample, in characters ({MAX_LEN}); "
                   "a sample cut there ends with '…' and says so")

    c = sub.add_parser("check", parents=[device], help="score the dev split with the tree and the conv form of one model",
                       description="The equivalence on real data: a freshly initialized model's tree form on the "
                                   "lecture's contexts and its conv form on whole names; both losses and the largest "
                                   "logit difference.")
    c.add_argument("--data", metavar="PATH", help="names file (default: the bundled names)")
    c.add_argument("--layers", type=positive_int, default=3, help="depth (3)")
    c.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    c.add_argument("--seed", type=torch_seed, default=42, help="seed of the model's initialization (42)")

    e = sub.add_parser("export", parents=[device], help="write a trained model as ONNX, for serving",
                       description="Write the conv form of a trained model (eval mode) as an ONNX file: input "
                                   "'tokens' int64 (B, T), each row [0, c1, ..., cn] right-padded with any token; "
                                   "output 'logits' float32 (B, T, V); B and T dynamic. Needs the onnx extra: "
                                   "pip install 'wavenet_conv[onnx]'.")
    e.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    e.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    return p


# ----------------------------------------------------------------------------- commands


def given(args, names) -> dict:
    """The options among ``names`` that the user gave (every generated option defaults to None)."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def default_run_dir(form: str) -> Path:
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{form}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def print_samples(words, marks, max_len: int):
    """One sample a line, tagged new or in the training set; a sample cut at ``max_len`` (it has
    ``max_len`` characters: its end was never drawn) ends with '…' and says so."""
    for w, in_train in zip(words, marks):
        if len(w) == max_len:
            print(f"{w}…  (cut at max length {max_len})")
            continue
        tag = "" if in_train is None else ("  (in training set)" if in_train else "  (new)")
        print(f"{w}{tag}")


def load_run(args):
    """``load_model(args.run)`` on ``args.device`` for a command that uses a trained run; one note on
    stderr when the run is unfinished (its checkpoint's step is short of its steps)."""
    loaded = load_model(args.run, device=args.device)
    step, steps = loaded.meta.get("step"), (loaded.meta.get("train_config") or {}).get("steps")
    if isinstance(step, int) and isinstance(steps, int) and step < steps:
        print(f"{PROG} {args.command}: note: {args.run} is an unfinished run (step {step:,} of {steps:,}); "
              f"{PROG} train --resume {args.run} finishes it", file=sys.stderr)
    return loaded


def cmd_train(args):
    options = given(args, TRAIN_OPTIONS)
    progress = not args.quiet
    if args.resume:
        model_options = list(given(args, MODEL_OPTIONS))
        if model_options:
            raise ConfigError(f"--resume continues a run with its own model: drop {flag(model_options[0])}")
        run_config = saved_config(args.resume)
        tc = replace(run_config, device=args.device, recipe=args.recipe or run_config.recipe, **options)
        result = train(config=tc, data=args.data, out=args.out, resume=args.resume, progress=progress, force=args.force)
    else:
        tc = recipe(args.recipe or "default", device=args.device, **options)
        out = Path(args.out) if args.out else default_run_dir(tc.form)
        mc = recipe_model(args.recipe or "default", **given(args, MODEL_OPTIONS))
        result = train(mc, tc, data=args.data, out=out, progress=progress, force=args.force)
    print(f"run folder: {result.run_dir}")
    if args.samples:
        model = result.model.eval()
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(result.config.seed)
        words = sample_names(model, args.samples, result.vocab, generator=gen)
        train_set = set(result.train_words)
        print(f"{args.samples} samples:")
        print_samples(words, [w in train_set for w in words], MAX_LEN)


def shard_arg(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_rows(fmt: str, part: LineScores, chars: bool, width: int) -> str:
    """One chunk of ``score`` output: a row per scored name."""
    r = part.scores
    rows = zip(part.lines, part.names, r.nll.tolist(), r.n_targets.tolist())
    per = [r.chars(i).tolist() for i in range(len(part.names))] if chars else None
    if fmt == "tsv":
        out = [f"{line}\t{name}\t{nats:.6f}\t{n}\t{nats / n:.6f}" for line, name, nats, n in rows]
        if chars:
            out = [f"{row}\t{','.join(f'{v:.4f}' for v in c)}" for row, c in zip(out, per)]
    elif fmt == "jsonl":
        out = [f'{{"line": {line}, "name": {json.dumps(name)}, "nats": {nats:.6f}, "targets": {n}, '
               f'"nats_per_char": {nats / n:.6f}' for line, name, nats, n in rows]
        out = [f'{row}, "char_nats": [{", ".join(f"{v:.4f}" for v in c)}]}}' for row, c in zip(out, per)] if chars \
            else [row + "}" for row in out]
    else:
        out = [f"{line:>7}  {name:<{width}}  {nats:8.4f}  {nats / n:9.4f}" for line, name, nats, n in rows]
        if chars:  # bits per character, each under a label: the character, then '.' for the end token
            out = [f"{row}   " + "  ".join(f"{ch} {v / math.log(2):.2f}" for ch, v in zip(name + ".", c))
                   for row, name, c in zip(out, part.names, per)]
    return "".join(row + "\n" for row in out)


def header(fmt: str, chars: bool, width: int) -> str:
    if fmt == "tsv":
        return "line\tname\tnats\ttargets\tnats_per_char" + ("\tchar_nats" if chars else "") + "\n"
    if fmt == "table":
        return f"{'line':>7}  {'name':<{width}}  {'nats':>8}  {'nats/char':>9}" + (
            "   bits per character ('.' the end)" if chars else "") + "\n"
    return ""


def cmd_score(args):
    source = source_name(args.file)
    stream = open_names(args.file)  # before any work: a missing file is the first error
    try:
        loaded = load_run(args)
        parts = score_lines(loaded.model, read_lines(stream), loaded.vocab, chunk=args.chunk,
                            skip_invalid=args.skip_invalid, lowercase=args.lowercase, per_char=args.chars,
                            shard=args.shard, source=source)
        names = targets = empty = invalid = 0
        nats, width = 0.0, None
        for part in parts:
            for line, problem in part.invalid:
                print(f"{source}:{line}: {problem}", file=sys.stderr)
            if width is None:
                width = max([12, *map(len, part.names)])
                sys.stdout.write(header(args.format, args.chars, width))
            sys.stdout.write(format_rows(args.format, part, args.chars, width))
            sys.stdout.flush()
            names, empty, invalid = names + len(part.names), empty + part.empty, invalid + len(part.invalid)
            targets, nats = targets + int(part.scores.n_targets.sum()), nats + float(part.scores.nll.sum())
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if names + invalid == 0 and args.shard is None:
        raise DataError(f"{source}: no names in it")
    mean = f": {nats / targets:.4f} nats, {nats / targets / math.log(2):.4f} bits per target" if targets else ""
    print(f"{source}: {names:,} names scored ({targets:,} targets, end tokens included{mean}); "
          f"{empty + invalid:,} lines skipped ({empty:,} empty, {invalid:,} not names)", file=sys.stderr)


def cmd_sample(args):
    loaded = load_run(args)
    device = next(loaded.model.parameters()).device
    if args.prefix:
        parse_names(args.prefix, "--prefix", loaded.vocab)
    if args.max_len < len(args.prefix):
        raise ConfigError(f"--max-len {args.max_len} is shorter than --prefix {args.prefix!r}")
    gen = None if args.seed is None else torch.Generator(device=device).manual_seed(args.seed)
    per_batch = batch_size(loaded.model)  # memory stays flat however many names
    for start in range(0, args.num, per_batch):
        words = sample_names(loaded.model, min(per_batch, args.num - start), loaded.vocab, generator=gen,
                             temperature=args.temperature, top_k=args.top_k, prefix=args.prefix, max_len=args.max_len)
        print_samples(words, [loaded.in_training_set(w) for w in words], args.max_len)
        sys.stdout.flush()


def cmd_check(args):
    device = resolve_device(args.device)
    path = args.data or bundled_names()
    words = load_names(path)
    vocab = Vocab.from_words(words)
    _, dev, _ = lecture_split(words)
    torch.manual_seed(args.seed)
    cfg = ModelConfig(vocab_size=len(vocab), n_layers=args.layers)
    tree = TreeModel(cfg).to(device=device, dtype=getattr(torch, args.dtype)).eval()
    r = compare_forms(tree, dev, vocab)
    print(f"{path}: dev split, {len(dev)} names, {r['targets']} targets; model {tree.num_params():,} parameters "
          f"(freshly initialized), {args.dtype}, {device}")
    print(f"tree form (contexts):    loss {r['tree_loss']:.6f}  {r['tree_seconds'] * 1e3:.1f} ms")
    print(f"conv form (whole names): loss {r['conv_loss']:.6f}  {r['conv_seconds'] * 1e3:.1f} ms")
    print(f"largest |logit difference| over all {r['targets']} positions: {r['max_abs_diff']:.3g}")


def cmd_export(args):
    check_onnx_installed()  # before any work
    loaded = load_run(args)
    path = export_onnx(loaded.model, args.out)
    print(f"wrote {path}: input 'tokens' int64 (B, T), output 'logits' float32 (B, T, {loaded.model.config.vocab_size}); "
          f"vocabulary {''.join(loaded.vocab.itos)!r} (token i is character i)")


COMMANDS = {"train": cmd_train, "score": cmd_score, "sample": cmd_sample, "check": cmd_check, "export": cmd_export}


def as_options(message: str) -> str:
    """A config error in the command line's words: ``TrainConfig.steps`` -> ``--steps``."""
    return re.sub(r"\b(?:Model|Train)Config\.(\w+)", lambda m: flag(m[1]), message)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except TrainingDiverged as e:  # not the input's fault as such, nor a bug: its own status
        print(f"{PROG} {args.command}: error: {as_options(str(e))}", file=sys.stderr)
        return 3
    except (InputError, OSError) as e:  # the user's input; anything else is a bug: its traceback shows
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG} {args.command}: error: {as_options(msg)}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # as it was (main may run inside a Python process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
