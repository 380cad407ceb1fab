"""Hostile model files, second round (issue 15): resource edges of the reader, made with h5py/zipfile only.

Each builder writes one small file (or a few) from a valid fixture and returns its path; the tests
(tests/test_hostile_reader.py) build them at test time. `python scripts/make_hostile2.py OUT_DIR`
writes the whole set to a folder to try by hand.

- Memory: a weight named 20,000 times, 20,000 hard links to one weight, 6,000 declared-but-unwritten
  weights, a weight in 1-element chunks, a variable-length attribute whose 20,000 entries all point at
  one 1 MiB heap object, an amplified config.json, a .keras whose weights member inflates 190x, a
  gzip weight just under the expansion bound.
- Time: a file full of overlapping global heap collections (the heap check was quadratic).
- False refusals: valid models with a user block (their global heap at byte 6144), inside .keras too,
  and weight bytes that look like a global heap.
- Storage layouts: one weight stored every way HDF5 allows (`layouts`).
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_malformed import _edit_keras_weights, _rezip  # noqa: E402  (the same archive edits)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BASE_H5 = FIXTURES / "core" / "dense_relu__k2h5.h5"  # Keras 2 Sequential: Dense(16) on 8 inputs, Dense(4)
BASE_KERAS = FIXTURES / "core" / "dense_relu__k3keras.keras"
KERNEL = "model_weights/dense/dense/kernel:0"
BIAS = "model_weights/dense/dense/bias:0"
MIB = 1 << 20


# ----------------------------------------------------------------------------- helpers
def dense_model(
    path: Path, inputs: int = 8, units: int = 16, kernel: Callable | None = None, libver: str = "earliest"
) -> dict:
    """The base model with its first Dense made `inputs` -> `units`; `kernel(group, name, values)` stores
    the kernel (default: a plain dataset). Returns the weights written, by dataset path."""
    shutil.copyfile(BASE_H5, path)
    rng = np.random.default_rng(0)
    values = {
        KERNEL: rng.standard_normal((inputs, units)).astype("f4"),
        BIAS: rng.standard_normal(units).astype("f4"),
        "model_weights/dense_1/dense_1/kernel:0": rng.standard_normal((units, 4)).astype("f4"),
        "model_weights/dense_1/dense_1/bias:0": rng.standard_normal(4).astype("f4"),
    }
    with h5py.File(path, "r+", libver=(libver, "latest")) as f:  # new objects in that format or later
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        layers[0]["config"]["batch_input_shape"] = [None, inputs]
        layers[1]["config"]["units"] = units
        f.attrs["model_config"] = json.dumps(config)
        for name, data in values.items():
            group, leaf = name.rsplit("/", 1)
            del f[name]
            if name == KERNEL and kernel is not None:
                kernel(f[group], leaf, data)
            else:
                f[group].create_dataset(leaf, data=data)
    return values


def set_names(attrs, key: str, names: list, dtype=None) -> None:
    """A list-of-names attribute, split into key0, key1, ... as Keras does past HDF5's 64 KiB header limit."""
    for old in [k for k in attrs if k == key or (k.startswith(key) and k[len(key) :].isdigit())]:
        del attrs[old]
    values = np.array(names, dtype=dtype) if dtype is not None else np.array(names)
    per_part = max(1, 60_000 // max(1, values.itemsize if dtype is None else 16))
    if len(values) <= per_part:
        attrs[key] = values
        return
    for part, start in enumerate(range(0, len(values), per_part)):
        attrs[f"{key}{part}"] = values[start : start + per_part]


# ----------------------------------------------------------------------------- memory
def repeated_weight_names(path: Path, repeats: int = 20_000, inputs: int = 512) -> Path:
    """`weight_names` naming one 1 MiB kernel `repeats` times (each read anew: 20 GB)."""
    dense_model(path, inputs, inputs)
    with h5py.File(path, "r+") as f:
        set_names(f["model_weights/dense"].attrs, "weight_names", [b"dense/kernel:0"] * repeats + [b"dense/bias:0"])
    return path


def hard_links_h5(path: Path, links: int = 20_000, inputs: int = 512) -> Path:
    """`links` hard links to one 1 MiB kernel, each named once in `weight_names`."""
    dense_model(path, inputs, inputs)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense/dense"]
        for i in range(links):
            group[f"alias{i}"] = group["kernel:0"]
        names = [f"dense/alias{i}".encode() for i in range(links)] + [b"dense/bias:0"]
        set_names(f["model_weights/dense"].attrs, "weight_names", names)
    return path


def hard_links_keras(path: Path, links: int = 20_000, inputs: int = 512) -> Path:
    """A .keras archive whose first Dense has `links` variables, all hard links to one 1 MiB dataset."""

    def edit(f):
        group = f["layers/dense/vars"]
        for name in list(group):
            del group[name]
        group["0"] = np.zeros((inputs, inputs), "f4")
        for i in range(1, links):
            group[str(i)] = group["0"]

    return _edit_keras_weights(BASE_KERAS, path, edit, zipfile.ZIP_STORED)


def unwritten_weights(path: Path, count: int = 6_000, inputs: int = 512) -> Path:
    """`count` weights of 1 MiB each, declared and never written (the fill value is all they hold)."""
    dense_model(path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense/dense"]
        for i in range(count):
            group.create_dataset(f"empty{i}", (inputs, inputs), "f4")
        names = [f"dense/empty{i}".encode() for i in range(count)]
        set_names(f["model_weights/dense"].attrs, "weight_names", names)
    return path


def one_element_chunks(path: Path, side: int = 1024, libver: str = "latest") -> tuple[Path, dict]:
    """A side x side Dense whose kernel (4 MiB at 1024) is stored in 1-element chunks."""
    values = dense_model(
        path, side, side, kernel=lambda g, n, v: g.create_dataset(n, data=v, chunks=(1, 1)), libver=libver
    )
    return path, values


def vlen_shared_heap(path: Path, entries: int = 20_000, mib: int = 1) -> Path:
    """`weight_names` as `entries` variable-length strings that all point at one `mib` MiB heap object.

    Written with distinct short names, then each heap ID in the file is redirected to the big object:
    the file stays ~1.5 MB, reading the attribute materializes entries x mib MiB.
    """
    shutil.copyfile(BASE_H5, path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense"]
        group.attrs["padding"] = "B" * (mib * MIB)
        set_names(group.attrs, "weight_names", [f"{i:08d}" for i in range(entries)], h5py.string_dtype())
    raw = bytearray(path.read_bytes())
    big = raw.find(b"B" * 64) - 16  # the big object's header: index, reference count, reserved, size
    big_collection = raw.rfind(b"GCOL", 0, big)
    index, size = int.from_bytes(raw[big : big + 2], "little"), int.from_bytes(raw[big + 8 : big + 16], "little")
    redirected = 0
    collection = raw.find(b"GCOL")
    while collection != -1:
        if collection != big_collection:
            record = struct.pack("<IQ", 8, collection)  # heap IDs of 8-character names in this collection
            at = raw.find(record)
            while at != -1:
                raw[at : at + 16] = struct.pack("<IQI", size, big_collection, index)
                redirected += 1
                at = raw.find(record, at + 16)
        collection = raw.find(b"GCOL", collection + 4)
    if redirected != entries:
        raise RuntimeError(f"redirected {redirected} heap IDs, expected {entries}")
    path.write_bytes(bytes(raw))
    return path


def _sprinkled(size: int, step: int, seed: int = 0) -> bytes:
    data = bytearray(size)
    rng = random.Random(seed)
    for at in range(0, size, step):
        data[at] = rng.randrange(1, 256)
    return bytes(data)


def _tuned(size: int, ratio: float, level: int = 6) -> bytes:
    """`size` bytes of zeros with random bytes sprinkled so that deflate shrinks them about `ratio` times."""
    low, high = 1, 1 << 16
    sample = min(size, 4 * MIB)
    while low < high:  # the smallest spacing that compresses at least `ratio` times
        step = (low + high) // 2
        if sample / len(zlib.compress(_sprinkled(sample, step), level)) >= ratio:
            high = step
        else:
            low = step + 1
    return _sprinkled(size, low)


def amplified_config(path: Path, mib: int = 64, ratio: float = 90) -> Path:
    """A .keras whose config.json (valid JSON: the real config, then a long list of empty lists with a
    number now and then) inflates about `ratio` times to `mib` MiB, and 20x more again once parsed."""

    def padding(size: int, every: int) -> bytes:
        rng = random.Random(0)
        items = (b"[]" if i % every else str(rng.randrange(10**6)).encode() for i in range(size // 3))
        return b"[" + b",".join(items) + b"]"

    low, high = 1, 1 << 16
    while low < high:  # the sparsest numbers that still keep the ratio at or below `ratio`
        every = (low + high) // 2
        sample = padding(MIB, every)
        if len(sample) / len(zlib.compress(sample, 6)) >= ratio:
            high = every
        else:
            low = every + 1

    def change(name: str, data: bytes) -> bytes:
        if name != "config.json":
            return data
        config = json.loads(data)
        config["padding"] = "__PADDING__"
        text = json.dumps(config).encode()
        return text.replace(b'"__PADDING__"', padding(mib * MIB - len(text), low))

    return _rezip(BASE_KERAS, path, change, compression=zipfile.ZIP_DEFLATED)


def inflating_weights(path: Path, mib: int = 64, ratio: float = 190) -> Path:
    """A .keras whose (valid) model.weights.h5 inflates about `ratio` times: a large extra dataset of
    mostly zeros sits next to the real weights."""

    def edit(f):
        f.create_dataset("padding", data=np.frombuffer(_tuned(mib * MIB, ratio), np.uint8))

    return _edit_keras_weights(BASE_KERAS, path, edit, zipfile.ZIP_DEFLATED)


def gzip_weight(path: Path, mib: int = 64, ratio: float = 99) -> Path:
    """A Dense whose kernel of `mib` MiB is gzip-compressed about `ratio` times (under the bound of 100)."""
    inputs = 1024
    units = mib * MIB // (4 * inputs)

    def kernel(group, name, values):
        data = np.frombuffer(_tuned(inputs * units * 4, ratio, level=9), "f4").reshape(inputs, units)
        data = np.where(np.isfinite(data), data, 0).astype("f4")
        group.create_dataset(name, data=data, chunks=(64, units), compression="gzip", compression_opts=9)

    dense_model(path, inputs, units, kernel)
    return path


def keras_group_dag(path: Path, depth: int = 40) -> Path:
    """A .keras whose first Dense holds a chain of `depth` groups, each linked twice from the one above:
    walked link by link, 2^depth visits."""

    def edit(f):
        layer = f["layers/dense"]
        below = layer.create_group("chain")
        for _ in range(depth):
            above = f.create_group(f"level{len(f)}")
            above["a"] = below
            above["b"] = below
            below = above
        layer["cell"] = below

    return _edit_keras_weights(BASE_KERAS, path, edit, zipfile.ZIP_STORED)


# ----------------------------------------------------------------------------- time
def heap_collections(path: Path, region: int = 1 << 20) -> Path:
    """A valid model followed by `region` bytes of overlapping global heap collections.

    Every 32 bytes: an object header (index 1, 16 bytes of data), whose data is itself a collection
    header declaring a collection to the end of the file. Walked one by one, each collection steps over
    all the objects after it: quadratic. The file stays a valid model (libhdf5 ignores bytes past its end).
    """
    shutil.copyfile(BASE_H5, path)
    base = path.read_bytes()
    end = len(base) + region
    out = bytearray(base)
    while len(out) + 32 <= end:
        out += struct.pack("<HHIQ", 1, 1, 0, 16)  # an object of 16 bytes...
        collection = len(out)
        out += b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", end - collection)  # ...that looks like a collection
    out += bytes(end - len(out))
    path.write_bytes(bytes(out))
    return path


# ----------------------------------------------------------------------------- false refusals
def with_userblock(source: Path, target: Path, userblock: int = 4096) -> Path:
    """An HDF5 file rewritten with a user block: every address moves (the global heap to byte 6144)."""
    with h5py.File(source, "r") as src, h5py.File(target, "w", userblock_size=userblock) as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            src.copy(src[key], dst, key)
    return target


def keras_with_userblock(path: Path, userblock: int = 4096) -> Path:
    """A .keras archive whose model.weights.h5 has a user block."""

    def change(name: str, data: bytes) -> bytes:
        if name != "model.weights.h5":
            return data
        source, target = path.with_suffix(".src.h5"), path.with_suffix(".ub.h5")
        source.write_bytes(data)
        with_userblock(source, target, userblock)
        result = target.read_bytes()
        source.unlink()
        target.unlink()
        return result

    return _rezip(BASE_KERAS, path, change, compression=zipfile.ZIP_STORED)


def heap_lookalike_weights(path: Path) -> Path:
    """A Dense kernel whose bytes spell a global heap collection header declaring 1 GiB (past the end)."""

    def kernel(group, name, values):
        raw = bytearray(values.tobytes())
        raw[64:80] = b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", 1 << 30)
        group.create_dataset(name, data=np.frombuffer(bytes(raw), "f4").reshape(values.shape))

    dense_model(path, 8, 16, kernel)
    return path


# ----------------------------------------------------------------------------- storage layouts
LAYOUTS: dict = {
    "contiguous": {},
    "compact": {"compact": True},
    "chunked_rows": {"chunks": (1, 16)},
    "chunked_one_element": {"chunks": (1, 1)},
    "chunked_ragged": {"chunks": (3, 5)},  # edge chunks only partly inside the dataset
    "chunked_larger": {"chunks": (16, 32), "maxshape": (None, None)},  # one chunk larger than the data
    "gzip": {"chunks": (4, 8), "compression": "gzip"},
    "gzip_shuffle": {"chunks": (4, 8), "compression": "gzip", "shuffle": True},
    "fletcher32": {"chunks": (4, 8), "fletcher32": True},
    "gzip_shuffle_fletcher32": {"chunks": (3, 7), "compression": "gzip", "shuffle": True, "fletcher32": True},
    "lzf": {"chunks": (4, 8), "compression": "lzf"},
    "scaleoffset": {"chunks": (4, 8), "scaleoffset": 6},
    "fill_partly_written": {"chunks": (4, 16), "fillvalue": 0.25, "partial": True},
    "fill_unwritten_chunked": {"chunks": (4, 8), "fillvalue": 0.5, "unwritten": True},
    "fill_unwritten_contiguous": {"fillvalue": -1.5, "unwritten": True},
    "big_endian": {"dtype": ">f4"},
    "float64": {"dtype": "<f8"},
    "float16": {"dtype": "<f2"},
    "latest_format_chunked": {"chunks": (2, 4), "libver": "latest"},
}


def layout(path: Path, name: str) -> tuple[np.ndarray, dict]:
    """The base model with its first kernel stored as LAYOUTS[name]: (the kernel as h5py reads it back,
    all weights written by dataset path)."""
    options = dict(LAYOUTS[name])
    partial, unwritten = options.pop("partial", False), options.pop("unwritten", False)
    compact, libver = options.pop("compact", False), options.pop("libver", None)
    dtype = options.pop("dtype", "<f4")
    stored = {}

    def kernel(group, leaf, values):
        # Mostly zeros, so that every filter really compresses (LZF and deflate skip chunks they cannot shrink).
        values = np.where(np.abs(values) > 1, values, 0).astype(dtype)
        if compact:
            space = h5py.h5s.create_simple(values.shape)
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            tid = h5py.h5t.py_create(values.dtype)
            dsid = h5py.h5d.create(group.id, leaf.encode(), tid, space, plist)
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(values))
        elif unwritten:
            group.create_dataset(leaf, values.shape, dtype, **options)
        elif partial:
            ds = group.create_dataset(leaf, values.shape, dtype, **options)
            ds[:4] = values[:4]  # the first row of chunks only
        else:
            group.create_dataset(leaf, data=values, **options)
        stored["values"] = group[leaf][()]

    values = dense_model(path, kernel=kernel, libver=libver or "earliest")
    return stored["values"], values


# ----------------------------------------------------------------------------- by hand
def build_all(out: Path) -> list:
    out.mkdir(parents=True, exist_ok=True)
    made = [
        repeated_weight_names(out / "repeated_weight_names.h5"),
        hard_links_h5(out / "hard_links.h5"),
        hard_links_keras(out / "hard_links.keras"),
        unwritten_weights(out / "unwritten_weights.h5"),
        one_element_chunks(out / "one_element_chunks.h5")[0],
        vlen_shared_heap(out / "vlen_shared_heap.h5"),
        amplified_config(out / "amplified_config.keras"),
        inflating_weights(out / "inflating_weights.keras"),
        gzip_weight(out / "gzip_weight.h5"),
        heap_collections(out / "heap_collections.h5"),
        with_userblock(BASE_H5, out / "userblock.h5"),
        keras_with_userblock(out / "userblock.keras"),
        heap_lookalike_weights(out / "heap_lookalike_weights.h5"),
        keras_group_dag(out / "group_dag.keras"),
    ]
    for name in LAYOUTS:
        path = out / f"layout_{name}.h5"
        layout(path, name)
        made.append(path)
    return made


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_hostile2.py OUT_DIR")
    for path in build_all(Path(sys.argv[1])):
        print(f"{path.name}\t{path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
