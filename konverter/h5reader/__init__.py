"""Read Keras model files with h5py (or pyfive), json and zipfile only: never TensorFlow or Keras.

The HDF5 library runs in a separate reader process (see `isolate`): a file that crashes it, makes it
loop or makes it allocate without end costs that process, never the conversion.
"""

from __future__ import annotations

import os
import zipfile
from typing import Callable, Iterator

import numpy as np

from ..errors import BadModelFile
from . import isolate, memory
from .hdf5 import BACKEND_ERRORS, WeightSet, open_file, require_backend, short_error
from .keras_zip import read_assets, read_keras_zip
from .legacy import read_legacy
from .model import ModelFile
from .text import TextBudget

__all__ = ["ModelFile", "read_model", "MODEL_SUFFIXES"]

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# h5py, pyfive and zipfile report damage deep inside a file in many ways; all of them mean "bad file".
DAMAGE = BACKEND_ERRORS + (AttributeError, zipfile.BadZipFile)
# Names may repeat this many times the file's size in characters (plus a floor), see TextBudget.
TEXT_PER_BYTE = 2
TEXT_FLOOR = 16 << 20


def read_model(path: str | os.PathLike) -> ModelFile:
    """Read a full-model file (.h5/.hdf5 legacy HDF5, or .keras zip) into a ModelFile."""
    path = os.fspath(path)
    _kind(path)  # the usual refusals (empty, a folder, not a model file) without starting a reader
    require_backend()  # said here: the reader process's stderr goes nowhere
    model = isolate.read(path) if isolate.wanted() else read_here(path)
    # A .keras archive's assets (a vocabulary) are plain zip members: read here, with zipfile only.
    model.assets = read_assets(path, model.asset_folders)
    return model


def read_here(path: str) -> ModelFile:
    """Read in this process (where the reader process cannot be used, and inside it)."""
    arrays: dict = {}

    def plan(need: int, here: int) -> None:
        memory.require(need)

    def deliver(number: int, dtype: np.dtype, shape: tuple, pieces: Iterator[np.ndarray]) -> None:
        arrays[number] = assemble(dtype, shape, pieces)

    model = load(path, plan, deliver)
    model.weights = {key: [arrays[n] for n in numbers] for key, numbers in model.weights.items()}
    return model


def assemble(dtype: np.dtype, shape: tuple, pieces: Iterator[np.ndarray]) -> np.ndarray:
    """One array from its pieces in C order."""
    try:
        out = np.empty(shape, dtype)
    except MemoryError:
        need = memory.human(memory.nbytes(dtype, shape))
        raise BadModelFile(
            f"reading its weights needs more memory than is available ({need} for one of them)"
        ) from None
    flat = out.reshape(-1)
    filled = 0
    for piece in pieces:
        flat[filled : filled + piece.size] = piece
        filled += piece.size
    if filled != flat.size:
        raise BadModelFile(f"a weight of shape {shape} read back {filled} of its {flat.size} values")
    return out


def load(path: str, plan: Callable, deliver: Callable, progress: Callable = lambda: None) -> ModelFile:
    """Read the model's structure, then its weights: `plan(need, here)` once the distinct weights are
    known (bytes in all, bytes held at once while reading), then `deliver(number, dtype, shape, pieces)`
    for each. The ModelFile's weights are those numbers."""

    def read_weights(weights: WeightSet) -> None:
        weights.check()
        plan(weights.need(), weights.held())
        weights.read(deliver, progress)

    try:
        if _kind(path) == "zip":
            return read_keras_zip(path, read_weights, progress)
        budget = TextBudget(TEXT_PER_BYTE * os.path.getsize(path) + TEXT_FLOOR)
        with open_file(path, "the file") as f:
            weights = WeightSet(f, os.path.getsize(path), progress)
            model = read_legacy(f, path, weights, budget)
            read_weights(weights)
            return model
    except DAMAGE as err:
        if memory.out_of_memory(err):
            raise BadModelFile(memory.exhausted(os.path.getsize(path))) from None
        raise BadModelFile(f"the file is damaged or inconsistent ({type(err).__name__}: {short_error(err)})") from None


def _kind(path: str) -> str:
    """ "zip" or "hdf5", or the refusal of anything else."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except IsADirectoryError:
        raise BadModelFile("is a directory, not a model file") from None
    except OSError as err:
        raise BadModelFile(f"cannot be read ({err.strerror or err})") from None
    if not head:
        raise BadModelFile("the file is empty")
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise BadModelFile("looks like a zip archive but is damaged or truncated")
        return "zip"
    if head == HDF5_MAGIC or _hdf5_with_userblock(path):
        return "hdf5"
    raise BadModelFile("not a Keras model file (neither HDF5 nor a .keras zip archive)")


def _hdf5_with_userblock(path: str) -> bool:
    """HDF5 signatures may also sit at offsets 512, 1024, 2048, ... (a user block)."""
    try:
        with open(path, "rb") as handle:
            offset = 512
            while True:
                handle.seek(offset)
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return False
                if chunk == HDF5_MAGIC:
                    return True
                offset *= 2
    except OSError:
        return False
