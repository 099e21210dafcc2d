"""Batch invariance: a name's score is the name's alone. 3,000 distinct names (``varied_names``: 1 to 13
characters, those a block could cut at, 60 to 100 characters) are scored once, in one
``score_names`` call at one thread (``varied_scores``); then copies of them, cut at random into lists,
chunks, batches and shards, go through every way to score them: ``score_names`` and ``score_lines``
at 1 and 2 threads, ``BatchScorer`` on pandas and Arrow batches, the command with ``--shard`` (its
jsonl), Ray with 1 and 2 workers. Every copy must get the reference's float64, bit for bit (``==``,
never a tolerance): a name whose score moved with its neighbours, its chunk or the thread count fails
the test, named with both values."""

import json
import random
from collections import Counter, defaultdict

import pytest
import torch

from helpers import VOCAB, randomize_, run_main, time_limit, varied_names
from wavenet_conv import ConvModel, ModelConfig, Scorer, Stream, score_lines, score_names, scored_lines
from wavenet_conv.cluster import scorer as scorer_module
from wavenet_conv.cluster.scorer import BatchScorer
from wavenet_conv.device import torch_threads

EDGES = (3, 7, 15, 31, 63)  # lengths whose n + 1 positions tile 128, 256 and 384 rows exactly
# widths that are not multiples of 16, so that elementwise kernels' vector tails fall inside rows
WIDTHS = {
    "10-100": dict(n_embd=10, n_hidden=100),
    "gated-res-skip": dict(n_embd=10, n_hidden=100, activation="gated", residual=True, skip=True, n_inner=50,
                           n_skip=36, n_head=20),
    "glu-layernorm-res": dict(n_embd=10, n_hidden=100, activation="glu", norm="layer", residual=True, n_inner=70),
}


def difference(got, want) -> float:
    """How far apart two scores are: a float's difference, or a tuple's largest (inf: another length)."""
    if isinstance(got, float) and isinstance(want, float):
        return got - want
    if got is None or len(got) != len(want):
        return float("inf")
    return max(abs(a - b) for a, b in zip(got, want))


def check_copies(path: str, names: list[str], got: list, reference: dict) -> None:
    """Every copy's score is its name's reference, bit for bit; otherwise an error naming the path and,
    for the first few that differ, the name, both values and their difference."""
    assert len(got) == len(names), f"{path}: {len(got)} scores for {len(names)} names"
    bad = [(w, g, reference[w]) for w, g in zip(names, got) if g != reference[w]]
    shown = "; ".join(f"{w!r} (length {len(w)}): {g!r} here, {r!r} in the whole list "
                      f"(difference {difference(g, r):.3g})" for w, g, r in bad[:5])
    assert not bad, f"{path}: {len(bad)} of {len(names)} copies differ from the whole list's at one thread: {shown}"


def random_lists(rng: random.Random, names: list[str], count: int) -> list[list[str]]:
    """Lists of 1, 2 and 3 names, ``count`` of a random size up to 1,000 (drawn with replacement, so
    with duplicates, in random order) and the whole list reversed."""
    sizes = [1, 2, 3] + [rng.randint(4, 1000) for _ in range(count)]
    return [rng.choices(names, k=k) for k in sizes] + [names[::-1]]


