"""Run storage: the checkpoint file, the run folder that holds it, and a run loaded to use.

Modules:
    checkpoint.py  Checkpoint: the one reader and writer of ``checkpoint.pt`` (atomic writes, older
                   formats converted, "finished" and "same data" defined once)
    loaded.py      load_model, LoadedRun: a run loaded to score or sample with (its model, vocabulary,
                   metadata, percentile table and Scorer), apart from the file format
    runfolder.py   RunFolder: one training at a time in a folder (its lock), and never a run
                   overwritten by mistake
    reference.py   reference_of: a run's percentile table, from its checkpoint or, for a run saved
                   without one, made from its names file on first use

Imports: the base, models and inference; nothing of training, cluster or cli (the one-way order
base < models < inference < store < training < cluster < cli, held by tests/test_layout.py). No
module outside checkpoint.py reads or writes a checkpoint's keys (tests/test_layout.py holds that too).

Reading path: checkpoint.py (what a run saves and how it is read back) -> loaded.py (a run in use)
-> runfolder.py (where it is saved, and who may write there).
"""
