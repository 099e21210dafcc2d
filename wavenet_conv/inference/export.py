"""Export a model for serving, as ONNX: the conv form's one-graph forward, in eval mode.

    export_onnx(model, "model.onnx")            # pip install onnx onnxscript onnxruntime

The ONNX model has one input, ``tokens``: int64 (B, T), each row ``[0, c1, ..., cn]`` right-padded
with any token id, and one output, ``logits``: float32 (B, T, V), row b position t being the logits of
the token that follows ``tokens[b, :t+1]``. B and T are dynamic. BatchNorm uses its running statistics.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path

import torch

from ..models.blocks import WaveNetCore
from ..models.conv import ConvModel
from ..errors import DataError, MissingExtraError, install_hint

ONNX_PACKAGES = ("onnx", "onnxscript")
INSTALL_HINT = install_hint("onnx")


def check_onnx_installed() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        verb = 'is' if len(missing) == 1 else 'are'
        raise MissingExtraError(f"ONNX export needs {' and '.join(missing)}, which {verb} not installed: {INSTALL_HINT}")


def export_onnx(model: WaveNetCore, path: str | os.PathLike) -> Path:
    """Write ``model`` (a ConvModel, or a TreeModel: the same parameters) as an ONNX file at ``path``.

    The export works on a float32 CPU copy in eval mode (``ConvModel.from_model``: the parameters,
    the buffers and BatchNorm's ``eps`` and momentum); ``model`` itself is not changed. Raises
    ``MissingExtraError`` (an ``ImportError``) when the ONNX packages are not installed.
    """
    if not isinstance(model, WaveNetCore):
        raise TypeError(f"export_onnx: expected a ConvModel or TreeModel, got {type(model).__name__}")
    check_onnx_installed()
    path = Path(path)
    if path.is_dir():  # before the export's seconds of work
        raise DataError(f"{path}: is a folder, not an ONNX file to write")
    if not path.parent.is_dir():
        raise DataError(f"{path}: no folder {path.parent} to write it in")
    conv = ConvModel.from_model(model).to("cpu", torch.float32).eval()  # BatchNorm's eps and momentum too
    tokens = torch.zeros(2, 3, dtype=torch.long)  # (B, T): an example; the graph is traced for any B and T
    tokens[:, 1:] = 1
    dims = {0: torch.export.Dim("B"), 1: torch.export.Dim("T")}
    exporter_log = logging.getLogger("torch.onnx")  # it logs the optional ops it skips (torchvision's)
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(conv, (tokens,), input_names=["tokens"], output_names=["logits"],
                                        dynamic_shapes={"idx": dims}, dynamo=True, external_data=False,
                                        verbose=False)
    finally:
        exporter_log.setLevel(level)
    program.save(str(path))
    return path
