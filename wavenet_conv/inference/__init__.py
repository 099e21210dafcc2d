"""Inference: a trained model scoring names, streams and files, sampling names, compared
and exported. Every path runs the folded model (BatchNorm folded into the weights, one GEMM and a
shifted add per layer).

Modules:
    folded.py     FoldedModel, fold: the eval-mode model rearranged for speed; the one computation under
                  scoring and the cached sampler
    scoring.py    Scorer, score_names, ScoreResult: the one scorer under every path (built once: model,
                  vocabulary, method, folded model, percentile table, threads); exact per-name nats
    streaming.py  scored_lines, score_lines, LineScores: any number of lines, a chunk at a time, in flat memory
    sampling.py   sample_names: the cached sampler and the lecture's window sampler
    percentiles.py  ReferenceTable, reference_table, percentiles: a run's held-out nats per target by
                  length group, and each name's percentile in it
    bucketed.py   scoring for GPUs: names in a few fixed (B, T) shapes, each one CUDA graph
    runners.py    the block runners of bucketed.py (folded or forward, eager or graphed)
    compare.py    compare_forms, race_forms: the two forms' logits and speed side by side
    export.py     export_onnx: the conv form as one ONNX graph, for serving

Imports: the base and models only; nothing of store, training, cluster or cli (the one-way order
base < models < inference < store < training < cluster < cli, held by tests/test_layout.py).

Reading path: folded.py (the fast computation) -> scoring.py (Scorer: encode, group by length,
score each group) -> streaming.py (the same on a stream, a chunk at a time) -> sampling.py. bucketed.py
and runners.py are the GPU's way to the same numbers; compare.py and export.py stand on the side.
"""
