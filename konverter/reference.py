"""Reference data: an .npz file with model inputs x0, x1, ... and the expected outputs y0, y1, ...
(or just `x` and `y` for a model with one input and one output), and the tolerance of comparisons.

The same layout as the fixtures in tests/fixtures (written by scripts/fixturelib.py with real Keras).
Read with allow_pickle=False: a reference file can never run code.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

# Konverter's promise with float32 weights: |got - want| <= atol + rtol * |want|.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
# float16 weights (options {"weights": "float16"}) keep 11 significant bits: each weight is off by up to
# 2**-11 of itself, and that adds up through the layers. Allow a few float16 steps (eps16 = 2**-10 ~ 9.8e-4):
# atol 2 * eps16 and rtol 10 * eps16. Every fixture fits (the worst uses 0.83 of it, the float32 bound 160 times).
FLOAT16_ATOL = 2e-3
FLOAT16_RTOL = 1e-2


def tolerance(options: dict | None) -> tuple[float, float, str]:
    """(atol, rtol, a label saying which) that fits how the weights are stored."""
    if (options or {}).get("weights") == "float16":
        label = f"tolerance for float16 weights: atol {FLOAT16_ATOL:g}, rtol {FLOAT16_RTOL:g}"
        return FLOAT16_ATOL, FLOAT16_RTOL, label
    return DEFAULT_ATOL, DEFAULT_RTOL, f"tolerance: atol {DEFAULT_ATOL:g}, rtol {DEFAULT_RTOL:g}"


@dataclass
class Reference:
    """Inputs and expected outputs, each a list of arrays with the batch axis first."""

    inputs: list  # of np.ndarray
    outputs: list  # of np.ndarray

    @property
    def samples(self) -> int:
        return int(self.inputs[0].shape[0])

    def first_sample(self) -> Reference:
        """A batch of one: the first sample of every array."""
        return Reference([a[:1] for a in self.inputs], [a[:1] for a in self.outputs])


def read_reference(path: str | os.PathLike) -> Reference:
    """Read x0.. and y0.. from an .npz; raises UsageError with one line when the file does not fit."""
    shown = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise UsageError(f"{shown}: not an .npz archive of arrays")
            arrays = {name: data[name] for name in data.files}
    except UsageError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UsageError(f"{shown}: cannot read reference data ({str(err)[:120]})") from None
    inputs = _numbered(arrays, "x", shown)
    outputs = _numbered(arrays, "y", shown)
    sizes = {int(a.shape[0]) if a.ndim else -1 for a in inputs + outputs}
    if len(sizes) != 1 or -1 in sizes or 0 in sizes:
        raise UsageError(f"{shown}: every x/y array needs the same non-empty batch axis first")
    for a in inputs + outputs:
        if a.dtype.kind not in "biuf":
            raise UsageError(f"{shown}: arrays must be numeric, found dtype {a.dtype}")
    return Reference(inputs, outputs)


def _numbered(arrays: dict, prefix: str, shown: str) -> list:
    found = []
    while f"{prefix}{len(found)}" in arrays:
        found.append(arrays[f"{prefix}{len(found)}"])
    if prefix in arrays:  # np.savez("ref.npz", x=x, y=y): one input, one output
        if found:
            raise UsageError(f"{shown}: has both {prefix} and {prefix}0; use one of the two layouts")
        return [arrays[prefix]]
    if not found:
        raise UsageError(
            f"{shown}: no array named {prefix} or {prefix}0 (expected x, y for one input and output, "
            "or x0, x1, ... inputs and y0, y1, ... outputs)"
        )
    return found
