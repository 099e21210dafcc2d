"""Where the bundled data lives."""

import os

from .errors import DataError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def bundled_names() -> str:
    """Path of the bundled names file: data/names.txt, shipped in the package as names.txt."""
    for path in (os.path.join(PACKAGE_DIR, "..", "data", "names.txt"), os.path.join(PACKAGE_DIR, "names.txt")):
        if os.path.exists(path):
            return os.path.normpath(path)
    raise DataError("the bundled names file is missing (wavenet_conv/names.txt): give a names file of your own "
                    "(data=PATH)")
