"""What each ``wavenet-conv`` command does, once its options are parsed (``parser``): train, score,
sample, check, export. The library checks every value it is given; a command turns options into calls
and checks, before any work, only what no library call sees in time: ``--samples`` (drawn after the
training), an empty ``--resume`` path (read here before ``train`` sees it), the options that
``--resume`` does not take (the run's model; a recipe's teachers, folder and names file), the options
that ``score --engine`` local or ray does not take, and a list with no names in it."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..store.checkpoint import CHECKPOINT_NAME, is_run_path
from ..store.loaded import load_model
from ..inference.compare import compare_forms, race_forms
from ..models.config import ModelConfig, check_length, recipe, recipe_model, recipe_teachers
from ..data import Vocab, check_split, lecture_split, load_names, open_names, read_lines, source_name
from ..tables import Table, is_table
from ..device import resolve_device
from ..errors import ArgumentError, ConfigError, DataError
from ..inference.export import export_onnx
from .output import Meter, Top, closing_count, count, format_rows, header, sample_lines
from .parser import MODEL_OPTIONS, PROG, RAY_OPTIONS, TRAIN_OPTIONS, flag, given, our_words
from ..paths import bundled_names, run_path
from ..cluster.counts import Counts
from ..cluster.job import import_ray, score_files  # Ray itself is imported only by a job on it
from ..cluster.scorer import BatchScorer
from ..inference.sampling import MAX_LEN, sample_batches
from ..inference.streaming import Stream, scored_lines
from ..training.finetune import load_init
from ..training.teachers import is_recipe_folder, read_plan, resume_recipe, train_recipe
from ..training.train import saved_config, train
from ..models.tree import TreeModel
from ..validate import integer, paths


def say(line: str) -> None:
    """A line of a training's report on stdout, in the command line's words (``--resume RUN``); a note
    (what the data makes weak) on stderr, as the command line's other notes."""
    if line.startswith("note: "):
        print(f"{PROG} train: {our_words(line)}", file=sys.stderr)
    else:
        print(our_words(line))


def default_run_dir(form: str) -> Path:
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{form}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def load_run(args):
    """``load_model(args.run)`` on ``args.device`` for a command that uses a trained run; one note on
    stderr when the run is unfinished (``Checkpoint.finished``)."""
    loaded = load_model(args.run, device=args.device or "auto")
    ckpt = loaded.checkpoint
    if ckpt.train_config is not None and ckpt.step is not None and not ckpt.finished:
        print(f"{PROG} {args.command}: note: {args.run} is an unfinished run (step {ckpt.step:,} of "
              f"{ckpt.train_config.steps:,}); {PROG} train --resume {args.run} finishes it", file=sys.stderr)
    return loaded


def init_model(init, args) -> ModelConfig | None:
    """The model of a run that fine-tunes ``init``: its own (None) or, with model options, its own with
    them, which ``train`` refuses where they differ from its shape."""
    options = given(args, MODEL_OPTIONS)
    return ModelConfig.from_dict({**load_init(init)[0].model_config.to_dict(), **options}) if options else None


