"""Where the bundled data and the bundled model live."""

import os

from .errors import CheckpointError, DataError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# the bundled model: the small recipe trained on data/world.tsv (data/build_model.py makes both files)
BUNDLED_MODEL = os.path.join(PACKAGE_DIR, "bundled", "model.pt")
BUNDLED_RECORD = os.path.join(PACKAGE_DIR, "bundled", "model.json")  # its sha256, losses and how it was made
BUNDLED = "bundled"  # the bundled model's name where a run is asked for (load_model, score, sample, train --init)


def bundled_names() -> str:
    """Path of the bundled names file: data/names.txt, shipped in the package as names.txt."""
    for path in (os.path.join(PACKAGE_DIR, "..", "data", "names.txt"), os.path.join(PACKAGE_DIR, "names.txt")):
        if os.path.exists(path):
            return os.path.normpath(path)
    raise DataError("the bundled names file is missing (wavenet_conv/names.txt): give a names file of your own "
                    "(data=PATH)")


def bundled_model() -> str:
    """Path of the bundled model, wavenet_conv/bundled/model.pt: the ``small`` recipe trained on the
    first names of data/world.tsv (``load_model()`` loads it; data/build_model.py makes it)."""
    if os.path.exists(BUNDLED_MODEL):
        return BUNDLED_MODEL
    raise CheckpointError(f"the bundled model is missing ({BUNDLED_MODEL}): give a run folder or checkpoint of your own, "
                    "or rebuild it with python data/build_model.py")


def run_path(run) -> str | os.PathLike:
    """A run folder or checkpoint asked for: ``run`` itself, or the bundled model's path for None, or
    for ``BUNDLED`` where no file or folder of that name is (a run of yours called bundled wins)."""
    return bundled_model() if run is None or (os.fspath(run) == BUNDLED and not os.path.exists(run)) else run
