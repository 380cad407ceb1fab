"""Careful HDF5 access: hard links only, no external storage, sizes checked before reading."""

from __future__ import annotations

import io
import mmap

import numpy as np

from ..errors import BadModelFile

try:
    import h5py
except ImportError:  # pragma: no cover - exercised only on machines without h5py
    h5py = None

# One weight array larger than this is refused before anything is allocated.
MAX_ARRAY_BYTES = 4 << 30
# Compressed or sparsely written (fill-value) datasets may declare far more than they store:
# reading one may allocate at most this many times its stored bytes (plus a small allowance),
# so memory stays proportional to the file's size whatever it declares.
MAX_EXPANSION = 100
SMALL_ARRAY_BYTES = 1 << 20


def require_h5py():
    if h5py is None:
        raise BadModelFile("reading HDF5 model files needs the h5py package (pip install h5py)")
    return h5py


def _child(group, name: str, path: str):
    """`group[name]`, refusing soft and external links."""
    try:
        link = group.get(name, getlink=True)
        if link is None:
            raise BadModelFile(f"missing HDF5 object {path!r}")
        if not isinstance(link, h5py.HardLink):
            raise BadModelFile(f"HDF5 object {path!r} is a {type(link).__name__}; links are not followed")
        return group[name]
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise BadModelFile(f"HDF5 object {path!r} is damaged ({short_error(err)})") from None


def child(group, name: str, path: str = ""):
    """`group[name]` through a hard link only (soft/external links refused), or None when absent."""
    try:
        present = name in group
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise BadModelFile(f"HDF5 group {path or name!r} is damaged ({short_error(err)})") from None
    return _child(group, name, path or name) if present else None


def keys(group, path: str) -> list:
    try:
        return list(group.keys())
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise BadModelFile(f"HDF5 group {path!r} is damaged ({short_error(err)})") from None


def is_group(obj) -> bool:
    return isinstance(obj, h5py.Group)


def walk(group, path: str):
    """Follow a '/'-separated path below `group` through hard links only."""
    obj = group
    done = []
    for part in path.split("/"):
        if not part:
            continue
        if not isinstance(obj, h5py.Group):
            raise BadModelFile(f"HDF5 path {'/'.join(done)!r} is not a group")
        done.append(part)
        obj = _child(obj, part, "/".join(done))
    return obj


def read_array(group, path: str) -> np.ndarray:
    """Read one weight dataset as a NumPy array, refusing anything unusual about it."""
    ds = walk(group, path)
    if not isinstance(ds, h5py.Dataset):
        raise BadModelFile(f"weight {path!r} is not a dataset")
    try:
        if ds.is_virtual or ds.external:
            raise BadModelFile(f"weight {path!r} uses external or virtual storage, which is refused")
        dtype = ds.dtype
        stored = ds.id.get_storage_size()
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise BadModelFile(f"weight {path!r} is damaged ({short_error(err)})") from None
    bfloat16 = _is_bfloat16(ds)
    if not bfloat16 and dtype.kind not in "fiub":
        raise BadModelFile(f"weight {path!r} has non-numeric dtype {dtype}")
    shape = ds.shape
    if shape is None or any(d < 0 for d in shape):
        raise BadModelFile(f"weight {path!r} has no valid shape")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise BadModelFile(f"weight {path!r} declares {nbytes} bytes, over the {MAX_ARRAY_BYTES} byte limit")
    if nbytes > SMALL_ARRAY_BYTES and nbytes > MAX_EXPANSION * stored:
        raise BadModelFile(
            f"weight {path!r} declares {nbytes} bytes but stores only {stored} (a compression or fill-value bomb)"
        )
    try:
        data = ds[()]
    except Exception as err:  # h5py raises OSError/KeyError/ValueError for damaged data
        raise BadModelFile(f"weight {path!r} could not be read ({short_error(err)})") from None
    data = np.asarray(data)
    if bfloat16:
        data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return data


def _is_bfloat16(ds) -> bool:
    try:
        tag = ds.attrs.get("dtype") if "dtype" in ds.attrs else None
    except (OSError, KeyError, RuntimeError, ValueError, TypeError):
        return False
    if isinstance(tag, bytes):
        tag = tag.decode("ascii", "replace")
    return tag == "bfloat16" and ds.dtype.itemsize == 2


def short_error(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


def open_file(source, what: str):
    """Open an HDF5 file (path or BytesIO) read-only, as one clean error when that fails."""
    h5 = require_h5py()
    check_global_heaps(source, what)
    try:
        return h5.File(source, "r")
    except Exception as err:
        raise BadModelFile(f"{what} is not a readable HDF5 file ({short_error(err)})") from None


def check_global_heaps(source, what: str) -> None:
    """Refuse global heap collections that would send the HDF5 library into an endless loop.

    Variable-length strings (Keras's JSON config, layer and weight names) live in "GCOL" collections.
    libhdf5 walks a collection object by object, and an object of size 0 (easy to get by damaging a
    few bytes) never advances the walk: the library spins forever inside one call. Every candidate
    collection is walked here first, in Python, with the same rules.
    """
    if isinstance(source, io.BytesIO):
        _check_heaps(source.getvalue(), what)  # no copy: the BytesIO was made from a bytes object
        return
    with open(source, "rb") as handle:
        try:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or a file system without mmap
            view = handle.read()
        try:
            _check_heaps(view, what)
        finally:
            if isinstance(view, mmap.mmap):
                view.close()


def _check_heaps(raw, what: str) -> None:
    lengths = _size_of_lengths(raw)
    pos = raw.find(b"GCOL")
    while pos != -1:
        _check_collection(raw, pos, lengths, what)
        pos = raw.find(b"GCOL", pos + 4)


def _size_of_lengths(raw) -> int:
    """The "size of lengths" field of the superblock (8 unless the writer chose otherwise)."""
    start = raw.find(b"\x89HDF\r\n\x1a\n")
    if start == -1 or start + 16 > len(raw):
        return 8
    version = raw[start + 8]
    field = start + 14 if version < 2 else start + 10
    size = raw[field]
    return size if size in (2, 4, 8) else 8


def _check_collection(raw, start: int, lengths: int, what: str) -> None:
    header = 8 + lengths
    if start + header > len(raw) or raw[start + 4] != 1:
        return  # not a collection libhdf5 would accept (it checks the version) - nothing to walk
    size = int.from_bytes(raw[start + 8 : start + 8 + lengths], "little")
    end = start + size
    if size < header or end > len(raw):
        return  # libhdf5 fails to read such a collection; it does not loop
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