def cmd_train(args):
    integer(PROG, "samples", args.samples, 0)  # before training: the samples come after it
    options = given(args, TRAIN_OPTIONS)
    kwargs = dict(data=args.data, out=args.out, progress=not args.quiet, log=say, force=args.force, threads=None)  # main's
    if args.resume is not None:
        paths(PROG, resume=args.resume)  # before the run's own config is read from it
        model_options = list(given(args, MODEL_OPTIONS))
        if model_options:
            raise ArgumentError(PROG, "resume", f"continues a run with its own model: drop {flag(model_options[0])}")
        recipe_run = is_recipe_folder(args.resume)
        if args.init is not None:
            raise ArgumentError(PROG, "init", "cannot be given with --resume: the run goes on from where it stopped")
        if recipe_run and args.teachers:
            raise ArgumentError(PROG, "teachers", "cannot be given with --resume: the recipe keeps its own teachers")
        if recipe_run and (args.out is not None or args.data is not None):
            raise ArgumentError(PROG, "out" if args.out is not None else "data",
                                "cannot be given with --resume of a recipe: it goes on in its folder, on its names file")
        check_length(options)  # the run's config has steps; --epochs sets them anew
        run_config = read_plan(args.resume).config if recipe_run else saved_config(args.resume)
        tc = replace(run_config, device=args.device or run_config.device, recipe=args.recipe or run_config.recipe,
                     **options)
        if recipe_run:
            result = resume_recipe(args.resume, tc, progress=not args.quiet, log=say)
        else:
            result = train(config=tc, resume=args.resume, teachers=args.teachers, **kwargs)
    else:
        name = args.recipe or ("default" if args.init is None else "finetune")
        tc = recipe(name, device=args.device or "auto", **options)
        mc = recipe_model(name, **given(args, MODEL_OPTIONS)) if args.init is None else init_model(args.init, args)
        out = args.out if args.out is not None else default_run_dir(tc.form)
        where = dict(device=args.device or "auto", precision=options.get("precision"))  # where and how the teachers run too
        teachers = recipe_teachers(name, tc.seed, **where) if tc.distill and args.teachers is None else []
        if teachers and args.init is not None:
            raise ArgumentError(PROG, "init", f"trains one run; recipe {name}'s teachers would train from scratch: give "
                                "its teachers' runs with --teacher RUN")
        if teachers:  # the recipe's own teachers first, into out/teacher-k
            result = train_recipe(mc, tc, teachers, out, args.data, force=args.force, progress=not args.quiet, log=say)
        else:
            result = train(mc, tc, teachers=args.teachers, init=args.init, **{**kwargs, "out": out})
    print(f"run folder: {result.run_dir}")
    model = result.model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(result.config.seed)
    train_set = set(result.train_words)
    if args.samples:
        print(f"{args.samples} samples:")
    for words in sample_batches(model, args.samples, result.vocab, generator=gen):  # as `sample` draws
        sys.stdout.write(sample_lines(words, [w in train_set for w in words], MAX_LEN))
        sys.stdout.flush()


def cmd_score(args):
    args.run, args.file = run_and_file(args.run, args.file, args.engine)
    check_engine_options(args)
    source, counts = (args.file, score_on_ray(args)) if args.engine == "ray" else score_here(args)
    if counts.names + counts.invalid == 0 and args.shard is None:
        raise DataError(f"{source}: no names in it")
    unit = "row" if is_table(args.file) else "line"  # a folder of tables on Ray: its lines are rows too
    if args.engine == "ray":
        each = f"non-empty {unit}" if args.min_percentile is None else "name kept"
        print(f"{args.output}: {count(counts.rows, 'row')} written (Parquet; one per {each}, keyed by "
              f"{args.id_column or f'path and {unit}'})")
    print(closing_count(source, counts, args.min_percentile, unit), file=sys.stderr)


def run_and_file(run: str | None, file: str | None, engine: str = "local") -> tuple[str | None, str]:
    """``score [RUN] [FILE]``'s model and input: two paths are RUN and FILE; a lone path is RUN when it
    is a run folder or checkpoint file (``is_run_path``), else FILE ('-': stdin); RUN None is the
    bundled model, FILE none stdin. A lone local path that is no file is a ``DataError`` naming it
    (with ``engine`` ray it may be a glob or URI, which ``score_files`` checks)."""
    if file is not None or run == "":  # "": load_model's error
        return run, "-" if file is None else file
    if run is None or is_run_path(run_path(run)):  # "bundled" too, where no file has that name
        return run, "-"
    if engine == "local" and run != "-":
        if not os.path.exists(run):
            raise DataError(f"{run}: no such file, run folder or checkpoint")
        if os.path.isdir(run):
            raise DataError(f"{run}: a folder without {CHECKPOINT_NAME}: neither a run folder nor a names file")
    return None, run


