"""Careful HDF5 access: hard links only, no external storage, every weight checked, counted and read once.

Two backends: h5py (libhdf5) normally; pyfive (pure Python, `pip install "keras-konverter-numpy[pyfive]"`)
where h5py cannot be installed, e.g. on phones. KONVERTER_FORCE_PYFIVE=1 selects pyfive (used by CI to
run the whole suite in both modes). Both get the same refusals.

Weights are read in two steps. `WeightSet.add` finds each dataset a weight name points to and checks
what it declares; datasets reached under several names or links are the same object and counted once.
`WeightSet.check` then weighs the total against what the file stores and the memory there is, before
anything is allocated; `WeightSet.read` reads each distinct dataset once, in pieces of bounded size
(and, for chunked datasets, touching a bounded number of chunks per read).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..errors import BadModelFile, UnsupportedModel
from . import memory
from .files import Window
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
# Compressed or sparsely written (fill-value) datasets may declare far more than they store: the
# weights of a model may declare at most this many times the bytes the file stores for them, plus
# FILL_ALLOWANCE, so memory stays proportional to the file's size whatever it declares.
MAX_EXPANSION = 100
FILL_ALLOWANCE = 16 << 20
# Reads go in pieces of at most SLAB_BYTES touching at most CHUNKS_PER_READ chunks: libhdf5 keeps
# bookkeeping per chunk of a read (a 4 MiB weight in 1-element chunks took 4 GB in one read).
SLAB_BYTES = 16 << 20
CHUNKS_PER_READ = 4096
# Unwritten chunks still cost time to visit: a dataset may declare this many chunks beyond
# CHUNK_SLACK times those it stores.
MIN_CHUNKS = 1 << 16
CHUNK_SLACK = 16
# A chunk may be larger than its dataset (extendible datasets), but not by much: it is read whole.
SMALL_CHUNK_BYTES = 1 << 20
# pyfive indexes every stored chunk of a dataset in Python objects (about 600 bytes each, measured).
PYFIVE_CHUNK_BYTES = 1024
# What each backend raises for damaged structures (pyfive parses with struct and asserts).
BACKEND_ERRORS: tuple = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, EOFError)
BACKEND_ERRORS += (ArithmeticError, MemoryError, RecursionError, AssertionError, struct.error, zlib.error)
if pyfive is not None:
    BACKEND_ERRORS += (NotImplementedError, pyfive.core.InvalidHDF5File)
EXTERNAL_FILES_MESSAGE = 0x0007  # HDF5 "external data files" object header message
UNDEFINED_ADDRESS = 0xFFFFFFFFFFFFFFFF
COMPACT, CONTIGUOUS, CHUNKED = 0, 1, 2
# HDF5 filters that pyfive-mode reading decodes itself (h5py leaves all of them to libhdf5).
GZIP, SHUFFLE, FLETCHER32, LZF = 1, 2, 3, 32000


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


def short_error(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


@contextmanager
def open_file(source: str | Window, what: str) -> Iterator:
    """Open an HDF5 file (a path, or a Window over an archive member) read-only, checked first."""
    backend = require_backend()
    if backend == "pyfive" and not isinstance(source, Window):
        with open(source, "rb", buffering=0) as handle:
            with open_file(Window(handle, 0, os.fstat(handle.fileno()).st_size), what) as f:
                yield f
        return
    if isinstance(source, Window):
        source.check(what)
    else:
        from .rawcheck import check_file

        check_file(source, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyfive warns about what it cannot read; the refusal says it
            f = h5py.File(source, "r") if backend == "h5py" else pyfive.File(source)
    except Exception as err:
        raise BadModelFile(f"{what} is not a readable HDF5 file ({short_error(err)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield f
    finally:
        f.close()


# ----------------------------------------------------------------------------- links and groups
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
        if objects.is_dataset and hasattr(group, "get_lazy_view"):
            return group.get_lazy_view(name)  # no chunk index yet: built only once the budget allows
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
        if BACKEND == "pyfive" and (isinstance(err, NotImplementedError) or "cannot yet" in str(err)):
            raise UnsupportedModel(
                f"HDF5 object {shown(path)} uses a storage feature pyfive cannot read ({short_error(err)}); "
                "install h5py"
            ) from None
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


def _address(parent, name: str, obj) -> int:
    """Where the object's header is: the same for every name and hard link that reaches it."""
    if BACKEND == "h5py":
        return h5py.h5o.get_info(obj.id).addr
    return parent._links[name]  # a hard link (checked on the way): the object header's address


