"""The command line's words: every option of ``wavenet-conv`` and the parser that reads them, and the
translation of the library's words into options. A library error names a Python function's argument
(``ArgumentError``: ``sample_names: max_len must be ...``), a config field (``TrainConfig.steps``) or
an argument given as ``name=VALUE`` (``force=True``, ``out=PATH``); the command line says each with
the option the user types (``--max-len``, ``--steps``, ``--force``, ``--out PATH``), here and nowhere
else.

The model and training options are generated from ``ModelConfig`` and ``TrainConfig`` (their fields'
names, types, choices and help): ``MODEL_OPTIONS`` and ``TRAIN_OPTIONS``. ``flag`` names the option of
a field or a library argument; ``ALIASES`` gives an option's other names, ``FLAGS`` the options whose
name is not the argument's.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import typing
from dataclasses import fields

from ..data import UNKNOWN_CHOICES
from ..device import DEVICES
from ..errors import ArgumentError, install_hint
from ..inference.sampling import MAX_LEN
from ..inference.streaming import parse_shard
from ..models.config import CHOICES, RECIPES, ModelConfig, TrainConfig, field_help
from ..training.train import CHANGEABLE_ON_RESUME
from ..version import __version__
from .output import FORMATS

PROG = "wavenet-conv"
MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")  # the data sets vocab_size
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("recipe", "device"))  # own options
RAY_OPTIONS = ("output", "address", "workers", "gpus_per_worker")  # score --engine ray's
ALIASES = {"n_layers": ("--depth",)}
# a library argument's option, where it is not flag(argument)
FLAGS = {"n": "-n", "threads": "--threads", "cpus_per_worker": "--threads", "teachers": "--teacher"}

EXIT_STATUSES = ("exit status: 0 done; 2 a mistake in the input (a names file, option, checkpoint or run folder) or "
                 "a system error (e.g. a full disk), one line on stderr; 3 training diverged (a non-finite loss: "
                 "the last good checkpoint stays); 130 interrupted (Ctrl-C).")
BUNDLED_HELP = "the bundled model, the small recipe trained on first names of many countries (data/world.tsv)"  # score's and sample's RUN
PERCENTILE_HELP = ("percentile: how unusual a name is, 0-100: the share of the run's reference names (held-out names "
                   "of about its length, which it did not train on) that are less unusual than it (a lower nats per "
                   "target); blank (null) for a run without them, with a note on stderr saying why.")
RECIPE_HELP = ("default: the lecture's model, conv form, 16 epochs of whole names of any file, AdamW, the best val report's weights kept; small: the best found at the "
               "lecture's 76,579 parameters; best: the best single model found, 621,603 parameters; small and best "
               "first train two wide teachers (OUT/teacher-0, OUT/teacher-1) and distill from them; wide: the best "
               "trained on the names alone, 621,603 parameters; finetune (with --init, its default): 8 epochs at lr 3e-3; gpu: the default's model, 16 epochs of 1,024 names a step, "
               "for a GPU; lecture: the lecture's own recipe, tree form, 200k SGD steps. Every recipe but lecture's is in epochs "
               "of the file's training split. Options given override the "
               "recipe's: the student's (--device and --precision also the teachers')")


def flag(name: str) -> str:
    """A config field's or library argument's option: ``n_embd`` -> ``--n-embd``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def given(args, names) -> dict:
    """The options among ``names`` that the user gave (every generated option defaults to None)."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}



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
    """--shard: K/N, checked by the library; its problem alone, as argparse names the option itself
    (``argument --shard: K/N needs ...``, not the library's ``score_lines: shard ...``)."""
    try:
        return parse_shard(text)
    except ArgumentError as e:
        raise argparse.ArgumentTypeError(e.problem) from None


def positive_int(text: str) -> int:
    """--top: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text[:40]!r}")
    return value


def percent_arg(text: str) -> float:
    """--min-percentile: a number from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 100, got {text[:40]!r}")
    return value


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
    common.add_argument("--threads", type=threads_arg, default=None, metavar="N|auto",
                        help="torch CPU threads; auto: the CPUs no other process is running on now, at least 1, at most "
                             "OMP_NUM_THREADS if set "
                             "(default: 1 for train and check, auto for score, sample and export)")
    for add in (add_train, add_score, add_sample, add_check, add_export):
        add(sub, common)
    for name, command in sub.choices.items():  # train alone has --resume, which keeps the run's device
        command.add_argument("--device", choices=DEVICES, help="cpu, cuda, or auto: cuda when available (default: "
                             + ("auto; with --resume, the run's own)" if name == "train" else "auto)"))
    return p


def add_train(sub, common) -> None:
    t = sub.add_parser("train", parents=[common], help="train a model on a names file and write a run folder",
                       description="Train on a names file with the lecture's 80/10/10 split; writes checkpoint.pt, "
                                   "metrics.json and loss.png into the run folder. The folder must be new or empty "
                                   "(--force otherwise); a lock file, train.lock, keeps a second training out of it "
                                   "while this one runs.", epilog=EXIT_STATUSES)
    t.add_argument("--data", metavar="PATH", help="names file, one per line, or a table (.csv .tsv .jsonl .parquet: "
                   "its --column) (default: the bundled names)")
    t.add_argument("--out", help="run folder, new or empty (default: runs/<date>-<time>-<form>)")
    t.add_argument("--force", action="store_true", help="train into an --out that holds a run or other files "
                   "(the earlier run's checkpoint.pt, metrics.json and loss.png are removed first)")
    t.add_argument("--resume", metavar="RUN", help="continue a run folder (or checkpoint) where it stopped, with its "
                   f"own settings (a recipe's folder: its teachers, then its student); only "
                   f"{', '.join(map(flag, CHANGEABLE_ON_RESUME))} can change")
    t.add_argument("--init", metavar="RUN", help="fine-tune: start from a run folder's (or checkpoint's) model, or "
                   "'bundled' (the package's): its shape, weights and text normalization, its characters extended with "
                   "the names file's")
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
    s = sub.add_parser("score", parents=[common], help="nats per name (and per target) under a trained model, and "
                       "how unusual each name is (its percentile)",
                       description="Score a list of names of any length, streamed a chunk at a time: one row per "
                                   "name, in input order, with its line number, total nats, targets (characters + "
                                   f"the end token), nats per target and percentile. {PERCENTILE_HELP} "
                                   "A character the run never trained on scores as its unknown-character token (a "
                                   "run saved before 1.1 has none and refuses it); blank lines are skipped. A closing line on stderr counts what was scored and "
                                   "skipped.")
    s.add_argument("run", nargs="?", metavar="RUN", help=f"a run folder, a checkpoint file or 'bundled' (the default: {BUNDLED_HELP}); "
                   "given one path, it is RUN when it is a run folder, a checkpoint file or 'bundled' (no file of that name here), else FILE")
    s.add_argument("file", nargs="?", metavar="FILE|-", help="names, one per line ('-' or none: stdin); "
                   "with --engine ray also a folder, a glob, a URI, or Parquet")
    s.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned, for a terminal; the default), tsv (with a header row) or jsonl "
                        '({"line", "name", "nats", "targets", "nats_per_target", "percentile"} per row)')
    s.add_argument("--chars", action="store_true", help="also the surprisal of every character and of the end "
                   "token: bits in a table, nats in tsv/jsonl (char_nats)")
    s.add_argument("--skip-invalid", action="store_true", help="report a line that is not a name on stderr "
                   "(FILE:LINE: reason) and go on; without it, the first such line stops the job (exit 2) after "
                   "the rows of the lines before it. --engine ray writes every line's row, a bad one's reason in "
                   "error, and then without it exits 2 naming the first: the smallest FILE:LINE (Parquet: key)")
    s.add_argument("--lowercase", action="store_true", help="fold case before checking (for lists like 'Emma'); "
                   "each name is shown as it came")
    s.add_argument("--unknown", choices=UNKNOWN_CHOICES, default="score", help="a character the run never saw: "
                   "score (the default: it costs what the run's unknown-character token learned) or error (the name "
                   "is refused, not scored, as by a run without that token)")
    s.add_argument("--column", "--name-column", dest="column", metavar="COL", help="a table's column of names: FILE "
                   "a .csv or .tsv (a header row; quoted fields), .jsonl (a key of each object) or .parquet (pyarrow); "
                   "default: its only column (with --engine ray, Parquet's 'name'). Any other FILE is a list, one name "
                   "a line")
    s.add_argument("--id-column", metavar="COL", help="a table's column that keys each row, carried to the output as "
                   "its first column (default: the row number, from 1, the header not counted; a list's: the line; with "
                   "--engine ray, path and row, and Parquet needs it)")
    s.add_argument("--min-percentile", type=percent_arg, metavar="P", help="keep only the names at or above the "
                   "P-th percentile (0-100; e.g. 95: the unusual ones) and say on stderr how many were kept; needs "
                   "the run's percentiles. --engine ray writes only those rows (a line that is not a name has no "
                   "percentile: it is counted, not written)")
    s.add_argument("--top", type=positive_int, metavar="K", help="only the K most unusual names, most unusual first, "
                   "at the end: ranked by percentile, then nats per target (as the whole list ranks them), in memory "
                   "for K rows; with --min-percentile, among the names it keeps")
    s.add_argument("--shard", metavar="K/N", type=shard_arg, help="score only the lines i with (i - 1) mod N == K "
                   "(line numbers kept): N jobs split one list, their rows joined by line number")
    s.add_argument("--chunk", type=int, default=65536, metavar="LINES",
                   help="lines read and scored at a time (65536); memory grows with it, not with the list")
    r = s.add_argument_group(f"on a Ray cluster ({install_hint('ray')})")
    r.add_argument("--engine", choices=["local", "ray"], default="local", help="local: this process, rows on stdout "
                   "(the default); ray: a Ray cluster, rows to --output as Parquet, a line that is not a name a row "
                   "with its reason in 'error'")
    r.add_argument("--output", metavar="DIR", help="the Parquet dataset to write: a new or empty folder or URI")
    r.add_argument("--address", help="join this Ray cluster (e.g. auto, or HOST:6379); default: a local one, "
                   "started for the job and stopped after")
    r.add_argument("--workers", type=int, metavar="N", help="scoring actors, each --threads CPUs (1 by default) and "
                   "one copy of the model (1)")
    r.add_argument("--gpus-per-worker", type=float, metavar="X", help="GPUs per actor: score on CUDA (0)")



