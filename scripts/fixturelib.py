"""Shared helpers for the fixture builders. These scripts use REAL Keras; Konverter never does.

Set up once (a separate virtualenv, never the one the tests run in):
    python -m venv .venv-keras && .venv-keras/bin/pip install tensorflow-cpu tf-keras h5py
Then e.g. `.venv-keras/bin/python scripts/fixtures_core.py`.

Formats (the suffix of each fixture's file name):
    k2h5     tf-keras (Keras 2) legacy HDF5      model.save("m.h5")
    k2keras  tf-keras (Keras 2) .keras archive   model.save("m.keras")
    k3h5     Keras 3 legacy HDF5                 model.save("m.h5")
    k3keras  Keras 3 .keras archive              model.save("m.keras")
Older writers, each from a virtualenv of its own (a subset of the core fixtures):
    tf214h5, tf214keras  TensorFlow 2.14's tf.keras: pip install tensorflow-cpu==2.14.1 h5py
                         (its .keras stores layers under _layer_checkpoint_dependencies/)
    k31h5, k31keras      Keras 3.1 (bare variable names in .h5): pip install keras==3.1.1 "jax[cpu]<0.5"
                         "numpy<2" h5py packaging; run with KERAS_BACKEND=jax. Keras 3.1 itself cannot
                         save a nested Sequential to .h5 nor reload sequence_layers from .h5, so those two are absent.
    e.g. `.venv-tf214/bin/python scripts/fixtures_core.py --formats tf214h5 tf214keras --only dense_relu ...`
Each model file `tests/fixtures/<family>/<name>__<fmt>.<ext>` has a sibling `<name>__<fmt>.npz`
holding inputs x0, x1, ... and the outputs y0, y1, ... that Keras computed for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders float sums; keep references plain
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FORMATS = ("k2h5", "k2keras", "k3h5", "k3keras")


def keras_for(fmt: str):
    """tf_keras for Keras 2 formats, keras (3) for the others.

    Older writers come from their own virtualenvs (see scripts/fixtures_old_writers.py):
    `tf214*` is TensorFlow 2.14's bundled tf.keras, `k31*` is Keras 3.1 on its NumPy backend.
    """
    if fmt.startswith("tf2"):
        from tensorflow import keras

        return keras
    if fmt.startswith("k2"):
        import tf_keras

        return tf_keras
    import keras

    return keras


def is_keras3(K) -> bool:
    return int(getattr(K, "__version__", "2").split(".")[0]) >= 3


def randomize(model, seed: int) -> None:
    """Give every float weight non-trivial random values (biases and BN statistics included)."""
    rng = np.random.RandomState(seed)
    for w in model.weights:
        name = (getattr(w, "path", None) or w.name).lower()
        shape = tuple(w.shape)
        dtype = np.dtype(getattr(w.dtype, "name", w.dtype) if not isinstance(w.dtype, str) else w.dtype)
        if dtype.kind != "f":
            continue
        if "variance" in name or "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        w.assign(value.astype(dtype))


def _outputs(model, inputs: list) -> list:
    result = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    if isinstance(result, dict):
        result = [result[k] for k in model.output_names] if hasattr(model, "output_names") else list(result.values())
    if not isinstance(result, (list, tuple)):
        result = [result]
    return [_as_array(r) for r in result]


def _as_array(value) -> np.ndarray:
    """An output as a NumPy array; text (TensorFlow's bytes) as str, so that .npz files need no pickle."""
    array = np.asarray(value)
    if array.dtype.kind in "OS":
        array = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()], dtype=str)
        array = array.reshape(np.shape(value))
    return array


def save(family: str, name: str, fmt: str, model, inputs: list, check_reload: bool = True) -> Path:
    """Save the model in `fmt` plus an .npz of inputs and Keras's outputs; verify the reload agrees."""
    K = keras_for(fmt)
    folder = FIXTURES / family
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".h5" if fmt.endswith("h5") else ".keras"
    path = folder / f"{name}__{fmt}{ext}"
    if path.exists():
        path.unlink()
    model.save(str(path))
    outputs = _outputs(model, inputs)
    if check_reload:
        loaded = (
            K.models.load_model(str(path), compile=False, safe_mode=False)
            if is_keras3(K)
            else (K.models.load_model(str(path), compile=False))
        )
        again = _outputs(loaded, inputs)
        for a, b in zip(outputs, again):
            if a.dtype.kind == "U":  # text
                same = np.array_equal(a, b)
            else:
                same = np.allclose(a, b, atol=1e-6, rtol=1e-5, equal_nan=True)
            if not same:
                raise SystemExit(f"{path.name}: reloaded model disagrees with the saved one")
    arrays = {f"x{i}": np.asarray(x) for i, x in enumerate(inputs)}
    arrays.update({f"y{i}": y for i, y in enumerate(outputs)})
    np.savez(folder / f"{name}__{fmt}.npz", **arrays)
    return path


def run(family: str, builders: dict, formats=FORMATS) -> None:
    """Command line: build every (or --only NAME) fixture of a family in every (or --formats) format.

    `builders[name](K, fmt)` returns (model, inputs) or None when that Keras cannot build it.
    """
    parser = argparse.ArgumentParser(description=f"Build the {family!r} fixtures with real Keras.")
    parser.add_argument("--only", nargs="*", help="fixture names to build")
    parser.add_argument("--formats", nargs="*", default=list(formats))
    args = parser.parse_args()
    for name, build in builders.items():
        if args.only and name not in args.only:
            continue
        for seed, fmt in enumerate(args.formats):
            K = keras_for(fmt)
            K.utils.set_random_seed(1234 + seed)
            built = build(K, fmt)
            if built is None:
                continue
            model, inputs = built
            randomize(model, 1000 + seed)
            path = save(family, name, fmt, model, inputs)
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


def rand(shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.RandomState(seed).normal(size=shape) * scale).astype(np.float32)
