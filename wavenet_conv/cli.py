"""The ``wavenet-conv`` command: train, score, sample, check, export.

    wavenet-conv train                      # the lecture's model, conv form, default recipe, bundled names
    wavenet-conv train --recipe lecture     # the lecture's recipe: tree form, SGD, 200k steps
    wavenet-conv score runs/RUN names.txt   # nats per name; '-' reads stdin
    wavenet-conv sample runs/RUN -n 20 --seed 1
    wavenet-conv check                      # the two forms' logits on the dev split, and their speed
    wavenet-conv export runs/RUN model.onnx # the conv form as ONNX, for serving

The model and training options are generated from ``ModelConfig`` and ``TrainConfig`` (their fields'
names, types, choices and help). The command line parses its options and checks nothing that the
library checks: a user's mistake is one of the library's ``InputError``s (a bad names file,
checkpoint, option, argument or run folder) or an ``OSError``, reported as one line on stderr with
exit status 2, in the command line's words (``--max-len`` for ``max_len``); a training whose loss
became non-finite (``TrainingDiverged``) is one line and exit status 3; Ctrl-C is 130; anything else
is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import typing
from dataclasses import fields, replace
from pathlib import Path

import torch

from .checkpoint import load_model
from .compare import compare_forms, race_forms
from .config import CHOICES, RECIPES, ModelConfig, TrainConfig, field_help, recipe, recipe_model, recipe_teachers
from .data import Vocab, lecture_split, load_names, open_names, read_lines, source_name
from .device import DEVICES, resolve_device, torch_threads
from .errors import ArgumentError, DataError, InputError, TrainingDiverged
from .export import check_onnx_installed, export_onnx
from .output import FORMATS, closing_count, format_rows, header, sample_lines
from .paths import bundled_names
from .run import CHANGEABLE_ON_RESUME, saved_config
from .sampling import MAX_LEN, sample_batches, sample_names
from .streaming import parse_shard, score_lines
from .teachers import is_recipe_folder, read_plan, resume_recipe, train_recipe
from .train import train
from .tree import TreeModel
from .validate import integer
from .version import __version__

PROG = "wavenet-conv"
MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")  # the data sets vocab_size
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("recipe", "device"))  # own options
ALIASES = {"n_layers": ("--depth",)}
FLAGS = {"n": "-n", "threads": "--threads", "teachers": "--teacher"}  # a library argument's option, where it is not flag(argument)
EXIT_STATUSES = ("exit status: 0 done; 2 a mistake in the input (a names file, option, checkpoint or run folder) or "
                 "a system error (e.g. a full disk), one line on stderr; 3 training diverged (a non-finite loss: "
                 "the last good checkpoint stays); 130 interrupted (Ctrl-C).")
RECIPE_HELP = ("default: the lecture's model, conv form, 8 epochs of whole names, AdamW; small: the best found at the "
               "lecture's 76,579 parameters; best: the best single model found, 621,603 parameters; small and best "
               "first train two wide teachers (OUT/teacher-0, OUT/teacher-1) and distill from them; wide: the best "
               "trained on the names alone, 621,603 parameters; lecture: the lecture's own recipe, tree form, 200k SGD "
               "steps. Options given override the recipe's: the student's (--device and --precision also the teachers')")


def flag(name: str) -> str:
    """A config field's or argument's option: ``n_embd`` -> ``--n-embd``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def threads_arg(s: str):
    """--threads: "auto" or a whole number (the library checks its range)."""
    return s if s == "auto" else int(s)


def torch_seed(s: str) -> int:
    """A seed for ``torch.Generator.manual_seed``: an integer that fits in 64 bits."""
    v = int(s)
    if not -(2**63) <= v < 2**64:
        raise argparse.ArgumentTypeError(f"must be an integer in [-2**63, 2**64) (a 64-bit torch seed), got {s[:40]}"
                                         + ("..." if len(s) > 40 else ""))
    return v