def add_sample(sub, common) -> None:
    g = sub.add_parser("sample", parents=[common], help="sample names from a trained model (cached generation)")
    g.add_argument("run", nargs="?", metavar="RUN", help=f"a run folder, a checkpoint file or 'bundled' (the default: {BUNDLED_HELP})")
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
                                   f"{install_hint('onnx')}.")
    e.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    e.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")


# ----------------------------------------------------------------------------- the library's words as options


@functools.cache
def options() -> dict[str, argparse.Action]:
    """Every option of every command by its argument name (``max_len``, ``teachers``), and ``FLAGS``'
    names: the words the translation turns into options."""
    found = {name: None for name in FLAGS}
    for command in build_parser()._subparsers._group_actions[0].choices.values():
        found.update({a.dest: a for a in command._actions if a.option_strings and a.dest != "help"})
    return found


CONFIG_FIELD = re.compile(r"\b(?:Model|Train)Config\.(\w+)")  # TrainConfig.steps
ARGUMENT_VALUE = re.compile(r"(?<![^\s(])([a-z]\w*)=(\.\.\.|[^\s,;)]+?)(?=[.:]?(?:[\s,;)]|$))")  # force=True, out=PATH
QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")  # a quoted name or value: 'mary out=x' is no option
CALLS = {"resume_recipe": "resume"}  # a library call of one path that is an option here: resume_recipe(RUN)
CALL = re.compile(rf"\b({'|'.join(CALLS)})\(([^()]*)\)")