# ----------------------------------------------------------------------------- weights
@dataclass
class _Weight:
    dataset: object
    name: str  # the first name that reached it, for messages
    stored_dtype: np.dtype
    dtype: np.dtype  # what it is read as (float32 for bfloat16)
    shape: tuple
    nbytes: int  # as read
    stored: int  # bytes the file stores for it
    layout: int
    chunks: tuple | None
    stored_chunks: int
    fh: object  # pyfive: the file to read raw bytes from


class WeightSet:
    """The datasets that a model's weights name, each distinct one checked, counted and read once."""

    def __init__(self, f, file_bytes: int, progress: Callable = lambda: None) -> None:
        self.items: list[_Weight] = []
        self.file_bytes = file_bytes  # no dataset can store more than the whole file
        self._by_address: dict = {}
        self._groups: set = set()
        # (id of a group, path below it) -> (that group, kept so that its id stays its own; the group at the path)
        self._parents: dict = {}
        self._progress = progress
        self._fh = getattr(f, "_fh", None)  # pyfive: the file as it reads it (user block accounted for)

    def add(self, group, path: str) -> int:
        """Find the weight dataset `path` below `group`; its number in `items` (the same for every alias)."""
        self._progress()
        parent_path, _, name = path.strip("/").rpartition("/")
        key = (id(group), parent_path)
        if key not in self._parents:  # one group object per group: pyfive lists a group's links per object
            self._parents[key] = (group, walk(group, parent_path))
        parent = self._parents[key][1]
        ds = walk(parent, name)
        if not _is_dataset(ds):
            raise BadModelFile(f"weight {shown(path)} is not a dataset")
        try:
            address = _address(parent, name, ds)
        except BACKEND_ERRORS as err:
            raise BadModelFile(f"weight {shown(path)} is damaged ({short_error(err)})") from None
        if address not in self._by_address:
            self._by_address[address] = len(self.items)
            self.items.append(_describe(ds, path, self._fh))
        return self._by_address[address]

    def first_visit(self, parent, name: str, group) -> bool:
        """False when this group was visited before (under any name)."""
        self._progress()
        try:
            address = _address(parent, name, group)
        except BACKEND_ERRORS as err:
            raise BadModelFile(f"HDF5 group {shown(name)} is damaged ({short_error(err)})") from None
        if address in self._groups:
            return False
        self._groups.add(address)
        return True

    def need(self) -> int:
        """Bytes that reading every distinct weight takes in the end (pyfive's chunk index included)."""
        index = PYFIVE_CHUNK_BYTES * sum(w.stored_chunks for w in self.items) if BACKEND == "pyfive" else 0
        return sum(w.nbytes for w in self.items) + index

    def held(self) -> int:
        """Bytes the reading process holds at once beyond its pieces (pyfive assembles chunked weights whole)."""
        whole = [w.nbytes for w in self.items if w.layout == CHUNKED and w.stored_chunks and BACKEND == "pyfive"]
        return max(whole, default=0) + 2 * SLAB_BYTES

    def check(self) -> None:
        """Refuse weights that declare far more than the file stores (compression or fill-value bombs)."""
        declared = sum(w.nbytes for w in self.items)
        # What headers say is stored, at most the file itself (overlapping chunks could claim more).
        stored = min(sum(w.stored for w in self.items), self.file_bytes)
        if declared > MAX_EXPANSION * stored + FILL_ALLOWANCE:
            worst = max(self.items, key=lambda w: w.nbytes - MAX_EXPANSION * w.stored)
            raise BadModelFile(
                f"its weights declare {memory.human(declared)} but the file stores only {memory.human(stored)} "
                f"of them, a compression or fill-value bomb (weight {shown(worst.name)} declares "
                f"{memory.human(worst.nbytes)} and stores {memory.human(worst.stored)})"
            )

    def read(self, deliver: Callable, progress: Callable = lambda: None) -> None:
        """Read each distinct weight once: `deliver(number, dtype, shape, pieces)`, pieces in C order."""
        for number, weight in enumerate(self.items):
            deliver(number, weight.dtype, weight.shape, _pieces(weight, progress))


