"""The library's own errors. Each message is one line naming what is at fault (the file and line, the
checkpoint, the option, the step).

A caller's mistake is an ``InputError``: bad data (``DataError``), a checkpoint (``CheckpointError``),
a configuration (``ConfigError``), a run folder (``RunFolderError``), an argument of a library function
(``ArgumentError``, which names the function and the argument), a missing optional dependency
(``MissingExtraError``). The command line reports an ``InputError`` (and ``OSError``) as
``wavenet-conv CMD: error: MESSAGE``, exit status 2, and ``TrainingDiverged`` the same way with exit
status 3; it checks nothing that the library checks. Any other exception is a bug in the library and
surfaces with its traceback.

A message speaks Python, never the command line's options: it names an argument as ``ArgumentError``
does, a config field as ``TrainConfig.steps``, and another argument to pass as ``name=VALUE``
(``force=True``, ``out=PATH``, ``resume=RUN``). The command line alone says each as the option a user
types (``cli.parser.in_our_words``).
"""

from __future__ import annotations


class InputError(ValueError):
    """Base class: a names file, checkpoint or configuration that cannot be used."""


class DataError(InputError):
    """Bad input data: the message names the file, line, character or index at fault."""


class CheckpointError(InputError):
    """A checkpoint that cannot be used: missing, corrupt, truncated, incompatible."""


class ConfigError(InputError):
    """A configuration that cannot work: a field out of range, options that contradict each other."""


class RunFolderError(InputError):
    """A run folder that training cannot use: it holds another run or other files, another training
    holds its lock, or it cannot be written."""


class ArgumentError(InputError):
    """A bad value for an argument of a library function: ``who`` (the function), ``argument`` (the
    parameter's name) and ``problem`` (what is wrong, with the value given). The command line words it
    with its own option for ``argument``."""

    def __init__(self, who: str, argument: str, problem: str):
        super().__init__(f"{who}: {argument} {problem}")
        self.who, self.argument, self.problem = who, argument, problem


class MissingExtraError(InputError, ImportError):
    """An optional dependency is not installed; the message says how to install it (``install_hint``)."""


# each optional extra's packages, from the package index (wavenet_conv itself is installed from a
# checkout or its wheel, where the extra's name works: pip install -e '.[ray]')
EXTRAS = {"plot": "matplotlib", "onnx": "onnx onnxscript onnxruntime", "ray": "'ray[data]' aiohttp"}


def install_hint(extra: str) -> str:
    """How to install an optional extra: its packages, and the extra's name for a checkout."""
    return f"pip install {EXTRAS[extra]} (in a checkout: pip install -e '.[{extra}]')"


class TrainingDiverged(FloatingPointError):
    """A training loss (or the weights) became non-finite. The message names the first non-finite step
    and the last good checkpoint, which stays on disk; nothing non-finite is ever saved.

    step: the first step whose loss is non-finite (1-based, as the progress line counts), or the step
    after which the weights were found non-finite. saved_step: the step of the checkpoint that stays
    (None: none was written)."""

    def __init__(self, message: str, step: int, saved_step: int | None):
        super().__init__(message)
        self.step, self.saved_step = step, saved_step
