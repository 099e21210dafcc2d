"""The library's own errors: input that cannot be used. Each message is one line naming what is at
fault (the file and line, the checkpoint, the option).

The command line reports these (and ``OSError``) as ``wavenet-conv CMD: error: MESSAGE``, exit status
2. Any other exception is a bug in the library and surfaces with its traceback.
"""


class InputError(ValueError):
    """Base class: a names file, checkpoint or configuration that cannot be used."""


class DataError(InputError):
    """Bad input data: the message names the file, line, character or index at fault."""


class CheckpointError(InputError):
    """A checkpoint that cannot be used: missing, corrupt, truncated, incompatible."""


class ConfigError(InputError):
    """A configuration that cannot work: a field out of range, options that contradict each other."""


class MissingExtraError(InputError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""
