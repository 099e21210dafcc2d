"""Training: the loop, its batches and optimizer, distillation and recipes with teachers.

Modules:
    train.py        train, TrainResult, Run: one run, read top-down: the data -> the run folder -> the
                    model -> the loop -> the checkpoint (through store.checkpoint.Checkpoint)
    source.py       read_data: the names file (or a table's column) a run trains on, and its vocabulary
    minibatches.py  NameBatches (whole names packed end to end), ContextBatches (the lecture's contexts)
    optim.py        the optimizer, the run's length from its epochs, the learning-rate schedule, the
                    val reports, weight averaging, the RNG state
    progress.py     the progress line, the loss plot, Ctrl-C turned into a stop between two steps
    distill.py      a student trained on its teachers' averaged next-character distributions
    finetune.py     a run that starts from a trained model (init=RUN), its vocabulary extended
    teachers.py     train_recipe, resume_recipe: a recipe's teachers trained first, then the student

Imports: the base, models, inference and store; nothing of cluster or cli (the one-way order
base < models < inference < store < training < cluster < cli, held by tests/test_layout.py).

Reading path: train() in train.py, top to bottom (data, run folder, model, the loop, checkpoint);
from the loop into minibatches.py, optim.py and progress.py; distill.py when a run has teachers;
finetune.py when it starts from a trained model;
teachers.py, which calls train() once per teacher and once for the student.
"""
