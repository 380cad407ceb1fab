"""Read Keras model files with h5py (or pyfive), json and zipfile only: never TensorFlow or Keras."""

from __future__ import annotations

import os
import zipfile

from ..errors import BadModelFile
from .hdf5 import BACKEND_ERRORS, open_file, short_error
from .keras_zip import read_keras_zip
from .legacy import read_legacy
from .model import ModelFile

__all__ = ["ModelFile", "read_model", "MODEL_SUFFIXES"]

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# h5py, pyfive and zipfile report damage deep inside a file in many ways; all of them mean "bad file".
DAMAGE = BACKEND_ERRORS + (AttributeError, zipfile.BadZipFile)


def read_model(path: str | os.PathLike) -> ModelFile:
    """Read a full-model file (.h5/.hdf5 legacy HDF5, or .keras zip) into a ModelFile."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except IsADirectoryError:
        raise BadModelFile("is a directory, not a model file") from None
    except OSError as err:
        raise BadModelFile(f"cannot be read ({err.strerror or err})") from None
    if not head:
        raise BadModelFile("the file is empty")
    try:
        if head.startswith(b"PK") and zipfile.is_zipfile(path):
            return read_keras_zip(path)
        if head.startswith(b"PK"):
            raise BadModelFile("looks like a zip archive but is damaged or truncated")
        if head == HDF5_MAGIC or _hdf5_with_userblock(path):
            with open_file(path, "the file") as f:
                return read_legacy(f, path)
    except DAMAGE as err:
        raise BadModelFile(f"the file is damaged or inconsistent ({type(err).__name__}: {short_error(err)})") from None
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