def _describe(ds, path: str, fh) -> _Weight:
    try:
        stored_dtype = np.dtype(ds.dtype)
        shape = ds.shape
    except BACKEND_ERRORS as err:
        raise BadModelFile(f"weight {shown(path)} is damaged ({short_error(err)})") from None
    bfloat16 = _is_bfloat16(ds, stored_dtype)
    if not bfloat16 and stored_dtype.kind not in "fiub":
        raise BadModelFile(f"weight {shown(path)} has non-numeric dtype {stored_dtype}")
    if shape is None or any(d < 0 for d in shape):
        raise BadModelFile(f"weight {shown(path)} has no valid shape")
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(np.float32) if bfloat16 else stored_dtype
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        limit = memory.human(MAX_ARRAY_BYTES)
        raise BadModelFile(f"weight {shown(path)} declares {memory.human(nbytes)}, over the {limit} limit")
    try:
        layout, chunks, stored, stored_chunks = _storage(ds, path, math.prod(shape) * stored_dtype.itemsize)
    except BACKEND_ERRORS as err:
        raise BadModelFile(f"weight {shown(path)} is damaged ({short_error(err)})") from None
    if BACKEND == "pyfive" and layout == CHUNKED:
        _check_filters(ds, path)
    if chunks is not None:
        if len(chunks) != len(shape) or any(c <= 0 for c in chunks):
            raise BadModelFile(f"weight {shown(path)} has chunks {chunks} that do not fit its shape {shape}")
        chunk_bytes = math.prod(chunks) * stored_dtype.itemsize
        if chunk_bytes > max(4 * nbytes, SMALL_CHUNK_BYTES):  # each chunk is read (and inflated) whole
            raise BadModelFile(f"weight {shown(path)} has chunks of {memory.human(chunk_bytes)}, far larger than it is")
        declared_chunks = math.prod(math.ceil(s / c) for s, c in zip(shape, chunks))
        if declared_chunks > CHUNK_SLACK * stored_chunks + MIN_CHUNKS and stored_chunks:
            raise BadModelFile(
                f"weight {shown(path)} declares {declared_chunks} chunks but stores only {stored_chunks}"
            )
    return _Weight(ds, path, stored_dtype, dtype, shape, nbytes, stored, layout, chunks, stored_chunks, fh)


def _check_filters(ds, path: str) -> None:
    """pyfive-mode decodes gzip, shuffle, fletcher32 and (with python-lzf) LZF; the rest needs h5py."""
    for entry in ds.id.filter_pipeline or []:
        kind = entry["filter_id"]
        if kind == LZF and not _has_lzf():
            raise UnsupportedModel(
                f"weight {shown(path)} is LZF-compressed, which pyfive reads only with python-lzf installed"
            )
        if kind not in (GZIP, SHUFFLE, FLETCHER32, LZF):
            raise UnsupportedModel(
                f"weight {shown(path)} uses HDF5 filter {kind}, which only h5py can read (pip install h5py)"
            )


def _has_lzf() -> bool:
    try:
        import lzf  # noqa: F401
    except ImportError:
        return False
    return True


def _is_bfloat16(ds, dtype: np.dtype) -> bool:
    try:
        tag = ds.attrs.get("dtype") if "dtype" in ds.attrs else None
    except BACKEND_ERRORS:
        return False
    if isinstance(tag, bytes):
        tag = tag.decode("ascii", "replace")
    return tag == "bfloat16" and dtype.itemsize == 2


def _storage(ds, path: str, nbytes: int) -> tuple:
    """(layout, chunk shape or None, bytes the file stores, chunks the file stores)."""
    if BACKEND == "h5py":
        if ds.is_virtual or ds.external:
            raise BadModelFile(f"weight {shown(path)} uses external or virtual storage, which is refused")
        layout = ds.id.get_create_plist().get_layout()
        stored = ds.id.get_storage_size()
        if layout == h5py.h5d.CHUNKED:
            return CHUNKED, tuple(ds.chunks), stored, ds.id.get_num_chunks()
        return (COMPACT if layout == h5py.h5d.COMPACT else CONTIGUOUS), None, stored, 0
    layout = ds.id.layout_class
    if layout == COMPACT:  # inside the object header
        return COMPACT, None, nbytes, 0
    if layout == CONTIGUOUS:
        return CONTIGUOUS, None, 0 if ds.id.data_offset == UNDEFINED_ADDRESS else nbytes, 0
    if layout == CHUNKED:
        count = ds.id.get_num_chunks()
        stored = sum(int(ds.id.get_chunk_info(i).size) for i in range(count))
        return CHUNKED, tuple(ds.id.chunks), stored, count
    raise BadModelFile(f"weight {shown(path)} uses external or virtual storage, which is refused")