def block_edges(rng: random.Random, names: list[str]) -> list[list[str]]:
    """For each length n of ``EDGES``, lists holding k names of n characters, whose k (n + 1) rows are
    just under, at and just over 128, 256 and 384, with up to 5 others, shuffled."""
    by_length = defaultdict(list)
    for w in names:
        by_length[len(w)].append(w)
    lists = []
    for n in EDGES:
        for k in (k + d for rows in (128, 256, 384) for k in [rows // (n + 1)] for d in (-1, 0, 1)):
            chosen = rng.sample(by_length[n], k) + rng.choices(names, k=rng.randint(0, 5))
            lists.append(rng.sample(chosen, len(chosen)))
    return lists


def copies(rng: random.Random, names: list[str]) -> list[str]:
    """Every name once and a tenth of them again, shuffled."""
    lines = names + rng.choices(names, k=len(names) // 10)
    return rng.sample(lines, len(lines))


def pieces(rng: random.Random, lines: list[str], most: int = 1000) -> list[list[str]]:
    """``lines`` cut into consecutive pieces: of 1, 2 and 3 lines first, then of random sizes up to ``most``."""
    out, start = [], 0
    for size in [1, 2, 3] + [rng.randint(1, most) for _ in range(len(lines))]:
        if start >= len(lines):
            break
        out.append(lines[start : start + size])
        start += size
    return out


@pytest.mark.parametrize("threads", [1, 2])
def test_score_names_gives_a_name_one_score_in_any_list(varied_scores, threads):
    model, names, nll, chars = varied_scores
    rng = random.Random(f"lists-{threads}")
    for i, sub in enumerate(random_lists(rng, names, 15) + block_edges(rng, names)):
        with torch_threads(threads, "test"):
            r = score_names(model, sub, VOCAB, per_char=i % 2 == 0)
        path = f"score_names at {threads} thread(s), list {i} of {len(sub)} names"
        check_copies(path, sub, r.nll.tolist(), nll)
        if r.char_nll is not None:
            check_copies(path + ", per target", sub, [tuple(r.chars(j).tolist()) for j in range(len(sub))], chars)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 777, "random"])
def test_score_lines_gives_a_name_one_score_in_any_chunk(varied_scores, chunk, threads):
    model, names, nll, _ = varied_scores
    rng = random.Random(f"chunks-{chunk}-{threads}")
    chunk = rng.randint(2, 3000) if chunk == "random" else chunk
    lines = copies(rng, names)[: 300 * chunk]  # a chunk of one line: each name alone, 300 of them
    scored = 0
    scorer = Scorer.of(model, VOCAB, threads=threads)
    for part in scored_lines(scorer, lines, Stream(chunk)):
        assert part.names == [lines[i - 1] for i in part.lines]
        path = f"score_lines at {threads} thread(s), chunk {chunk}, lines {part.lines[0]} to {part.lines[-1]}"
        check_copies(path, part.names, part.scores.nll.tolist(), nll)
        scored += len(part.names)
    assert scored == len(lines)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_batch_scorer_gives_a_name_one_score_in_any_batch(varied_scores, lecture_size_run, kind, threads, monkeypatch):
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    _, names, nll, _ = varied_scores
    rng = random.Random(f"batches-{kind}-{threads}")
    monkeypatch.setattr(scorer_module, "allotted_cpus", lambda: threads)  # a Ray worker of that many CPUs
    monkeypatch.setattr(scorer_module, "_SCORERS", {})
    scorer = BatchScorer(lecture_size_run)
    for i, batch in enumerate(pieces(rng, copies(rng, names))):
        if kind == "pandas":
            got = scorer(pd.DataFrame({"name": batch}))["nats"].tolist()
        else:
            got = scorer(pa.table({"name": batch})).column("nats").to_pylist()
        check_copies(f"BatchScorer at {threads} thread(s), {kind} batch {i} of {len(batch)} rows", batch, got, nll)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shards", [2, 3])
def test_the_command_gives_a_name_one_score_on_any_shard(varied_scores, lecture_size_run, tmp_path, monkeypatch,
                                                         capsys, shards, threads):
    """``wavenet-conv score RUN FILE --format jsonl --chars --shard K/N``: every shard's rows, joined by
    line number, carry the reference's nats and per-target nats exactly (jsonl's round-trip floats)."""
    _, names, nll, chars = varied_scores
    rng = random.Random(f"shards-{shards}-{threads}")
    lines = copies(rng, names)
    path = tmp_path / "names.txt"
    path.write_text("\n".join(lines) + "\n")
    chunk, rows = rng.randint(100, 3000), {}
    for k in range(shards):
        code, out, err = run_main(["score", lecture_size_run, path, "--format", "jsonl", "--chars", "--shard",
                                   f"{k}/{shards}", "--threads", threads, "--chunk", chunk], monkeypatch, capsys)
        assert code == 0, err
        shard = {r["line"]: r for r in map(json.loads, out.splitlines())}
        assert all((line - 1) % shards == k for line in shard), f"shard {k}/{shards} has another shard's lines"
        rows.update(shard)
    assert sorted(rows) == list(range(1, len(lines) + 1))
    assert [rows[i]["name"] for i in sorted(rows)] == lines
    path = f"wavenet-conv score --format jsonl --shard K/{shards} --threads {threads} --chunk {chunk}"
    check_copies(path, lines, [rows[i]["nats"] for i in sorted(rows)], nll)
    check_copies(path + ", char_nats", lines, [tuple(rows[i]["char_nats"]) for i in sorted(rows)], chars)


@pytest.mark.slow
@pytest.mark.parametrize("workers,cpus", [(1, 2), (2, 1)], ids=["1-worker-of-2-threads", "2-workers-of-1-thread"])
def test_ray_gives_a_name_one_score_on_any_worker(ray_cluster, varied_scores, lecture_size_run, workers, cpus):
    pa = pytest.importorskip("pyarrow")
    from wavenet_conv.cluster.job import score_dataset

    _, names, nll, _ = varied_scores
    rng = random.Random(f"ray-{workers}-{cpus}")
    lines = copies(rng, names)
    chunk = rng.randint(200, 1000)  # the rows an actor scores at a time; the blocks are of random sizes
    ds = ray_cluster.data.from_arrow([pa.table({"name": block}) for block in pieces(rng, lines, 2000)])
    with time_limit(240):
        rows = score_dataset(ds, BatchScorer(lecture_size_run), workers=workers, cpus_per_worker=cpus,
                             chunk=chunk).take_all()
    assert Counter(r["name"] for r in rows) == Counter(lines)
    check_copies(f"Ray, {workers} worker(s) of {cpus} thread(s), chunk {chunk}", [r["name"] for r in rows],
                 [r["nats"] for r in rows], nll)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("config", WIDTHS.values(), ids=WIDTHS.keys())
def test_widths_that_are_not_multiples_of_16_give_a_name_one_score(config, threads):
    torch.manual_seed(0)
    model = randomize_(ConvModel(ModelConfig(**config)), seed=4).eval()
    names = varied_names()
    nll = dict(zip(names, score_names(model, names, VOCAB).nll.tolist()))
    rng = random.Random(f"widths-{threads}")
    for i, sub in enumerate(random_lists(rng, names, 8) + block_edges(rng, names)):
        got = Scorer.of(model, VOCAB, threads=threads).names(sub).nll.tolist()
        check_copies(f"score_names on {config} at {threads} thread(s), list {i} of {len(sub)} names", sub, got, nll)


class ThreadsSeen(torch.Tensor):
    """A tensor that records the torch thread count of every in-place sigmoid run on it."""

    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "sigmoid_":
            cls.seen.append(torch.get_num_threads())
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("doubled", [False, True])
def test_the_elementwise_kernels_run_at_one_thread_whatever_the_callers_count(doubled):
    """The folded model's sigmoid (tanh is 2 sigmoid(2x) - 1 on a CPU) runs at one thread, where torch
    would split a large elementwise op mid-row between threads (the scalar tail of a thread's share
    rounds otherwise); the caller's count comes back after."""
    from wavenet_conv.inference.folded import sigmoid_, sigmoid_tanh_

    ThreadsSeen.seen = []
    with torch_threads(2, "test"):
        x = torch.randn(40_001, 17).as_subclass(ThreadsSeen)  # odd rows, a width no multiple of 16
        sigmoid_(x)
        sigmoid_tanh_(x, doubled)
        assert torch.get_num_threads() == 2
    assert ThreadsSeen.seen == [1, 1]