def score_here(args) -> tuple[str, Counts]:
    """``score --engine local``: rows on stdout, a chunk at a time, and a line on stderr for each line
    that is not a name (``--skip-invalid``); returns (the input's name, the counts). A table (``--column``,
    by FILE's suffix) is read a row at a time (``tables.Table``), each row keyed by its number or its
    ``--id-column``."""
    source = source_name(args.file)
    table = open_table(args)  # before any work: a missing file or column is the first error
    stream = open_names(args.file) if table is None else None
    try:
        loaded = load_run(args)
        reference_for(args, loaded)
        scorer = loaded.scorer(vocab=loaded.reading(args.lowercase, args.unknown))  # main's threads
        say_refused(args, loaded)
        cells = read_lines(stream) if table is None else table.cells()
        how = Stream(args.chunk, args.skip_invalid, args.chars, args.shard, source, rows=table is not None)
        done = None if table is not None or stream is sys.stdin.buffer else share_read(stream)
        return source, write_scores(args, scored_lines(scorer, cells, how), how, None if table is None else cells, done)
    finally:
        if stream is not None and stream is not sys.stdin.buffer:
            stream.close()


def say_refused(args, loaded) -> None:
    """Once on stderr, for a run without an unknown-character token (saved before 1.1): a name with a
    character outside its vocabulary is refused, as it always was."""
    if not loaded.vocab.unknown:
        print(f"{PROG} score: note: {args.run or 'the bundled model'} has no unknown-character token (saved before 1.1): "
              f"a name with a character outside {loaded.vocab.chars!r} is refused, not scored; a run trained now "
              "scores every name", file=sys.stderr)


def open_table(args):
    """The table ``score`` reads (``tables.Table``), or None for a list; ``--column`` and ``--id-column``
    are for a table only."""
    if is_table(args.file):
        return Table.open(args.file, args.column, args.id_column)
    if args.column is not None or args.id_column is not None:
        raise ArgumentError(PROG, "column" if args.column is not None else "id_column",
                            f"is for a table (a .csv, .tsv, .jsonl or .parquet FILE); {source_name(args.file)} is a "
                            "list, one name a line")
    return None


def share_read(stream):
    """A function giving the share of the file ``stream`` read so far, or None where its size is unknown."""
    try:
        size = os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return None
    return (lambda: stream.tell() / size) if size else None


def write_scores(args, parts, how: Stream, keyed, done=None) -> Counts:
    """Each part's rows on stdout as it comes (those at or above ``--min-percentile``; with ``--top K``
    the K most unusual, at the end), and a line on stderr for each line that is not a name; ``keyed``: a
    table's ``Cells`` (its rows' keys), or None. On a terminal, progress on stderr (``done``: the share
    of the input read, where known)."""
    counts, width, top, meter = Counts(), None, Top(args.top) if args.top else None, Meter()
    for part in parts:
        for line, problem in part.invalid:
            print(f"{how.where(line)}: {problem}", file=sys.stderr)
        if width is None and part.names:  # the header with the first row: none before an error on line 1
            width = max([12, *map(len, part.names)])
            sys.stdout.write(header(args.format, args.chars, width, "line" if keyed is None else keyed.name))
        keep = None if args.min_percentile is None else \
            (part.scores.percentile >= args.min_percentile).nonzero()[:, 0].tolist()
        if top is not None:
            top.add(part, keep, lambda chosen: format_rows(args.format, part, args.chars, width, chosen, keyed))
        else:
            sys.stdout.write(format_rows(args.format, part, args.chars, width, keep, keyed))
            sys.stdout.flush()
        if keyed is not None:
            keyed.clear()
        counts += Counts.of_part(part) if keep is None else replace(Counts.of_part(part), rows=len(keep))
        meter.update(len(part.lines) + len(part.invalid) + part.empty, done and done())
    meter.close()
    if width is None:  # no name at all: the header alone
        sys.stdout.write(header(args.format, args.chars, 12, "line" if keyed is None else keyed.name))
    if top is not None:
        sys.stdout.write(top.lines())
        counts = replace(counts, rows=len(top.heap))
    return counts


