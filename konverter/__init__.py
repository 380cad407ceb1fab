"""Konverter: turn a Keras model file into one Python file that predicts with NumPy alone.

Conversion reads the file with h5py/json/zipfile; TensorFlow and Keras are never imported.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .convert import konvert  # noqa: E402
from .errors import BadModelFile, KonverterError, OutputError, UnsupportedModel  # noqa: E402

__all__ = ["konvert", "KonverterError", "BadModelFile", "UnsupportedModel", "OutputError", "__version__"]
