"""Malformed-file corpus (issue 7): broken and hostile variants of valid fixtures, made with h5py/zipfile only.

No Keras needed: tests/test_malformed.py builds the corpus into a temporary folder on every run.
`python scripts/make_malformed.py OUT_DIR` writes it to a folder to try by hand (`konverter OUT_DIR`).

Each case names the exit code Konverter must give (3 bad file, 4 unsupported; None = either converts
or fails cleanly, for damage that may land in plain weight bytes) and a word its message must contain.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# Valid sources: a Keras 2 .h5 Sequential, a Keras 3 .keras Sequential, a Keras 3 .h5 Functional.
SEQ_H5 = FIXTURES / "core" / "dense_relu__k2h5.h5"
SEQ_KERAS = FIXTURES / "core" / "dense_relu__k3keras.keras"
FUNC_H5 = FIXTURES / "hostile" / "identifier_func__k3h5.h5"
LONG_H5 = FIXTURES / "hostile" / "long_seq__k2h5.h5"  # layer names of 10,000 characters
BAD, UNSUPPORTED = 3, 4


@dataclass
class Case:
    name: str
    path: Path
    exit_code: Optional[int]  # None: may convert, or fail with 3/4
    mentions: str = ""  # a word the one-line message must contain (case-insensitive)


# ----------------------------------------------------------------------------- helpers
def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _edit_h5(src: Path, dst: Path, edit: Callable) -> Path:
    _copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _edit_h5_config(src: Path, dst: Path, edit: Callable) -> Path:
    def change(f):
        config = json.loads(f.attrs["model_config"])
        result = edit(config)
        text = json.dumps(config if result is None else result)
        for token, expand in DEEP.items():  # too deep for json.dumps: spliced in as text
            if f'"{token}"' in text:
                text = text.replace(f'"{token}"', expand(config))
        f.attrs["model_config"] = text

    return _edit_h5(src, dst, change)


def _rezip(
    src: Path,
    dst: Path,
    change: Callable[[str, bytes], Optional[bytes]],
    extra: dict | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Copy a .keras archive, passing every member through `change` (None drops it), adding `extra`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
            for name, data in (extra or {}).items():
                zout.writestr(name, data)
    return dst


def _edit_keras_config(src: Path, dst: Path, edit: Callable) -> Path:
    def change(name, data):
        if name != "config.json":
            return data
        config = json.loads(data)
        edit(config)
        return json.dumps(config).encode()

    return _rezip(src, dst, change)


def _edit_keras_weights(src: Path, dst: Path, edit: Callable, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    def change(name, data):
        if name != "model.weights.h5":
            return data
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f:
            edit(f)
        return buffer.getvalue()

    return _rezip(src, dst, change, compression=compression)


def _layers(config: dict) -> list:
    return config["config"]["layers"]


def _dense(config: dict) -> dict:
    return next(layer for layer in _layers(config) if layer["class_name"] == "Dense")


def _replace_dataset(f, path: str, make) -> None:
    group, name = path.rsplit("/", 1)
    del f[path]
    make(f[group], name)


KERNEL_H5 = "model_weights/dense/dense/kernel:0"
KERNEL_KERAS = "layers/dense/vars/0"


# ----------------------------------------------------------------------------- the corpus
def build_corpus(out: Path) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, path: Path, code: Optional[int], mentions: str = "") -> None:
        cases.append(Case(name, path, code, mentions))

    seq_h5 = SEQ_H5.read_bytes()
    seq_keras = SEQ_KERAS.read_bytes()

    # Truncations and flipped bytes, at offsets across the whole file.
    for label, blob, ext in (("h5", seq_h5, ".h5"), ("keras", seq_keras, ".keras")):
        for cut in sorted(
            {0, 1, 7, 8, 64, 96, 512, 2048, len(blob) // 3, len(blob) // 2, len(blob) - 100, len(blob) - 1}
        ):
            path = out / f"truncated_{label}_{cut}{ext}"
            path.write_bytes(blob[:cut])
            add(path.stem, path, BAD)
        for offset in sorted({0, 3, 9, 40, 200, 800, len(blob) // 4, len(blob) // 2, len(blob) - 30}):
            data = bytearray(blob)
            data[offset] ^= 0xFF
            path = out / f"flipped_{label}_{offset}{ext}"
            path.write_bytes(bytes(data))
            add(path.stem, path, BAD if offset < 8 else None)

    # Config JSON: wrong types, missing keys, unknown classes, cycles, dangling references, absurd sizes.
    h5cfg = [
        ("layers_not_list", lambda c: c["config"].__setitem__("layers", "dense"), BAD, "layers"),
        ("units_string", lambda c: _dense(c)["config"].__setitem__("units", "16"), BAD, "units"),
        ("units_float", lambda c: _dense(c)["config"].__setitem__("units", 16.5), BAD, "units"),
        ("units_huge", lambda c: _dense(c)["config"].__setitem__("units", 10**12), BAD, "shape"),
        ("units_negative", lambda c: _dense(c)["config"].__setitem__("units", -16), BAD, ""),
        ("no_class_name", lambda c: _dense(c).pop("class_name") and None, BAD, "class_name"),
        ("no_layer_config", lambda c: _dense(c).pop("config") and None, BAD, "config"),
        ("no_model_config", lambda c: c.pop("config") and None, BAD, "config"),
        ("unknown_class", lambda c: _dense(c).__setitem__("class_name", "FancyDense"), UNSUPPORTED, "FancyDense"),
        ("class_name_number", lambda c: _dense(c).__setitem__("class_name", 7), BAD, "class_name"),
        ("negative_shape", lambda c: _layers(c)[0]["config"].__setitem__("batch_input_shape", [None, -8]), BAD, ""),
        ("huge_shape", lambda c: _layers(c)[0]["config"].__setitem__("batch_input_shape", [None, 10**15]), BAD, ""),
        ("shape_string", lambda c: _layers(c)[0]["config"].__setitem__("batch_input_shape", "8"), BAD, "shape"),
        ("top_is_dense", lambda c: _dense(c), BAD, "not a model"),
        ("top_is_list", lambda c: [c], BAD, "JSON object"),
        ("lambda_layer", _make_lambda, UNSUPPORTED, "Lambda"),
        ("custom_layer", _make_custom, UNSUPPORTED, "custom"),
        ("deep_json", lambda c: _dense(c)["config"].__setitem__("extra", "__deep_list__"), BAD, "deep"),
        ("deep_models", lambda c: _layers(c).__setitem__(1, "__deep_models__"), BAD, "deep"),
    ]
    for name, edit, code, word in h5cfg:
        add(f"config_{name}", _edit_h5_config(SEQ_H5, out / f"config_{name}.h5", edit), code, word)

    functional = [
        ("cycle", _make_cycle, BAD, "cycle"),
        ("dangling_inbound", _make_dangling, BAD, "not in the model"),
        ("dangling_output", lambda c: c["config"].__setitem__("output_layers", [["nowhere", 0, 0]]), BAD, "nowhere"),
        ("no_inputs", lambda c: c["config"].__setitem__("input_layers", []), BAD, "input"),
        ("bad_history", _make_bad_history, BAD, "keras_history"),
    ]
    for name, edit, code, word in functional:
        add(f"graph_{name}", _edit_h5_config(FUNC_H5, out / f"graph_{name}.h5", edit), code, word)

    # Attributes: non-UTF-8 config, non-JSON numbers, weights-only file.
    def raw_config(data: bytes):
        return lambda f: f.attrs.__setitem__("model_config", data)

    add("config_not_utf8", _edit_h5(SEQ_H5, out / "config_not_utf8.h5", raw_config(b'{"class_name": "\xff\xfe"}')), BAD)
    add("config_not_json", _edit_h5(SEQ_H5, out / "config_not_json.h5", raw_config(b"{not json")), BAD, "JSON")
    add(
        "config_nan",
        _edit_h5(SEQ_H5, out / "config_nan.h5", raw_config(b'{"class_name": "Sequential", "x": NaN}')),
        BAD,
        "NaN",
    )
    add("weights_only", _edit_h5(SEQ_H5, out / "weights_only.h5", lambda f: f.attrs.__delitem__("model_config")), BAD)

    # Weights: wrong shapes, string dtype, missing, links and external storage in place of data.
    weight_edits = [
        ("wrong_shape", lambda g, n: g.create_dataset(n, data=np.zeros((3, 3), "f4")), BAD, "shape"),
        ("string_dtype", lambda g, n: g.create_dataset(n, data=np.array([b"abc"] * 8)), BAD, "dtype"),
        ("object_strings", lambda g, n: g.create_dataset(n, data=["a", "b"], dtype=h5py.string_dtype()), BAD, "dtype"),
        ("compound", lambda g, n: g.create_dataset(n, shape=(8,), dtype=[("a", "f4"), ("b", "i4")]), BAD, "dtype"),
        (
            "soft_link",
            lambda g, n: g.__setitem__(n, h5py.SoftLink("/model_weights/dense_1/dense_1/kernel:0")),
            BAD,
            "link",
        ),
        ("external_link", lambda g, n: g.__setitem__(n, h5py.ExternalLink("/etc/passwd", "/x")), BAD, "link"),
        (
            "external_storage",
            lambda g, n: g.create_dataset(n, (8, 16), "f4", external=[("/dev/zero", 0, 512)]),
            BAD,
            "external",
        ),
        ("declared_huge", lambda g, n: g.create_dataset(n, (10**6, 10**6), "f4", chunks=(1, 16)), BAD, "declares"),
        ("fill_bomb", lambda g, n: g.create_dataset(n, (8, 2 * 10**7), "f4", chunks=(1, 10**6)), BAD, "declares"),
        (
            "gzip_bomb",
            lambda g, n: g.create_dataset(
                n, data=np.zeros((8, 2 * 10**6), "f4"), chunks=(1, 10**6), compression="gzip"
            ),
            BAD,
            "declares",
        ),
    ]
    for name, make, code, word in weight_edits:
        path = _edit_h5(SEQ_H5, out / f"weights_{name}.h5", lambda f, m=make: _replace_dataset(f, KERNEL_H5, m))
        add(f"weights_{name}", path, code, word)
    add(
        "weights_missing",
        _edit_h5(SEQ_H5, out / "weights_missing.h5", lambda f: f.__delitem__(KERNEL_H5)),
        BAD,
        "missing",
    )

    def soft_group(path: str, target: str):
        def edit(f):
            f.copy(f[path], target)
            del f[path]
            f[path] = h5py.SoftLink(target)

        return edit

    add(
        "group_soft_layer",
        _edit_h5(SEQ_H5, out / "group_soft_layer.h5", soft_group("model_weights/dense", "/elsewhere")),
        BAD,
        "link",
    )
    add(
        "group_soft_root",
        _edit_h5(SEQ_H5, out / "group_soft_root.h5", soft_group("model_weights", "/elsewhere")),
        BAD,
        "link",
    )
    add(
        "weight_name_escapes",
        _edit_h5(
            SEQ_H5,
            out / "weight_name_escapes.h5",
            lambda f: f["model_weights/dense"].attrs.__setitem__(
                "weight_names", np.array([b"/model_weights/dense_1/dense_1/kernel:0", b"dense/bias:0"])
            ),
        ),
        BAD,
    )

    # .keras archives: traversal names, bombs, pickled weights, broken members, hostile weights.
    add(
        "keras_traversal",
        _rezip(SEQ_KERAS, out / "keras_traversal.keras", lambda n, d: d, {"../../evil.py": b"x"}),
        BAD,
        "member",
    )
    add(
        "keras_absolute",
        _rezip(SEQ_KERAS, out / "keras_absolute.keras", lambda n, d: d, {"/tmp/evil.py": b"x"}),
        BAD,
        "member",
    )
    add(
        "keras_backslash",
        _rezip(SEQ_KERAS, out / "keras_backslash.keras", lambda n, d: d, {"..\\..\\evil.py": b"x"}),
        BAD,
        "member",
    )
    add("keras_zip_bomb", _zip_bomb(out / "keras_zip_bomb.keras"), BAD, "compress")
    add(
        "keras_npz_weights",
        _rezip(
            SEQ_KERAS,
            out / "keras_npz_weights.keras",
            lambda n, d: None if n == "model.weights.h5" else d,
            {"model.weights.npz": _pickled_npz()},
        ),
        UNSUPPORTED,
        "pickle",
    )
    add(
        "keras_no_config",
        _rezip(SEQ_KERAS, out / "keras_no_config.keras", lambda n, d: None if n == "config.json" else d),
        BAD,
        "config.json",
    )
    add(
        "keras_no_weights",
        _rezip(SEQ_KERAS, out / "keras_no_weights.keras", lambda n, d: None if n == "model.weights.h5" else d),
        BAD,
        "weights",
    )
    add(
        "keras_config_not_json",
        _rezip(SEQ_KERAS, out / "keras_config_not_json.keras", lambda n, d: b"\xff{" if n == "config.json" else d),
        BAD,
        "config.json",
    )
    add(
        "keras_weights_not_h5",
        _rezip(
            SEQ_KERAS, out / "keras_weights_not_h5.keras", lambda n, d: b"PK junk" if n == "model.weights.h5" else d
        ),
        BAD,
        "HDF5",
    )
    add(
        "keras_duplicate_config",
        _rezip(SEQ_KERAS, out / "keras_duplicate_config.keras", lambda n, d: d, {"config.json": b"{}"}),
        BAD,
        "twice",
    )
    add("keras_lambda", _edit_keras_config(SEQ_KERAS, out / "keras_lambda.keras", _make_lambda), UNSUPPORTED, "Lambda")
    add("keras_custom", _edit_keras_config(SEQ_KERAS, out / "keras_custom.keras", _make_custom), UNSUPPORTED, "custom")
    add(
        "keras_soft_link",
        _edit_keras_weights(
            SEQ_KERAS,
            out / "keras_soft_link.keras",
            lambda f: _replace_dataset(
                f, KERNEL_KERAS, lambda g, n: g.__setitem__(n, h5py.SoftLink("/layers/dense_1/vars/0"))
            ),
        ),
        BAD,
        "link",
    )
    add(
        "keras_external_storage",
        _edit_keras_weights(
            SEQ_KERAS,
            out / "keras_external_storage.keras",
            lambda f: _replace_dataset(
                f, KERNEL_KERAS, lambda g, n: g.create_dataset(n, (8, 16), "f4", external=[("/dev/zero", 0, 512)])
            ),
        ),
        BAD,
        "external",
    )
    add(
        "keras_layers_group_link",
        _edit_keras_weights(SEQ_KERAS, out / "keras_layers_group_link.keras", soft_group("layers", "/elsewhere")),
        BAD,
        "link",
    )
    add(
        "keras_wrong_shape",
        _edit_keras_weights(
            SEQ_KERAS,
            out / "keras_wrong_shape.keras",
            lambda f: _replace_dataset(f, KERNEL_KERAS, lambda g, n: g.create_dataset(n, data=np.zeros((2, 2), "f4"))),
        ),
        BAD,
        "shape",
    )

    # Issue 15: chunk structures that would cost far more than the file holds, and a stored member
    # whose bytes no longer match its CRC (read in place, so checked by Konverter, not zipfile).
    add(
        "weights_huge_chunks",
        _edit_h5(
            SEQ_H5,
            out / "weights_huge_chunks.h5",
            lambda f: _replace_dataset(
                f,
                KERNEL_H5,
                lambda g, n: g.create_dataset(
                    n, data=np.ones((8, 16), "f4"), chunks=(4096, 256), maxshape=(None, None)
                ),
            ),
        ),
        BAD,
        "chunks",
    )

    def sparse_chunks(g, n):
        ds = g.create_dataset(n, (30_000, 30_000), "u1", chunks=(1, 1))
        ds[0, 0] = 1

    add(
        "weights_declared_chunks",
        _edit_h5(SEQ_H5, out / "weights_declared_chunks.h5", lambda f: _replace_dataset(f, KERNEL_H5, sparse_chunks)),
        BAD,
        "chunks",
    )
    bad_crc = bytearray(seq_keras)
    member = bad_crc.find(b"TREE")  # a B-tree node inside the stored model.weights.h5
    bad_crc[member + 8] ^= 0xFF
    add("keras_member_crc", _write(out / "keras_member_crc.keras", bytes(bad_crc)), BAD, "CRC")

    # A 10,000-character layer name in an error message is cut short: still one readable line.
    def long_name_bad_kernel(f):
        kernels = []
        f["model_weights"].visititems(lambda n, o: kernels.append(n) if n.endswith("kernel:0") else None)
        _replace_dataset(
            f, f"model_weights/{kernels[0]}", lambda g, n: g.create_dataset(n, data=np.zeros((2, 2), "f4"))
        )

    add("long_name_wrong_shape", _edit_h5(LONG_H5, out / "long_name_wrong_shape.h5", long_name_bad_kernel), BAD, "...")

    # libhdf5 loops forever on a global heap object of size 0: these must fail fast, not hang.
    shifted = seq_h5.replace(b'"class_name": "Dense"', b'"class_name": "Lambda"', 1)
    add("heap_shifted", _write(out / "heap_shifted.h5", shifted), BAD, "heap")
    zeroed = bytearray(seq_h5)
    first_object = seq_h5.find(b"GCOL") + 16
    zeroed[first_object : first_object + 16] = bytes(16)
    add("heap_zero_object", _write(out / "heap_zero_object.h5", bytes(zeroed)), BAD, "heap")
    add("not_a_model", _write(out / "not_a_model.h5", b"hello, I am a text file\n" * 10), BAD, "not a Keras model")
    add("empty", _write(out / "empty.keras", b""), BAD, "empty")
    return cases


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _make_lambda(config: dict) -> None:
    layer = _dense(config)
    layer["class_name"] = "Lambda"
    # A marshalled-bytecode payload as Keras 2 stores it: it must never be decoded, let alone run.
    layer["config"]["function"] = [
        "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARQAUwApAk7pAgAAAKkAKQHaAXhyAgAAAHIC",
        None,
        None,
    ]
    layer["config"]["function_type"] = "lambda"


def _make_custom(config: dict) -> None:
    layer = _dense(config)
    layer["class_name"] = "MyDense"
    layer["registered_name"] = "Custom>MyDense"
    layer["module"] = "os"


DEPTH = 10_000
DEEP = {
    "__deep_list__": lambda config: "[" * DEPTH + "]" * DEPTH,
    "__deep_models__": lambda config: (
        '{"class_name": "Sequential", "config": {"name": "s", "layers": [' * DEPTH
        + json.dumps(_layers(config)[2])
        + "]}}" * DEPTH
    ),
}


def _history(layer: dict) -> list:
    return layer["inbound_nodes"][0]["args"][0]["config"]["keras_history"]


def _make_cycle(config: dict) -> None:
    by_name = {layer["name"]: layer for layer in _layers(config)}
    _history(by_name["t0"])[0] = "_w0"  # t0 <- _w0 <- np <- t0


def _make_dangling(config: dict) -> None:
    by_name = {layer["name"]: layer for layer in _layers(config)}
    _history(by_name["t0"])[0] = "ghost"


def _make_bad_history(config: dict) -> None:
    by_name = {layer["name"]: layer for layer in _layers(config)}
    by_name["t0"]["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = "x0"


def _pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, w=np.array([{"pickled": "object"}], dtype=object))
    return buffer.getvalue()


def _zip_bomb(path: Path) -> Path:
    """A valid .keras archive whose weights member inflates 1000x (zeros), 64 MB from 64 kB."""
    with zipfile.ZipFile(SEQ_KERAS) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == "model.weights.h5":
                zout.writestr(info.filename, zin.read(info) + bytes(64 << 20))
            else:
                zout.writestr(info.filename, zin.read(info))
    return path


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_malformed.py OUT_DIR")
    for case in build_corpus(Path(sys.argv[1])):
        print(f"{case.path.name}\texit {case.exit_code if case.exit_code is not None else '0/3/4'}")


if __name__ == "__main__":
    main()
