"""wavenet_conv: the makemore lecture's hierarchical character model, and the same model as dilated
causal convolutions that score a whole name in one pass."""

from .version import __version__

from .errors import (ArgumentError, CheckpointError, ConfigError, DataError, InputError, MissingExtraError,
                     RunFolderError, TrainingDiverged)
from .config import FlatConfig, ModelConfig, TrainConfig, recipe, recipe_model, recipe_teachers
from .blocks import BatchNorm, Block, SkipHead, WaveNetCore
from .conv import ConvModel
from .data import SequenceBatch, Vocab, contexts, lecture_split, load_names, parse_names, read_lines, sequences
from .lecture import from_lecture
from .tree import TreeModel
from .flat import FlatModel
from .folded import FoldedModel, fold
from .scoring import ScoreResult, score_names
from .streaming import LineScores, score_lines
from .sampling import sample_names
from .checkpoint import load_model
from .train import TrainResult, train
from .teachers import resume_recipe, train_recipe
from .export import export_onnx

__all__ = [
    "__version__",
    "InputError", "ArgumentError", "DataError", "CheckpointError", "ConfigError", "MissingExtraError", "RunFolderError",
    "TrainingDiverged",
    "ModelConfig", "TrainConfig", "recipe", "recipe_model", "recipe_teachers",
    "BatchNorm", "Block", "SkipHead", "WaveNetCore",
    "TreeModel", "ConvModel", "FlatConfig", "FlatModel", "from_lecture",
    "SequenceBatch", "Vocab", "contexts", "lecture_split", "load_names", "parse_names", "read_lines", "sequences",
    "FoldedModel", "fold", "ScoreResult", "score_names", "LineScores", "score_lines", "sample_names",
    "load_model", "TrainResult", "train", "train_recipe", "resume_recipe", "export_onnx",
]
