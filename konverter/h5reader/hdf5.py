"""Careful HDF5 access: hard links only, no external storage, sizes checked before reading."""

from __future__ import annotations

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
    """Open an HDF5 file (path or file object) read-only, as one clean error when that fails."""
    h5 = require_h5py()
    try:
        return h5.File(source, "r")
    except Exception as err:
        raise BadModelFile(f"{what} is not a readable HDF5 file ({short_error(err)})") from None
