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

from .convert import OPTIONS, konvert, load
from .errors import (
    BadModelFile,
    KonverterError,
    KonverterWarning,
    MismatchError,
    OutputError,
    UnsupportedModel,
    UsageError,
)
from .summary import LayerInfo, ModelSummary, TensorInfo, inspect
from .verify import OutputCheck, VerifyReport, verify
from .version import __version__

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
