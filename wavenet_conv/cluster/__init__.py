"""The cluster engine: scoring lists of any size on Ray (``pip install 'ray[data]' aiohttp``; Ray is
imported only when a job runs). Not named ``ray``, which would shadow the library.

Modules:
    job.py     score_dataset, score_files: the Ray job (read, score on a pool of actors, write)
    reader.py  what a job reads: text files (a file, a folder, a glob, a URI) or Parquet, checked first
    scorer.py  BatchScorer: scores a batch (pandas, pyarrow or numpy) of names; picklable, for
               anything that maps a function over batches (Ray Data, a pool of processes)
    writer.py  the Parquet writer of a job's scored blocks, counted as they are written
    counts.py  Counts: what a scoring job scored and skipped, summed over its parts (also the local
               command's closing count)

Imports: the base, models, inference, store and training; nothing of cli (the one-way order
base < models < inference < store < training < cluster < cli, held by tests/test_layout.py).

Reading path: job.py (score_files: the whole job) -> reader.py (the input) -> scorer.py (one batch,
through inference's scoring) -> writer.py (the output) -> counts.py (the closing count).
"""
