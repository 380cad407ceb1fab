"""Careful HDF5 access: hard links only, no external storage, sizes checked before reading.

Two backends: h5py (libhdf5) normally; pyfive (pure Python, `pip install "keras-konverter-numpy[pyfive]"`)
where h5py cannot be installed, e.g. on phones. KONVERTER_FORCE_PYFIVE=1 selects pyfive (used by CI to
run the whole suite in both modes). Both get the same refusals.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
import sys

import numpy as np

from ..errors import BadModelFile
from .text import shown

h5py = pyfive = None
if os.environ.get("KONVERTER_FORCE_PYFIVE") != "1":
    try:
        import h5py
    except ImportError:  # phones and other machines where h5py has no wheel
        pass
if h5py is None:
    try:
        import pyfive
    except Exception:  # missing, or broken (e.g. next to an incompatible NumPy): say "no reader" below
        pass

BACKEND = "h5py" if h5py is not None else ("pyfive" if pyfive is not None else None)
_announced = False

# One weight array larger than this is refused before anything is allocated.
MAX_ARRAY_BYTES = 4 << 30
# Compressed or sparsely written (fill-value) datasets may declare far more than they store:
# reading one may allocate at most this many times its stored bytes (plus a small allowance),
# so memory stays proportional to the file's size whatever it declares.
MAX_EXPANSION = 100
SMALL_ARRAY_BYTES = 1 << 20
# What each backend raises for damaged structures (pyfive parses with struct and asserts).
BACKEND_ERRORS: tuple = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, EOFError)
BACKEND_ERRORS += (ArithmeticError, MemoryError, RecursionError, AssertionError, struct.error)
if pyfive is not None:
    BACKEND_ERRORS += (NotImplementedError, pyfive.core.InvalidHDF5File)
EXTERNAL_FILES_MESSAGE = 0x0007  # HDF5 "external data files" object header message
UNDEFINED_ADDRESS = 0xFFFFFFFFFFFFFFFF


def require_backend() -> str:
    """The HDF5 backend to use; says once on stderr when it is the pyfive fallback."""
    global _announced
    if BACKEND is None:
        raise BadModelFile(
            "reading HDF5 model files needs h5py (pip install h5py), or pyfive where h5py cannot be "
            'installed (pip install "keras-konverter-numpy[pyfive]")'
        )
    if BACKEND == "pyfive" and not _announced and os.environ.get("KONVERTER_FORCE_PYFIVE") != "1":
        _announced = True
        print("konverter: h5py is not installed; reading HDF5 with pyfive (pure Python, slower)", file=sys.stderr)
    return BACKEND


def is_group(obj) -> bool:
    if BACKEND == "h5py":
        return isinstance(obj, h5py.Group)
    return isinstance(obj, pyfive.Group)


def _is_dataset(obj) -> bool:
    if BACKEND == "h5py":
        return isinstance(obj, h5py.Dataset)
    return isinstance(obj, pyfive.Dataset)


def _link_kind(group, name: str) -> str | None:
    """The link `name` in `group`: "hard", another link class name (refused), or None when absent."""
    if BACKEND == "h5py":
        link = group.get(name, getlink=True)
        if link is None:
            return None
        return "hard" if isinstance(link, h5py.HardLink) else type(link).__name__
    links = group._links  # pyfive: name -> address (hard link) or target path (soft link)
    if name not in links:
        return None
    target = links[name]
    return "hard" if isinstance(target, int) and not isinstance(target, bool) else "SoftLink"


def _open_child(group, name: str, path: str):
    if BACKEND == "pyfive":
        # Check the object header before pyfive builds the object: external data files are never read.
        objects = group.file._get_dataobjects(group._links[name])
        if objects.find_msg_type(EXTERNAL_FILES_MESSAGE):
            raise BadModelFile(f"weight {shown(path)} uses external or virtual storage, which is refused")
    return group[name]


def _child(group, name: str, path: str):
    """`group[name]`, refusing soft and external links."""
    try:
        kind = _link_kind(group, name)
        if kind is None:
            raise BadModelFile(f"missing HDF5 object {shown(path)}")
        if kind != "hard":
            raise BadModelFile(f"HDF5 object {shown(path)} is a {kind}; links are not followed")
        return _open_child(group, name, path)
    except BACKEND_ERRORS as err:
        # pyfive cannot even list a group holding an external link: that surfaces here too.
        raise BadModelFile(f"HDF5 object {shown(path)} is damaged or holds a link ({short_error(err)})") from None


def child(group, name: str, path: str = ""):
    """`group[name]` through a hard link only (soft/external links refused), or None when absent."""
    try:
        present = name in group
    except BACKEND_ERRORS as err:
        raise BadModelFile(f"HDF5 group {shown(path or name)} is damaged ({short_error(err)})") from None
    return _child(group, name, path or name) if present else None


def keys(group, path: str) -> list:
    try:
        return list(group.keys())
    except BACKEND_ERRORS as err:
        raise BadModelFile(f"HDF5 group {shown(path)} is damaged ({short_error(err)})") from None


def walk(group, path: str):
    """Follow a '/'-separated path below `group` through hard links only."""
    obj = group
    done = []
    for part in path.split("/"):
        if not part:
            continue
        if not is_group(obj):
            raise BadModelFile(f"HDF5 path {shown('/'.join(done))} is not a group")
        done.append(part)
        obj = _child(obj, part, "/".join(done))
    return obj


def _storage(ds, nbytes: int, path: str) -> int:
    """Bytes the file really stores for a dataset (checked against what it declares)."""
    if BACKEND == "h5py":
        if ds.is_virtual or ds.external:
            raise BadModelFile(f"weight {shown(path)} uses external or virtual storage, which is refused")
        return ds.id.get_storage_size()
    layout = ds.id.layout_class
    if layout == 0:  # compact: inside the object header
        return nbytes
    if layout == 1:
        return 0 if ds.id.data_offset == UNDEFINED_ADDRESS else nbytes
    if layout == 2:
        return sum(int(ds.id.get_chunk_info(i).size) for i in range(ds.id.get_num_chunks()))
    raise BadModelFile(f"weight {shown(path)} uses external or virtual storage, which is refused")


def read_array(group, path: str) -> np.ndarray:
    """Read one weight dataset as a NumPy array, refusing anything unusual about it."""
    ds = walk(group, path)
    if not _is_dataset(ds):
        raise BadModelFile(f"weight {shown(path)} is not a dataset")
    try:
        dtype = np.dtype(ds.dtype)
        shape = ds.shape
    except BACKEND_ERRORS as err:
        raise BadModelFile(f"weight {shown(path)} is damaged ({short_error(err)})") from None
    bfloat16 = _is_bfloat16(ds)
    if not bfloat16 and dtype.kind not in "fiub":
        raise BadModelFile(f"weight {shown(path)} has non-numeric dtype {dtype}")
    if shape is None or any(d < 0 for d in shape):
        raise BadModelFile(f"weight {shown(path)} has no valid shape")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise BadModelFile(f"weight {shown(path)} declares {nbytes} bytes, over the {MAX_ARRAY_BYTES} byte limit")
    try:
        stored = _storage(ds, nbytes, path)
    except BACKEND_ERRORS as err:
        raise BadModelFile(f"weight {shown(path)} is damaged ({short_error(err)})") from None
    if nbytes > SMALL_ARRAY_BYTES and nbytes > MAX_EXPANSION * stored:
        raise BadModelFile(
            f"weight {shown(path)} declares {nbytes} bytes but stores only {stored} (a compression or fill-value bomb)"
        )
    try:
        data = np.asarray(ds[()])
    except Exception as err:  # h5py raises OSError/KeyError/ValueError for damaged data, pyfive more
        raise BadModelFile(f"weight {shown(path)} could not be read ({short_error(err)})") from None
    if data.shape != tuple(shape) or data.dtype != dtype:
        declared = f"{dtype}{tuple(shape)}"
        raise BadModelFile(f"weight {shown(path)} read back as {data.dtype}{data.shape}, not the declared {declared}")
    if bfloat16:
        data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return data


def _is_bfloat16(ds) -> bool:
    try:
        tag = ds.attrs.get("dtype") if "dtype" in ds.attrs else None
    except BACKEND_ERRORS:
        return False
    if isinstance(tag, bytes):
        tag = tag.decode("ascii", "replace")
    return tag == "bfloat16" and ds.dtype.itemsize == 2


def short_error(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


def open_file(source, what: str):
    """Open an HDF5 file (path or BytesIO) read-only, as one clean error when that fails."""
    backend = require_backend()
    check_structure(source, what)
    try:
        return h5py.File(source, "r") if backend == "h5py" else pyfive.File(source)
    except Exception as err:
        raise BadModelFile(f"{what} is not a readable HDF5 file ({short_error(err)})") from None


def check_structure(source, what: str) -> None:
    """Checks libhdf5 or pyfive would get wrong: truncation (pyfive) and endless global heaps (libhdf5)."""
    if isinstance(source, io.BytesIO):
        _check_raw(source.getvalue(), what)  # no copy: the BytesIO was made from a bytes object
        return
    with open(source, "rb") as handle:
        try:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or a file system without mmap
            view = handle.read()
        try:
            _check_raw(view, what)
        finally:
            if isinstance(view, mmap.mmap):
                view.close()


def _check_raw(raw, what: str) -> None:
    offsets, lengths = _check_superblock(raw, what)
    pos = raw.find(b"GCOL")
    while pos != -1:
        _check_collection(raw, pos, lengths, what)
        pos = raw.find(b"GCOL", pos + 4)


def _check_superblock(raw, what: str) -> tuple:
    """(size of offsets, size of lengths); refuses a file shorter than its superblock says."""
    start = 0
    while start + 8 <= len(raw) and raw[start : start + 8] != b"\x89HDF\r\n\x1a\n":
        start = 512 if start == 0 else start * 2  # a user block puts the superblock at 512, 1024, ...
    if start + 48 > len(raw):
        return 8, 8  # libhdf5 and pyfive refuse this on their own
    version = raw[start + 8]
    if version < 2:
        offsets, lengths = raw[start + 13], raw[start + 14]
        addresses = start + (24 if version == 0 else 28)
    else:
        offsets, lengths = raw[start + 9], raw[start + 10]
        addresses = start + 12
    if offsets not in (2, 4, 8) or lengths not in (2, 4, 8) or addresses + 3 * offsets > len(raw):
        return 8, 8
    base = int.from_bytes(raw[addresses : addresses + offsets], "little")
    end_field = addresses + 2 * offsets
    end = int.from_bytes(raw[end_field : end_field + offsets], "little")
    if base + end > len(raw):
        raise BadModelFile(f"{what} is truncated: {len(raw)} bytes of the {base + end} its HDF5 header declares")
    return offsets, lengths


def _check_collection(raw, start: int, lengths: int, what: str) -> None:
    header = 8 + lengths
    if start + header > len(raw) or raw[start + 4 : start + 8] != b"\x01\x00\x00\x00":
        return  # not a collection header (version 1, reserved zeros): nothing to walk
    size = int.from_bytes(raw[start + 8 : start + 8 + lengths], "little")
    end = start + size
    if end > len(raw):
        # pyfive would allocate the declared size before noticing the file is shorter.
        raise BadModelFile(f"{what} has an HDF5 global heap at byte {start} declaring {size} bytes, past the end")
    if size < header:
        return  # libhdf5 and pyfive refuse such a collection; neither loops
    object_header = 8 + lengths
    p = start + header
    while p < end:
        if p + object_header > end:
            break  # too small for an object: free space, as libhdf5 assumes
        index = int.from_bytes(raw[p : p + 2], "little")
        size_of_object = int.from_bytes(raw[p + 8 : p + 8 + lengths], "little")
        step = object_header + ((size_of_object + 7) & ~7) if index > 0 else size_of_object
        if step == 0 or p + step > end:
            raise BadModelFile(f"{what} has a damaged HDF5 global heap at byte {p} (an object of size {step})")
        p += step
