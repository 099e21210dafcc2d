"""What each ``wavenet-conv`` command does, once its options are parsed (``cli.py``): train, score,
sample, check, export. The library checks every value; a command only turns options into calls."""

from __future__ import annotations

import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from .checkpoint import load_model
from .compare import compare_forms, race_forms
from .config import ModelConfig, TrainConfig, recipe, recipe_model, recipe_teachers
from .data import Vocab, lecture_split, load_names, open_names, read_lines, source_name
from .device import resolve_device
from .errors import ArgumentError, DataError
from .export import check_onnx_installed, export_onnx
from .output import closing_count, format_rows, header, sample_lines
from .paths import bundled_names
from .ray_engine import check_engine_options, score_job  # Ray itself is imported only by a job on it
from .run import check_split, saved_config
from .sampling import MAX_LEN, sample_batches
from .streaming import score_lines
from .teachers import is_recipe_folder, read_plan, resume_recipe, train_recipe
from .train import train
from .tree import TreeModel
from .validate import integer, paths

PROG = "wavenet-conv"
MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")  # the data sets vocab_size
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("recipe", "device"))  # own options
ALIASES = {"n_layers": ("--depth",)}
FLAGS = {"n": "-n", "threads": "--threads", "cpus_per_worker": "--threads", "teachers": "--teacher"}  # a library argument's option, where it is not flag(argument)


def flag(name: str) -> str:
    """A config field's or argument's option: ``n_embd`` -> ``--n-embd``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


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
    loaded = load_model(args.run, device=args.device or "auto")
    step, steps = loaded.meta.get("step"), (loaded.meta.get("train_config") or {}).get("steps")
    if isinstance(step, int) and isinstance(steps, int) and step < steps:
        print(f"{PROG} {args.command}: note: {args.run} is an unfinished run (step {step:,} of {steps:,}); "
              f"{PROG} train --resume {args.run} finishes it", file=sys.stderr)
    return loaded


def cmd_train(args):
    integer(PROG, "samples", args.samples, 0)  # before training: the samples come after it
    options = given(args, TRAIN_OPTIONS)
    kwargs = dict(data=args.data, out=args.out, progress=not args.quiet, force=args.force, threads=None)
    if args.resume is not None:
        paths(PROG, resume=args.resume)  # before the run's own config is read from it
        model_options = list(given(args, MODEL_OPTIONS))
        if model_options:
            raise ArgumentError(PROG, "resume", f"continues a run with its own model: drop {flag(model_options[0])}")
        recipe_run = is_recipe_folder(args.resume)
        if recipe_run and args.teachers:
            raise ArgumentError(PROG, "teachers", "cannot be given with --resume: the recipe keeps its own teachers")
        if recipe_run and (args.out is not None or args.data is not None):
            raise ArgumentError(PROG, "out" if args.out is not None else "data",
                                "cannot be given with --resume of a recipe: it goes on in its folder, on its names file")
        run_config = read_plan(args.resume).config if recipe_run else saved_config(args.resume)
        tc = replace(run_config, device=args.device or run_config.device, recipe=args.recipe or run_config.recipe,
                     **options)
        if recipe_run:
            result = resume_recipe(args.resume, tc, progress=not args.quiet, threads=None)
        else:
            result = train(config=tc, resume=args.resume, teachers=args.teachers, **kwargs)
    else:
        name = args.recipe or "default"
        tc = recipe(name, device=args.device or "auto", **options)
        mc = recipe_model(name, **given(args, MODEL_OPTIONS))
        out = args.out if args.out is not None else default_run_dir(tc.form)
        where = dict(device=args.device or "auto", precision=options.get("precision"))  # where and how the teachers run too
        teachers = recipe_teachers(name, tc.seed, **where) if tc.distill and args.teachers is None else []
        if teachers:  # the recipe's own teachers first, into out/teacher-k
            result = train_recipe(mc, tc, teachers, out, args.data, force=args.force, progress=not args.quiet, threads=None)
        else:
            result = train(mc, tc, teachers=args.teachers, **{**kwargs, "out": out})
    print(f"run folder: {result.run_dir}")
    model = result.model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(result.config.seed)
    train_set = set(result.train_words)
    if args.samples:
        print(f"{args.samples} samples:")
    for words in sample_batches(model, args.samples, result.vocab, generator=gen, threads=None):  # as `sample` draws
        sys.stdout.write(sample_lines(words, [w in train_set for w in words], MAX_LEN))
        sys.stdout.flush()


def cmd_score(args):
    check_engine_options(args)
    if args.engine == "ray":
        c = score_job(args)
        print(closing_count(args.file, c.names, c.targets, c.nats, c.empty, c.invalid), file=sys.stderr)
        return
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
    device = resolve_device(args.device or "auto")
    path = args.data or bundled_names()
    words = load_names(path)
    vocab = Vocab.from_words(words)
    check_split(words, {"path": path})  # a dev split to compare the forms on
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
