"""The ``wavenet-conv`` command: train, score, sample.

    wavenet-conv train                      # the lecture's model, conv form, default recipe, data/names.txt
    wavenet-conv train --recipe lecture     # SPEC section 2: tree form, SGD, 200k steps
    wavenet-conv score runs/RUN names.txt   # nats per name; '-' reads stdin
    wavenet-conv sample runs/RUN -n 20 --seed 1

Every user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .checkpoint import CheckpointError, load_model
from .config import ACTIVATIONS, NORMS, RESIDUAL_INPUTS, ModelConfig
from .data import DataError, load_names, parse_names
from .train import FORMS, RECIPES, recipe, resolve_device, train

PROG = "wavenet-conv"


class UserError(Exception):
    """An error to report in one line, exit status 2."""


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
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def nonnegative_int(s: str) -> int:
    return 0 if s == "0" else positive_int(s)


# ----------------------------------------------------------------------------- parser


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block): ``prog cmd: error: message``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train, score and sample the makemore WaveNet character model.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,score,sample}")

    t = sub.add_parser("train", help="train a model on a names file (lecture split) and write a run folder",
                       description="Train on a names file with the lecture's 80/10/10 split; writes checkpoint.pt, "
                                   "metrics.json and loss.png into the run folder.")
    t.add_argument("--data", help="names file, one per line (default: the bundled data/names.txt)")
    t.add_argument("--out", help="run folder (default: runs/<date>-<time>-<form>)")
    t.add_argument("--resume", metavar="RUN", help="continue a run folder (or checkpoint) where it stopped")
    t.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                   help="default: conv form, whole names, AdamW; lecture: SPEC's tree form, SGD, 200k steps")
    m = t.add_argument_group("model (default: the lecture's, 76,579 parameters)")
    m.add_argument("--form", choices=FORMS, help="conv (whole names; default recipe) or tree (contexts; lecture recipe)")
    m.add_argument("--n-embd", type=positive_int, help="embedding width (24)")
    m.add_argument("--n-hidden", type=positive_int, help="layer width (128)")
    m.add_argument("--n-layers", "--depth", type=positive_int, dest="n_layers", help="layers; context 2**depth (3)")
    m.add_argument("--activation", choices=ACTIVATIONS, help="tanh (lecture), gated (WaveNet) or glu")
    m.add_argument("--norm", choices=NORMS, help="batch (lecture), layer or none")
    m.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None, help="residual connections")
    m.add_argument("--residual-input", choices=RESIDUAL_INPUTS, help="the first layer's residual (project)")
    m.add_argument("--skip", action=argparse.BooleanOptionalAction, default=None, help="WaveNet skip connections and head")
    m.add_argument("--n-inner", type=positive_int, help="gate/dilation channels (with --residual)")
    m.add_argument("--n-skip", type=positive_int, help="skip channels (with --skip)")
    m.add_argument("--n-head", type=positive_int, help="skip head width (with --skip)")
    o = t.add_argument_group("optimization (default: the recipe's)")
    o.add_argument("--steps", type=positive_int)
    o.add_argument("--batch-size", type=positive_int, help="names (conv) or contexts (tree) per step")
    o.add_argument("--lr", type=positive_float, help="peak learning rate")
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--warmup", type=nonnegative_int)
    o.add_argument("--seed", type=int, default=42, help="seed of the init and the batch order; the samples' (42)")
    o.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="auto: cuda when available (default)")
    o.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    o.add_argument("--checkpoint-every", type=nonnegative_int, help="steps between checkpoints (0: end only)")
    o.add_argument("--eval-every", type=nonnegative_int, help="log val loss every N steps (0: end only)")
    t.add_argument("--samples", type=nonnegative_int, default=20, help="names to sample at the end (20)")
    t.add_argument("--quiet", action="store_true", help="no progress line")

    s = sub.add_parser("score", help="nats per name under a trained model",
                       description="One line per name: name, total nats, nats per character (end token included).")
    s.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    s.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="names, one per line ('-' or none: stdin)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="auto: cuda when available (default)")

    g = sub.add_parser("sample", help="sample names from a trained model (cached generation)")
    g.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    g.add_argument("-n", "--num", type=positive_int, default=20, help="how many (20)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: unseeded)")
    g.add_argument("--temperature", type=positive_float, default=1.0)
    g.add_argument("--top-k", type=positive_int, default=None)
    g.add_argument("--prefix", default="", help="every sample starts with these characters")
    g.add_argument("--max-len", type=positive_int, default=64, help="longest sample, in characters (64)")
    g.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="auto: cuda when available (default)")
    return p


# ----------------------------------------------------------------------------- commands


MODEL_OPTIONS = ("n_embd", "n_hidden", "n_layers", "activation", "norm", "residual", "residual_input", "skip",
                 "n_inner", "n_skip", "n_head")


def model_config_from(args) -> ModelConfig:
    return ModelConfig(**{k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None})


def default_run_dir(form: str) -> Path:
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{form}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def print_samples(words, marks):
    for w, in_train in zip(words, marks):
        tag = "" if in_train is None else ("  (in training set)" if in_train else "  (new)")
        print(f"{w}{tag}")


def cmd_train(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(form=args.form, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     weight_decay=args.weight_decay, warmup=args.warmup, seed=args.seed, device=args.device,
                     checkpoint_every=args.checkpoint_every, eval_every=args.eval_every)
    tc = recipe(args.recipe, **overrides)
    resolve_device(tc.device)
    if args.resume:
        given = [k for k in MODEL_OPTIONS + ("form", "steps", "batch_size", "lr", "weight_decay", "warmup")
                 if getattr(args, k) is not None] + (["recipe"] if args.recipe != "default" else [])
        if given:
            raise UserError(f"--resume continues a run with its own settings; drop --{given[0].replace('_', '-')}")
        run_dir = Path(args.out) if args.out else None
        result = train(config=tc, data=args.data, out=run_dir, resume=args.resume, progress=not args.quiet and None)
    else:
        run_dir = Path(args.out) if args.out else default_run_dir(tc.form)
        result = train(model_config_from(args), tc, data=args.data, out=run_dir, progress=not args.quiet and None)
    print(f"run folder: {result.run_dir}")
    if args.samples:
        from .sampling import sample_names

        gen = torch.Generator(device=next(result.model.parameters()).device).manual_seed(args.seed)
        words = sample_names(result.model.eval(), args.samples, result.vocab, generator=gen)
        train_set = set(result.train_words)
        print(f"{args.samples} samples:")
        print_samples(words, [w in train_set for w in words])


def read_names(file: str, vocab) -> list[str]:
    return parse_names(sys.stdin.read(), "<stdin>", vocab) if file == "-" else load_names(file, vocab)


def cmd_score(args):
    from .scoring import score_names

    loaded = load_model(args.run, device=resolve_device(args.device))
    words = read_names(args.file, loaded.vocab)
    r = score_names(loaded.model, words, loaded.vocab)
    nll = [float(v) for v in r.nll]
    counts = [int(n) for n in r.n_targets]
    if args.json:
        rows = [{"name": w, "nats": v, "targets": n, "nats_per_char": v / n} for w, v, n in zip(words, nll, counts)]
        summary = {"names": len(words), "targets": sum(counts), "nats": sum(nll), "mean_loss": float(r.mean_loss),
                   "bits_per_char": float(r.bits_per_char)}
        json.dump({"checkpoint": str(loaded.path), "names": rows, "summary": summary}, sys.stdout, indent=1)
        print()
        return
    width = max(len(w) for w in words)
    for w, v, n in zip(words, nll, counts):
        print(f"{w:<{width}}  {v:8.4f}  {v / n:.4f}")
    print(f"{len(words)} names, {sum(counts)} characters (end tokens included): {sum(nll):.4f} nats, "
          f"{float(r.mean_loss):.4f} nats/char, {float(r.bits_per_char):.4f} bits/char")


def cmd_sample(args):
    from .sampling import sample_names

    device = resolve_device(args.device)
    loaded = load_model(args.run, device=device)
    if args.prefix:
        parse_names(args.prefix, "--prefix", loaded.vocab)
    gen = None if args.seed is None else torch.Generator(device=device).manual_seed(args.seed)
    words = sample_names(loaded.model, args.num, loaded.vocab, generator=gen, temperature=args.temperature,
                         top_k=args.top_k, prefix=args.prefix, max_len=args.max_len)
    print_samples(words, [loaded.in_training_set(w) for w in words])


COMMANDS = {"train": cmd_train, "score": cmd_score, "sample": cmd_sample}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (UserError, DataError, CheckpointError, ValueError, OSError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG} {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