def unquoted(value: str) -> str:
    """A value without the quotes of its ``repr``: ``'runs/x'`` -> ``runs/x``."""
    return value.strip("'\"")


def as_option(m: re.Match) -> str:
    """``name=VALUE`` as its option: ``force=True`` -> ``--force``, ``out=PATH`` -> ``--out PATH``,
    ``out=...`` (any value) -> ``--out``, ``residual=False`` -> ``--no-residual``; as it was where
    ``name`` is no option."""
    name, value = m[1], unquoted(m[2])
    if name not in options():
        return m[0]
    if value in ("True", "..."):
        return flag(name)
    if value == "False" and isinstance(options()[name], argparse.BooleanOptionalAction):
        return "--no-" + flag(name)[2:]
    return f"{flag(name)} {value}"


def our_words(text: str) -> str:
    """``text`` (a message or a line of a report) with the library's names of options said as the
    options: ``TrainConfig.steps`` and ``steps=5`` as ``--steps`` and ``--steps 5``,
    ``resume_recipe('runs/x')`` as ``--resume runs/x``."""
    text = CONFIG_FIELD.sub(lambda m: flag(m[1]), CALL.sub(lambda m: f"{flag(CALLS[m[1]])} {unquoted(m[2])}", text))
    quoted = [m.span() for m in QUOTED.finditer(text)]  # what a message quotes (a name, a line) stays as it is
    return ARGUMENT_VALUE.sub(lambda m: m[0] if any(a < m.start() < b for a, b in quoted) else as_option(m), text)


def in_our_words(e: Exception) -> str:
    """An input error in the command line's words, on one line: an ``ArgumentError``'s argument as
    its option (``--max-len must be ...``, not ``sample_names: max_len must be ...``), and the library's
    names of options in any message as the options (``our_words``)."""
    if isinstance(e, ArgumentError) and e.argument in options():
        msg = f"{flag(e.argument)} {e.problem}"
    else:
        msg = str(e)
    return " ".join(our_words(msg).splitlines()) or type(e).__name__  # one line; a quoted name's spaces as they are
