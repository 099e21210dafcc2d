"""wavenet_conv: the makemore lecture's hierarchical character model, and the same model as dilated
causal convolutions that score a whole name in one pass."""

from .version import __version__

from .errors import (ArgumentError, CheckpointError, ConfigError, DataError, InputError, MissingExtraError,
                     RunFolderError, TrainingDiverged)
from .models.config import FlatConfig, ModelConfig, TrainConfig, recipe, recipe_model, recipe_teachers
from .models.blocks import BatchNorm, Block, SkipHead, WaveNetCore
from .models.conv import ConvModel
from .data import SequenceBatch, Vocab, contexts, lecture_split, load_names, parse_names, read_lines, sequences
from .models.lecture import from_lecture
from .models.tree import TreeModel
from .models.flat import FlatModel
from .inference.folded import FoldedModel, fold
from .inference.scoring import Scorer, ScoreResult, score_names
from .inference.percentiles import ReferenceTable
from .inference.streaming import LineScores, Stream, score_lines, scored_lines
from .inference.sampling import sample_names
from .store.checkpoint import Checkpoint
from .store.loaded import LoadedRun, load_model
from .training.train import TrainResult, train
from .training.teachers import resume_recipe, train_recipe
from .inference.export import export_onnx

__all__ = [
    "__version__",
    "InputError", "ArgumentError", "DataError", "CheckpointError", "ConfigError", "MissingExtraError", "RunFolderError",
    "TrainingDiverged",
    "ModelConfig", "TrainConfig", "recipe", "recipe_model", "recipe_teachers",
    "BatchNorm", "Block", "SkipHead", "WaveNetCore",
    "TreeModel", "ConvModel", "FlatConfig", "FlatModel", "from_lecture",
    "SequenceBatch", "Vocab", "contexts", "lecture_split", "load_names", "parse_names", "read_lines", "sequences",
    "FoldedModel", "fold", "Scorer", "ScoreResult", "score_names", "LineScores", "Stream", "score_lines", "scored_lines",
    "sample_names",
    "ReferenceTable", "Checkpoint", "LoadedRun", "load_model", "TrainResult", "train", "train_recipe", "resume_recipe", "export_onnx",
]
