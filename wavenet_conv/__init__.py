"""wavenet_conv: the makemore lecture's hierarchical character model, and the same model as dilated
causal convolutions that score a whole name in one pass."""

__version__ = "0.1.0"

from .blocks import BatchNorm, Block, SkipHead, WaveNetCore
from .config import ModelConfig
from .conv import ConvModel
from .data import DataError, SequenceBatch, Vocab, contexts, lecture_split, load_names, parse_names, sequences
from .lecture import from_lecture
from .tree import FlatConfig, FlatModel, TreeModel
from .scoring import ScoreResult, score_names
from .sampling import sample_names
from .checkpoint import CheckpointError, load_model
from .train import TrainConfig, TrainResult, recipe, train
from .export import export_onnx

__all__ = [
    "__version__",
    "BatchNorm", "Block", "SkipHead", "WaveNetCore",
    "ModelConfig", "TreeModel", "ConvModel", "FlatConfig", "FlatModel", "from_lecture",
    "DataError", "SequenceBatch", "Vocab", "contexts", "lecture_split", "load_names", "parse_names", "sequences",
    "ScoreResult", "score_names", "sample_names",
    "CheckpointError", "load_model", "TrainConfig", "TrainResult", "recipe", "train", "export_onnx",
]
