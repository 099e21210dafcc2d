"""Run a list of configurations and write one results table (config, params, train, val, time).

    python experiments/tune.py experiments/configs/default_recipe.json names.txt \\
        --out experiments/results/default_recipe.md --threads 1

The list is a JSON file: ``[{"name": ..., <ModelConfig fields>, <TrainConfig fields>}, ...]``; a
``"recipe"`` key picks the base recipe (default: "default"), any other key overrides it. A top-level
``{"base": {...}, "runs": [...]}`` applies ``base`` to every run. Only the dev ("val") split is
evaluated: tune on dev, report test once for the final choice (``--test``). Rows are written as they
finish, so an interrupted search keeps its results; the same rows go to ``<out>.jsonl``.

Distillation: a run's ``"teachers"`` key lists the runs it is distilled from, by name (runs of the
list, kept under ``--runs-dir``, which it then needs) or by path. A run whose folder under
``--runs-dir`` holds a finished run is not trained again: its row is read from its metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from wavenet_conv.models.config import ModelConfig, TrainConfig, recipe
from wavenet_conv.errors import InputError
from wavenet_conv.training.train import train

MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"recipe"}


# the recipes as the search ran them, where they have changed since: the default was then 1,600 steps
# (8 epochs of the bundled names) at weight decay 0.1, with the last weights kept
SEARCHED_WITH = {"default": dict(steps=1600, weight_decay=0.1, keep_best=False)}


def load_runs(path: str) -> list[dict]:
    with open(path) as f:
        spec = json.load(f)
    if isinstance(spec, dict):
        return [{**spec.get("base", {}), **run} for run in spec["runs"]]
    return spec


def split_run(run: dict) -> tuple[str, ModelConfig, TrainConfig, list]:
    """A run's dict -> (name, model config, train config, teachers); unknown keys are an error."""
    unknown = set(run) - MODEL_KEYS - TRAIN_KEYS - {"name", "recipe", "teachers"}
    if unknown:
        raise ValueError(f"run {run.get('name', run)!r}: unknown keys {sorted(unknown)}")
    model = ModelConfig(**{k: v for k, v in run.items() if k in MODEL_KEYS})
    name = run.get("recipe", "default")
    fields = {**SEARCHED_WITH.get(name, {}), **{k: v for k, v in run.items() if k in TRAIN_KEYS}}
    if "epochs" in run:  # a run in epochs is not one of the search's step counts
        fields.pop("steps", None)
    tc = recipe(name, **fields)
    name = run.get("name") or ", ".join(f"{k}={v}" for k, v in run.items())
    return name, model, tc, run.get("teachers", [])


def teacher_paths(teachers: list, runs_dir: str | None) -> list[str]:
    """Each teacher as a path: a name of a run kept under ``runs_dir``, or a path as it is."""
    if teachers and not runs_dir and not all(os.path.isdir(t) for t in teachers):
        raise ValueError(f"teachers {teachers}: runs named in the list need --runs-dir")
    return [t if os.path.isdir(t) or not runs_dir else os.path.join(runs_dir, t) for t in teachers]


def run_once(name, model, tc, teachers, data, runs_dir) -> dict:
    """Train one run (or read a finished one's metrics from its folder) and return its metrics."""
    out = os.path.join(runs_dir, name) if runs_dir else None
    if out and os.path.exists(os.path.join(out, "metrics.json")):
        print(f"== {name}: finished in {out}, not trained again", flush=True)
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f)
    print(f"== {name}: {describe(model, tc)}" + (f"; teachers {', '.join(teachers)}" if teachers else ""), flush=True)
    return train(model, tc, data=data, out=out, progress=False, threads=None,
                 teachers=teacher_paths(teachers, runs_dir) or None).metrics


def describe(model: ModelConfig, tc: TrainConfig) -> str:
    """The config in a few words: the model fields that differ from the lecture's model, then the
    recipe's main knobs and any other train fields that differ from the recipe."""
    base_m, base_t = ModelConfig(), recipe(tc.recipe)
    m = [f"{k}={v}" for k, v in model.to_dict().items() if v != getattr(base_m, k)]
    main = ("steps", "batch_size", "lr", "weight_decay")
    if tc.distill:
        main += ("distill", "temperature")
    skip = main + ("eval_test", "eval_every", "checkpoint_every", "form", "recipe")
    t = [f"{k}={getattr(tc, k)}" for k in main]
    t += [f"{k}={v}" for k, v in tc.to_dict().items() if v != getattr(base_t, k) and k not in skip]
    return f"{tc.recipe} {tc.form}" + (f"; {' '.join(m)}" if m else "") + f"; {' '.join(t)}"


def row(name: str, m: dict) -> str:
    """One table row from a run's metrics."""
    model = ModelConfig.from_dict(m["model_config"])
    tc = TrainConfig.from_dict(m["train_config"])
    test = f"{m['test_loss']:.4f}" if m.get("test_loss") is not None else "–"
    taught = "; teachers " + ", ".join(Path(t["path"]).parent.name for t in m["teachers"]) if m.get("teachers") else ""
    return (f"| {name} | {describe(model, tc)}{taught} | {m['params']:,} | {m['steps']:,} | {m['train_loss']:.4f} | "
            f"{m['val_loss']:.4f} | {test} | {m['train_seconds']:.0f} s |\n")


HEADER = "| run | config | params | steps | train | val | test | time |\n|---|---|---:|---:|---:|---:|---:|---:|\n"


def render(jsonl: str) -> str:
    """The table of a results .jsonl (to re-render after a change of ``describe``)."""
    with open(jsonl) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    return HEADER + "".join(row(r["name"], r) for r in runs)


def main(argv=None):
    if argv is None and sys.argv[1:2] == ["--render"]:
        argv = sys.argv[1:]
    if argv and argv[0] == "--render":  # python experiments/tune.py --render results.jsonl
        print(render(argv[1]), end="")
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", help="JSON list of runs")
    p.add_argument("data", help="names file")
    p.add_argument("--out", required=True, help="markdown table to write")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--test", action="store_true", help="also report the test loss (final choices only)")
    p.add_argument("--only", help="comma-separated run names to run")
    p.add_argument("--runs-dir", help="also write each run's folder under this directory")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [split_run(r) for r in load_runs(args.configs)]  # validate everything before training
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r[0] in keep]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(f"Runs of `{args.configs}` on `{os.path.basename(args.data)}`, lecture split, "
                f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {time.strftime('%Y-%m-%d %H:%M')}.\n\n")
        f.write(HEADER)
    open(os.path.splitext(args.out)[0] + ".jsonl", "w").close()
    for name, model, tc, teachers in runs:
        tc = TrainConfig.from_dict({**tc.to_dict(), "eval_test": args.test, "checkpoint_every": 0 if not args.runs_dir else tc.checkpoint_every})
        m = run_once(name, model, tc, teachers, args.data, args.runs_dir)
        with open(args.out, "a") as f:
            f.write(row(name, m))
        with open(os.path.splitext(args.out)[0] + ".jsonl", "a") as f:
            f.write(json.dumps({"name": name, **m}) + "\n")
        print(row(name, m), end="", flush=True)


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a bad list, option or run folder: one line, as the command line does
        sys.exit(f"tune.py: error: {e}")