def shard_arg(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ----------------------------------------------------------------------------- parser


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block): ``prog cmd: error: message``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def add_config_options(group, cls, names, show_default: bool) -> None:
    """One option per field of ``cls`` in ``names``: its type, choices and help. Every default is None,
    so that the options a user gave are the ones that are not None."""
    helps, types = field_help(cls), typing.get_type_hints(cls)
    for name in names:
        kind = types[name]
        kind = next(a for a in typing.get_args(kind) if a is not type(None)) if typing.get_args(kind) else kind
        default = getattr(cls(), name)
        text = helps[name]
        if show_default and default is not None:
            text += f" (default: {('on' if default else 'off') if kind is bool else default})"
        kwargs = dict(dest=name, default=None, help=text.replace("%", "%%"))
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=kind, choices=CHOICES.get(name), metavar=None if name in CHOICES else
                          {int: "N", float: "X"}.get(kind))
        group.add_argument(flag(name), *ALIASES.get(name, ()), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train, score, sample and check the makemore WaveNet character model.",
               epilog=EXIT_STATUSES)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,score,sample,check,export}")
    common = argparse.ArgumentParser(add_help=False)  # every subcommand computes
    common.add_argument("--device", choices=DEVICES, default="auto", help="cpu, cuda, or auto: cuda when available (auto)")
    common.add_argument("--threads", type=threads_arg, default=None, metavar="N|auto",
                        help="torch CPU threads; auto: the CPUs no other process is running on now, at least 1 "
                             "(default: 1 for train and check, auto for score, sample and export)")
    for add in (add_train, add_score, add_sample, add_check, add_export):
        add(sub, common)
    return p


def add_train(sub, common) -> None:
    t = sub.add_parser("train", parents=[common], help="train a model on a names file and write a run folder",
                       description="Train on a names file with the lecture's 80/10/10 split; writes checkpoint.pt, "
                                   "metrics.json and loss.png into the run folder. The folder must be new or empty "
                                   "(--force otherwise); a lock file, train.lock, keeps a second training out of it "
                                   "while this one runs.", epilog=EXIT_STATUSES)
    t.add_argument("--data", metavar="PATH", help="names file, one per line (default: the bundled names)")
    t.add_argument("--out", help="run folder, new or empty (default: runs/<date>-<time>-<form>)")
    t.add_argument("--force", action="store_true", help="train into an --out that holds a run or other files "
                   "(the earlier run's checkpoint.pt, metrics.json and loss.png are removed first)")
    t.add_argument("--resume", metavar="RUN", help="continue a run folder (or checkpoint) where it stopped, with its "
                   f"own settings (a recipe's folder: its teachers, then its student); only "
                   f"{', '.join(map(flag, CHANGEABLE_ON_RESUME))} can change")
    t.add_argument("--recipe", choices=list(RECIPES), help=RECIPE_HELP)
    t.add_argument("--teacher", dest="teachers", action="append", metavar="RUN",
                   help="a finished run on the same names file to distill from (repeatable), instead of the teachers "
                        "the recipe trains; the loss mixes in their averaged distributions (--distill)")
    add_config_options(t.add_argument_group("model (default: the recipe's; the lecture's, 76,579 parameters, "
                                            "unless --recipe best or wide)"), ModelConfig, MODEL_OPTIONS, show_default=True)
    add_config_options(t.add_argument_group("training (default: the recipe's)"), TrainConfig, TRAIN_OPTIONS,
                       show_default=False)
    t.add_argument("--samples", type=int, default=20, help="names to sample at the end, with the run's seed (20)")
    t.add_argument("--quiet", action="store_true", help="no progress (otherwise on stderr: one line redrawn on a "
                   "terminal, a line every few seconds in a log file)")


