"""Model files that probe the generated file's contract (issue 15, parts 3 and 6), made from fixtures with h5py.

No Keras needed; tests/test_predict_contract.py and tests/test_stress.py build them at test time:

- `integer_weights`: every weight stored as an integer dtype (Keras loads them into float32 variables);
  `float_twin` is the same model with the same values stored as float32.
- `declared_input`: a Sequential/Functional whose input is declared far larger than any real data
  (the file stays a few KB): what the generated file builds at import must not follow that size.
- `input_dtype`: an input declared float64 (or another dtype); Keras casts float inputs to float32.
- `dense_units`: Dense layers with `units=0` (tf-keras allows it; the outputs are empty).

`python scripts/make_contract_cases.py OUT_DIR` writes a set of them to try by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_malformed import _edit_h5, _edit_h5_config, _edit_keras_weights  # noqa: E402  (the same file edits)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DENSE_H5 = FIXTURES / "core" / "dense_relu__k2h5.h5"  # Input(8) -> Dense(16, relu) -> Dense(4)
DENSE_KERAS = FIXTURES / "core" / "dense_relu__k3keras.keras"
GLOBAL_POOLING = FIXTURES / "conv" / "global_pooling__k2h5.h5"  # input_29 -> GlobalAveragePooling3D
CNN = FIXTURES / "conv" / "cnn_classifier__k2h5.h5"  # 28x28x1 -> Conv2D 3x3 (1 channel: a gathered conv) -> ...


def _edit_weights(src: Path, dst: Path, edit: Callable[[h5py.File], None]) -> Path:
    """Copy a model file with its HDF5 weights changed by `edit` (inside the zip for .keras)."""
    return (_edit_keras_weights if src.suffix == ".keras" else _edit_h5)(src, dst, edit)


def _datasets(f: h5py.File) -> list:
    found: list = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def _retype(f: h5py.File, make: Callable[[str, np.ndarray], np.ndarray]) -> None:
    for name in _datasets(f):
        values = make(name, f[name][()])
        del f[name]
        f.create_dataset(name, data=values)


def integer_values(values: np.ndarray) -> np.ndarray:
    """The weights times 4, rounded: small integers, exact in float32, different from layer to layer."""
    return np.round(values * 4.0)


def integer_weights(src: Path, dst: Path) -> Path:
    """Every weight as an integer dtype, int64 and uint64 in turn (uint64 holds absolute values)."""
    kinds = iter([np.int64, np.uint64] * 1000)

    def make(name: str, values: np.ndarray) -> np.ndarray:
        kind = next(kinds)
        ints = integer_values(values)
        return (np.abs(ints) if kind is np.uint64 else ints).astype(kind)

    return _edit_weights(src, dst, lambda f: _retype(f, make))


def float_twin(integer_model: Path, dst: Path) -> Path:
    """The integer-weight model with the same values stored as float32: what it must compute."""
    return _edit_weights(integer_model, dst, lambda f: _retype(f, lambda _, v: v.astype(np.float32)))


def _layers(config: dict) -> list:
    return config["config"]["layers"]


def declared_input(
    src: Path, dst: Path, shape: list, input_name: str | None = None, strides: list | None = None
) -> Path:
    """The model with one input declared as `shape` (batch first); `strides` for its first Conv2D."""

    def edit(config: dict) -> None:
        inputs = [layer for layer in _layers(config) if layer["class_name"] == "InputLayer"]
        chosen = next(layer for layer in inputs if input_name in (None, layer["config"]["name"]))
        chosen["config"]["batch_input_shape"] = shape
        if strides is not None:
            conv = next(layer for layer in _layers(config) if layer["class_name"] == "Conv2D")
            conv["config"]["strides"] = strides

    return _edit_h5_config(src, dst, edit)


def input_dtype(src: Path, dst: Path, dtype: str) -> Path:
    """The model with its (first) input declared as `dtype`."""

    def edit(config: dict) -> None:
        next(layer for layer in _layers(config) if layer["class_name"] == "InputLayer")["config"]["dtype"] = dtype

    return _edit_h5_config(src, dst, edit)


def dense_units(dst: Path, first: int, second: int) -> Path:
    """The dense_relu model (8 -> 16 -> 4) with the two Dense layers' units set (weights to match)."""

    def edit(config: dict) -> None:
        dense = [layer for layer in _layers(config) if layer["class_name"] == "Dense"]
        dense[0]["config"]["units"], dense[1]["config"]["units"] = first, second

    shapes = {
        "model_weights/dense/dense/kernel:0": (8, first),
        "model_weights/dense/dense/bias:0": (first,),
        "model_weights/dense_1/dense_1/kernel:0": (first, second),
        "model_weights/dense_1/dense_1/bias:0": (second,),
    }
    rng = np.random.default_rng(0)
    _edit_h5_config(DENSE_H5, dst, edit)
    with h5py.File(dst, "r+") as f:
        _retype(f, lambda name, _: rng.normal(size=shapes[name]).astype("f4"))
    return dst


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "contract_cases")
    out.mkdir(parents=True, exist_ok=True)
    integer_weights(DENSE_H5, out / "integer_weights.h5")
    integer_weights(DENSE_KERAS, out / "integer_weights.keras")
    declared_input(GLOBAL_POOLING, out / "gap_20000.h5", [None, 20000, 20000, 1, 3], "input_29")
    declared_input(CNN, out / "conv_10000.h5", [None, 10000, 10000, 1], strides=[100, 100])
    dense_units(out / "dense_units_0.h5", 0, 0)
    print(f"wrote {len(list(out.iterdir()))} files to {out}")


if __name__ == "__main__":
    main()