# ----------------------------------------------------------------------------- reading in pieces
def _pieces(w: _Weight, progress: Callable) -> Iterator[np.ndarray]:
    """The weight's elements in C order, as arrays of w.dtype holding at most about SLAB_BYTES each.

    Each piece is only valid until the next one is asked for (buffers are reused).
    """
    if w.nbytes == 0:
        return
    try:
        if w.layout == CHUNKED and w.stored_chunks == 0:
            source = _filled(w)  # declared, never written: no chunk needs visiting
        elif BACKEND == "h5py":
            source = _h5py_pieces(w)
        else:
            source = _pyfive_pieces(w, progress)
        for piece in source:
            progress()
            yield _as_read(w, piece)
    except (BadModelFile, UnsupportedModel, MemoryError):
        raise
    except Exception as err:  # h5py raises OSError/KeyError/ValueError for damaged data, pyfive more
        if memory.out_of_memory(err):
            raise MemoryError from None  # said as such by the caller, with the figures
        raise BadModelFile(f"weight {shown(w.name)} could not be read ({short_error(err)})") from None


def _as_read(w: _Weight, piece: np.ndarray) -> np.ndarray:
    if w.dtype == w.stored_dtype:
        return piece
    return (piece.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # bfloat16: the high half


def _filled(w: _Weight) -> Iterator[np.ndarray]:
    fill = getattr(w.dataset, "fillvalue", None)
    total = math.prod(w.shape)
    step = max(1, SLAB_BYTES // w.stored_dtype.itemsize)
    block = np.full(min(step, total), fill if fill is not None else 0, dtype=w.stored_dtype)
    for start in range(0, total, step):
        yield block[: min(step, total - start)]


def _hyperslabs(shape: tuple, itemsize: int, chunks: tuple | None) -> Iterator[tuple]:
    """(selection, shape) of consecutive pieces of an array in C order, each a contiguous run of elements.

    A piece fixes the indices of the first k axes and spans a range of axis k and all of the rest;
    k is the first axis whose rows are small enough (bytes, and chunks touched per row).
    """
    rank = len(shape)
    if rank == 0:
        yield (), ()
        return
    grid = [math.ceil(s / c) for s, c in zip(shape, chunks)] if chunks else [1] * rank
    k = 0
    while k < rank - 1 and (
        math.prod(shape[k + 1 :]) * itemsize > SLAB_BYTES or math.prod(grid[k + 1 :]) > CHUNKS_PER_READ
    ):
        k += 1
    row_bytes = math.prod(shape[k + 1 :]) * itemsize
    rows = max(1, SLAB_BYTES // row_bytes)
    if chunks:  # r rows of axis k touch at most ceil(r / chunk) + 1 chunks along it
        rows = min(rows, max(1, CHUNKS_PER_READ // math.prod(grid[k + 1 :]) - 1) * chunks[k])
    rest = tuple(slice(0, s) for s in shape[k + 1 :])
    for prefix in np.ndindex(*shape[:k]):
        fixed = tuple(slice(i, i + 1) for i in prefix)
        for a in range(0, shape[k], rows):
            b = min(a + rows, shape[k])
            yield fixed + (slice(a, b),) + rest, (1,) * k + (b - a,) + tuple(shape[k + 1 :])


def _h5py_pieces(w: _Weight) -> Iterator[np.ndarray]:
    ds = w.dataset
    buffer = np.empty(max(1, min(math.prod(w.shape), SLAB_BYTES // w.stored_dtype.itemsize)), w.stored_dtype)
    for selection, shape in _hyperslabs(w.shape, w.stored_dtype.itemsize, w.chunks):
        piece = buffer[: math.prod(shape)].reshape(shape)
        if selection:
            ds.read_direct(piece, source_sel=selection)
        else:
            ds.read_direct(piece)
        yield piece.reshape(-1)


def _pyfive_pieces(w: _Weight, progress: Callable) -> Iterator[np.ndarray]:
    """pyfive-mode reading of the raw bytes: bounded pieces, and filters decoded here with bounded output."""
    ds = w.dataset
    if w.layout == COMPACT:
        yield np.asarray(ds[()], dtype=w.stored_dtype).reshape(-1)
    elif w.layout == CONTIGUOUS:
        if ds.id.data_offset == UNDEFINED_ADDRESS:
            yield from _filled(w)
            return
        fh = w.fh
        total = math.prod(w.shape) * w.stored_dtype.itemsize
        step = max(w.stored_dtype.itemsize, SLAB_BYTES - SLAB_BYTES % w.stored_dtype.itemsize)
        for start in range(0, total, step):
            fh.seek(ds.id.data_offset + start)
            data = fh.read(min(step, total - start))
            if len(data) != min(step, total - start):
                raise BadModelFile(f"weight {shown(w.name)} runs past the end of the file")
            yield np.frombuffer(data, w.stored_dtype)
    else:
        yield _pyfive_chunked(w, progress).reshape(-1)


def _pyfive_chunked(w: _Weight, progress: Callable) -> np.ndarray:
    ds = w.dataset
    fill = getattr(ds, "fillvalue", None)
    out = np.full(w.shape, fill if fill is not None else 0, dtype=w.stored_dtype)
    chunk_bytes = math.prod(w.chunks) * w.stored_dtype.itemsize
    pipeline = ds.id.filter_pipeline or []
    fh = w.fh
    for i in range(w.stored_chunks):
        progress()
        info = ds.id.get_chunk_info(i)
        fh.seek(info.byte_offset)
        raw = fh.read(info.size)
        data = _decode(raw, info.filter_mask, pipeline, chunk_bytes, w)
        if len(data) != chunk_bytes:
            raise BadModelFile(f"weight {shown(w.name)} has a chunk of {len(data)} bytes, not {chunk_bytes}")
        start = tuple(int(o) for o in info.chunk_offset)
        if any(o % c or o >= s for o, c, s in zip(start, w.chunks, w.shape)) or len(start) != len(w.shape):
            raise BadModelFile(f"weight {shown(w.name)} has a chunk at {start}, outside its shape")
        block = np.frombuffer(data, w.stored_dtype).reshape(w.chunks)
        target = tuple(slice(o, min(o + c, s)) for o, c, s in zip(start, w.chunks, w.shape))
        out[target] = block[tuple(slice(0, t.stop - t.start) for t in target)]
    return out


def _decode(data: bytes, mask: int, pipeline: list, chunk_bytes: int, w: _Weight) -> bytes:
    """Undo a chunk's filters (last applied first); nothing inflates past the chunk's size."""
    for position in range(len(pipeline) - 1, -1, -1):
        if mask & (1 << position):
            continue
        kind = pipeline[position]["filter_id"]
        if kind == GZIP:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, chunk_bytes + 4)  # + 4: room for a fletcher32 checksum
            if inflater.unconsumed_tail:
                raise BadModelFile(f"weight {shown(w.name)} has a chunk that inflates past its size")
        elif kind == SHUFFLE:
            size = w.stored_dtype.itemsize
            main = len(data) - len(data) % size
            body = np.frombuffer(data[:main], np.uint8).reshape(size, -1).T.tobytes()
            data = body + data[main:]
        elif kind == FLETCHER32:
            if len(data) < 4 or not _fletcher32_matches(data[:-4], data[-4:]):
                raise BadModelFile(f"weight {shown(w.name)} has a chunk that fails its fletcher32 checksum")
            data = data[:-4]
        elif kind == LZF:
            data = _lzf(data, chunk_bytes + 4, w)
        else:  # _check_filters refused it already
            raise UnsupportedModel(f"weight {shown(w.name)} uses HDF5 filter {kind}, which only h5py can read")
    return data


def _fletcher32_matches(data: bytes, stored: bytes) -> bool:
    """HDF5's fletcher32 over big-endian 16-bit words (an odd last byte padded with zero), in one's
    complement sums (65535 and 0 are the same), stored as a little-endian uint32, or byte-reversed
    as libhdf5 1.6 wrote it."""
    if len(data) % 2:
        data = data + b"\x00"
    words = np.frombuffer(data, ">u2")
    sum1 = sum2 = 0
    for start in range(0, len(words), 1 << 20):  # blocks: the weighted sum stays within uint64
        block = words[start : start + (1 << 20)].astype(np.uint64)
        m = len(block)
        sum2 = (sum2 + m * sum1 + int(np.dot(block, np.arange(m, 0, -1, dtype=np.uint64)))) % 65535
        sum1 = (sum1 + int(block.sum())) % 65535
    value = int.from_bytes(stored, "little")
    swapped = int.from_bytes(stored, "big")
    return any((v & 0xFFFF) % 65535 == sum1 and (v >> 16) % 65535 == sum2 for v in (value, swapped))


def _lzf(data: bytes, limit: int, w: _Weight) -> bytes:
    import lzf  # present: _check_filters made sure

    out = lzf.decompress(data, limit)
    if out is None:
        raise BadModelFile(f"weight {shown(w.name)} has a damaged LZF chunk")
    return out