def add_score(sub, common) -> None:
    s = sub.add_parser("score", parents=[common], help="nats per name (and per character) under a trained model",
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
    s.add_argument("--chunk", type=int, default=65536, metavar="LINES",
                   help="lines read and scored at a time (65536); memory grows with it, not with the list")


def add_sample(sub, common) -> None:
    g = sub.add_parser("sample", parents=[common], help="sample names from a trained model (cached generation)")
    g.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    g.add_argument("-n", "--num", dest="num", type=int, default=20, help="how many (20)")
    g.add_argument("--seed", type=torch_seed, default=None, help="random seed (default: unseeded)")
    g.add_argument("--temperature", type=float, default=1.0, help="divides the logits (1.0)")
    g.add_argument("--top-k", type=int, default=None, help="draw from the k most likely tokens only")
    g.add_argument("--prefix", default="", help="every sample starts with these characters")
    g.add_argument("--max-len", type=int, default=MAX_LEN, help=f"longest sample, in characters ({MAX_LEN}); "
                   "a sample cut there ends with '…' and says so")


def add_check(sub, common) -> None:
    c = sub.add_parser("check", parents=[common], help="the tree and the conv form of one model on the dev split",
                       description="The equivalence on real data: a freshly initialized model's tree form on the "
                                   "lecture's contexts and its conv form on whole names, in float64: both losses and "
                                   "the largest logit difference. Then the time each takes in float32, beside the "
                                   "fast path (score_names).")
    c.add_argument("--data", metavar="PATH", help="names file (default: the bundled names)")
    c.add_argument("--n-layers", "--depth", dest="n_layers", type=int, default=3, help="depth (3)")
    c.add_argument("--seed", type=torch_seed, default=42, help="seed of the model's initialization (42)")


def add_export(sub, common) -> None:
    e = sub.add_parser("export", parents=[common], help="write a trained model as ONNX, for serving",
                       description="Write the conv form of a trained model (eval mode) as an ONNX file: input "
                                   "'tokens' int64 (B, T), each row [0, c1, ..., cn] right-padded with any token; "
                                   "output 'logits' float32 (B, T, V); B and T dynamic. Needs the onnx extra: "
                                   "pip install 'wavenet_conv[onnx]'.")
    e.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    e.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")


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
    integer(PROG, "samples", args.samples, 0)  # before training: the samples come after it
    options = given(args, TRAIN_OPTIONS)
    kwargs = dict(data=args.data, out=args.out, progress=not args.quiet, force=args.force, threads=None)
    if args.resume:
        model_options = list(given(args, MODEL_OPTIONS))
        if model_options:
            raise ArgumentError(PROG, "resume", f"continues a run with its own model: drop {flag(model_options[0])}")
        recipe_run = is_recipe_folder(args.resume)
        if recipe_run and args.teachers:
            raise ArgumentError(PROG, "teachers", "cannot be given with --resume: the recipe keeps its own teachers")
        run_config = read_plan(args.resume).config if recipe_run else saved_config(args.resume)
        tc = replace(run_config, device=args.device, recipe=args.recipe or run_config.recipe, **options)
        if recipe_run:
            result = resume_recipe(args.resume, tc, progress=not args.quiet, threads=None)
        else:
            result = train(config=tc, resume=args.resume, teachers=args.teachers, **kwargs)
    else:
        name = args.recipe or "default"
        tc = recipe(name, device=args.device, **options)
        mc = recipe_model(name, **given(args, MODEL_OPTIONS))
        out = Path(args.out) if args.out else default_run_dir(tc.form)
        where = dict(device=args.device, precision=options.get("precision"))  # where and how the teachers run too
        teachers = recipe_teachers(name, tc.seed, **where) if tc.distill and args.teachers is None else []
        if teachers:  # the recipe's own teachers first, into out/teacher-k
            result = train_recipe(mc, tc, teachers, out, args.data, force=args.force, progress=not args.quiet, threads=None)
        else:
            result = train(mc, tc, teachers=args.teachers, **{**kwargs, "out": out})
    print(f"run folder: {result.run_dir}")
    model = result.model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(result.config.seed)
    words = sample_names(model, args.samples, result.vocab, generator=gen, threads=None)
    if words:
        train_set = set(result.train_words)
        print(f"{args.samples} samples:")
        sys.stdout.write(sample_lines(words, [w in train_set for w in words], MAX_LEN))


def cmd_score(args):
    source = source_name(args.file)
    stream = open_names(args.file)  # before any work: a missing file is the first error
    try:
        loaded = load_run(args)
        parts = score_lines(loaded.model, read_lines(stream), loaded.vocab, chunk=args.chunk,
                            skip_invalid=args.skip_invalid, lowercase=args.lowercase, per_char=args.chars,
                            shard=args.shard, source=source, threads=None)
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
    print(closing_count(source, names, targets, nats, empty, invalid), file=sys.stderr)


def cmd_sample(args):
    loaded = load_run(args)
    device = next(loaded.model.parameters()).device
    gen = None if args.seed is None else torch.Generator(device=device).manual_seed(args.seed)
    for words in sample_batches(loaded.model, args.num, loaded.vocab, generator=gen, temperature=args.temperature,
                                top_k=args.top_k, prefix=args.prefix, max_len=args.max_len, threads=None):
        sys.stdout.write(sample_lines(words, [loaded.in_training_set(w) for w in words], args.max_len))
        sys.stdout.flush()


def cmd_check(args):
    device = resolve_device(args.device)
    path = args.data or bundled_names()
    words = load_names(path)
    vocab = Vocab.from_words(words)
    _, dev, _ = lecture_split(words)
    torch.manual_seed(args.seed)
    tree = TreeModel(ModelConfig(vocab_size=len(vocab), n_layers=args.n_layers)).to(device).eval()
    r = compare_forms(tree.double(), dev, vocab)
    print(f"{path}: dev split, {len(dev)} names, {r['targets']} targets; model {tree.num_params():,} parameters "
          f"(freshly initialized), {device}")
    print(f"float64: tree form (contexts) loss {r['tree_loss']:.6f}, conv form (whole names) loss {r['conv_loss']:.6f}; "
          f"largest |logit difference| over all {r['targets']} positions: {r['max_abs_diff']:.3g}")
    t = race_forms(tree.float(), dev, vocab)
    print(f"float32, {torch.get_num_threads()} thread(s), median of 5: tree form {t['tree'] * 1e3:.1f} ms, "
          f"conv form {t['conv'] * 1e3:.1f} ms, fast path {t['fast'] * 1e3:.1f} ms "
          f"({t['tree'] / t['fast']:.1f}x faster than the tree)")


def cmd_export(args):
    check_onnx_installed()  # before any work
    loaded = load_run(args)
    path = export_onnx(loaded.model, args.out)
    print(f"wrote {path}: input 'tokens' int64 (B, T), output 'logits' float32 (B, T, {loaded.model.config.vocab_size}); "
          f"vocabulary {''.join(loaded.vocab.itos)!r} (token i is character i)")


COMMANDS = {"train": cmd_train, "score": cmd_score, "sample": cmd_sample, "check": cmd_check, "export": cmd_export}
# each command's threads, the library's defaults: training and timing on a fixed count, the rest on the free CPUs
THREADS = {"train": 1, "score": "auto", "sample": "auto", "check": 1, "export": "auto"}


def in_our_words(e: Exception) -> str:
    """An input error in the command line's words: an argument as its option, ``TrainConfig.steps`` as
    ``--steps``; on one line."""
    msg = f"{flag(e.argument)} {e.problem}" if isinstance(e, ArgumentError) else str(e)
    msg = re.sub(r"\b(?:Model|Train)Config\.(\w+)", lambda m: flag(m[1]), msg)
    return " ".join(msg.split()) or type(e).__name__


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threads = THREADS[args.command] if args.threads is None else args.threads
        with torch_threads(threads, PROG):  # the caller's setting is put back (main may run inside Python)
            COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except TrainingDiverged as e:  # not the input's fault as such, nor a bug: its own status
        print(f"{PROG} {args.command}: error: {in_our_words(e)}", file=sys.stderr)
        return 3
    except (InputError, OSError) as e:  # the user's input; anything else is a bug: its traceback shows
        print(f"{PROG} {args.command}: error: {in_our_words(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