def reference_for(args, loaded, note: bool = True):
    """``score``'s percentile table: the run's (``LoadedRun.reference``), or None with one note on
    stderr saying why (with ``note``); with ``--min-percentile``, no table is an ``ArgumentError``,
    before any scoring."""
    if loaded.reference is None:
        run = args.run if args.run is not None else "the bundled model"
        if args.min_percentile is not None:
            raise ArgumentError(PROG, "min_percentile", f"needs the run's percentiles, and {run} has none: "
                                f"{loaded.no_reference}")
        if note:
            print(f"{PROG} score: note: {run}: no percentiles: {loaded.no_reference}", file=sys.stderr)
    return loaded.reference


def check_engine_options(args) -> None:
    """A ``ConfigError`` for an option of ``score`` that the chosen ``--engine`` does not take (the
    library has no such option: ``score_lines`` runs here, ``score_files`` on Ray)."""
    if args.engine == "local":
        extra = [flag(name) for name in RAY_OPTIONS if getattr(args, name) is not None]
        if extra:
            raise ConfigError(f"{extra[0]} is for --engine ray")
        return
    if args.output is None:
        raise ConfigError("--engine ray writes a Parquet dataset: give --output DIR")
    if args.file == "-":
        raise ConfigError("--engine ray reads files, not stdin: give INPUT (a file, folder, glob or URI)")
    if args.shard is not None or args.format != "table":
        raise ConfigError(f"{'--shard' if args.shard else '--format'} is for --engine local (Ray splits the work and "
                          "writes Parquet)")
    if args.device == "cuda" and not args.gpus_per_worker:
        raise ConfigError("--engine ray scores on CUDA with --gpus-per-worker X, not --device cuda")


def score_on_ray(args) -> Counts:
    """``score RUN INPUT --engine ray --output DIR``: ``score_files``, its workers of ``--threads`` CPUs
    each (1 unless a number is given); returns the counts of what was written and skipped."""
    import_ray()  # first: importing Ray Data sets its loggers' levels
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's INFO lines: the closing line is ours
    gpus = args.gpus_per_worker or 0
    loaded = load_model(args.run)
    reference_for(args, loaded, note=False)  # --min-percentile's error before the cluster starts
    scorer = BatchScorer(args.run, device="cuda" if gpus else "cpu", lowercase=args.lowercase, per_char=args.chars,
                         unknown=args.unknown)
    counts = score_files(scorer, args.file, args.output, workers=1 if args.workers is None else args.workers,
                         cpus_per_worker=args.threads if isinstance(args.threads, int) else 1, gpus_per_worker=gpus,
                         address=args.address, id_column=args.id_column, column=args.column, chunk=args.chunk,
                         skip_invalid=args.skip_invalid, min_percentile=args.min_percentile)
    if counts.names:  # the notes, once the job has scored names (before, a mistake is the one line)
        reference_for(args, loaded)
        say_refused(args, loaded)
    return counts


def cmd_sample(args):
    loaded = load_run(args)
    device = next(loaded.model.parameters()).device
    gen = None if args.seed is None else torch.Generator(device=device).manual_seed(args.seed)
    for words in sample_batches(loaded.model, args.num, loaded.vocab, generator=gen, temperature=args.temperature,
                                top_k=args.top_k, prefix=args.prefix, max_len=args.max_len):
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
    loaded = load_run(args)
    path = export_onnx(loaded.model, args.out)
    print(f"wrote {path}: input 'tokens' int64 (B, T), output 'logits' float32 (B, T, {loaded.model.config.vocab_size}); "
          f"vocabulary {''.join(loaded.vocab.itos)!r} (token i is character i; 0 the start and end); text normalized: "
          f"{loaded.vocab.normalize}; unknown-character token: "
          f"{'none (a name with a character outside it is refused)' if loaded.vocab.unknown_id is None else loaded.vocab.unknown_id}")


COMMANDS = {"train": cmd_train, "score": cmd_score, "sample": cmd_sample, "check": cmd_check, "export": cmd_export}
# each command's threads, the library's defaults: training and timing on a fixed count, the rest on the free CPUs
THREADS = {"train": 1, "score": "auto", "sample": "auto", "check": 1, "export": "auto"}
