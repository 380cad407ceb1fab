"""Konverter: turn a Keras model file into one Python file that predicts with NumPy alone.

Conversion reads the file with h5py/json/zipfile; TensorFlow and Keras are never imported
(only `verify` without a stored reference loads Keras, and only when called).

    import konverter
    konverter.konvert("model.h5")                 # writes model.py, returns its Path
    model = konverter.load("model.h5")            # the same module, in memory: model.predict(x)
    konverter.inspect("model.h5").layers          # what is inside, and what Konverter supports
    konverter.verify("model.h5", reference="data.npz").ok

Conversion options (`options=` of konvert and load): {"weights": "float32" | "float16"}; unknown
keys or values raise UsageError. Every error is a KonverterError whose message names the file.
"""

from __future__ import annotations

import os

from .convert import OPTIONS, konvert, load, naming, require_regular_file  # noqa: E402
from .errors import (  # noqa: E402
    BadModelFile,
    KonverterError,
    KonverterWarning,
    MismatchError,
    OutputError,
    UnsupportedModel,
    UsageError,
)
from .summary import LayerInfo, ModelSummary, TensorInfo, inspect_model  # noqa: E402
from .verify import OutputCheck, VerifyReport, verify  # noqa: E402
from .version import __version__  # noqa: E402


def inspect(path: str | os.PathLike) -> ModelSummary:
    """Describe a model file without TensorFlow: format, Keras version, inputs and outputs, and every
    layer with its output shape, parameter count and whether Konverter supports it.

    Works on models Konverter cannot convert (`summary.convertible` is False, `summary.problems`
    says why). Raises BadModelFile when the file is not a readable Keras model, UsageError when
    `path` is missing or not a regular file; the message names the file.
    """
    with naming(path):
        require_regular_file(path)
        return inspect_model(path)


__all__ = [
    "konvert",
    "load",
    "OPTIONS",
    "inspect",
    "verify",
    "ModelSummary",
    "LayerInfo",
    "TensorInfo",
    "VerifyReport",
    "OutputCheck",
    "KonverterError",
    "KonverterWarning",
    "BadModelFile",
    "UnsupportedModel",
    "OutputError",
    "UsageError",
    "MismatchError",
    "__version__",
]
