"""Keras 2.0-2.2 dialect variants of real tf-keras fixtures (no TensorFlow needed to run this).

Standalone Keras 2.2 needs TensorFlow 1.x, which does not install on current Python. Its `.h5`
files differ from tf-keras's only in how they are stored, so this script rewrites real tf-keras
files (`<name>__k2h5.h5`) into that dialect and keeps Keras's reference outputs:
- root and model_weights attributes as fixed-length byte strings (h5py 2.x wrote `|S` arrays);
- `keras_version` "2.2.2", Sequential config as a bare list of layers without an InputLayer, the
  first layer carrying `batch_input_shape` (Keras <= 2.2.2); Functional models named class `Model`;
- variant `__k22chunked`: `layer_names` split into `layer_names0`, `layer_names1`, ... chunks, as
  Keras does when the list outgrows the HDF5 attribute limit.
Run: `python scripts/fixtures_keras22.py` (writes beside the sources in tests/fixtures/core/).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SOURCES = [
    "core/dense_relu",
    "core/name_order",
    "core/activations_b",
    "core/sequence_layers",
    "core/nested_sequential",
    "functional/residual_mlp",
    "functional/two_inputs",
    "functional/two_outputs",
    "functional/shared_thrice",
    "functional/nested_functional",
    "functional/nested_sequential",
    "functional/nested_deep",
    "recurrent/gru_reset_before",
]


def to_bytes_array(names: list) -> np.ndarray:
    return np.array([n.encode("utf-8") for n in names], dtype="S")


def _names(value) -> list:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def old_config(config: dict) -> dict:
    if config["class_name"] == "Sequential":
        layers = [layer for layer in config["config"]["layers"]]
        if layers and layers[0]["class_name"] == "InputLayer":
            first_input = layers.pop(0)["config"]
            layers[0]["config"]["batch_input_shape"] = first_input["batch_input_shape"]
        return {"class_name": "Sequential", "config": [_strip(layer) for layer in layers]}
    if config["class_name"] == "Functional":
        return {"class_name": "Model", "config": _old_functional(config["config"])}
    return config


def _old_functional(cfg: dict) -> dict:
    """Keras 2.2 named every Functional model class `Model`, nested ones included."""
    layers = []
    for layer in cfg["layers"]:
        layer = dict(layer)
        layer.pop("module", None)
        layer.pop("registered_name", None)
        if layer["class_name"] == "Functional":
            layer["class_name"] = "Model"
            layer["config"] = _old_functional(layer["config"])
        layers.append(layer)
    return {**cfg, "layers": layers}


def _strip(layer: dict) -> dict:
    """Keras 2.2 wrote no module/registered_name keys; nested Sequentials kept their dict form."""
    layer = {k: v for k, v in layer.items() if k in ("class_name", "config")}
    if layer["class_name"] == "Sequential":
        inner = layer["config"]
        layer["config"] = {"name": inner["name"], "layers": [_strip(x) for x in inner["layers"]]}
    return layer


def rewrite(source: Path, target: Path, chunked: bool) -> None:
    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = np.bytes_(json.dumps(old_config(config)).encode())
        f.attrs["keras_version"] = np.bytes_(b"2.2.2")
        f.attrs["backend"] = np.bytes_(b"tensorflow")
        if "training_config" in f.attrs:
            del f.attrs["training_config"]
        mw = f["model_weights"]
        names = _names(mw.attrs["layer_names"])
        mw.attrs["keras_version"] = np.bytes_(b"2.2.2")
        mw.attrs["backend"] = np.bytes_(b"tensorflow")
        del mw.attrs["layer_names"]
        if chunked:
            for i, start in enumerate(range(0, len(names), 2)):
                mw.attrs[f"layer_names{i}"] = to_bytes_array(names[start : start + 2])
        else:
            mw.attrs["layer_names"] = to_bytes_array(names)
        for name in names:
            group = mw[name]
            weights = _names(group.attrs["weight_names"]) if group.attrs["weight_names"].size else []
            del group.attrs["weight_names"]
            if chunked and len(weights) > 1:
                for i, start in enumerate(range(0, len(weights), 1)):
                    group.attrs[f"weight_names{i}"] = to_bytes_array(weights[start : start + 1])
            else:
                group.attrs["weight_names"] = to_bytes_array(weights) if weights else np.array([], dtype="S1")


def main() -> None:
    for stem in SOURCES:
        source = FIXTURES / f"{stem}__k2h5.h5"
        for tag, chunked in (("k22h5", False), ("k22chunked", True)):
            if chunked and not stem.endswith("name_order"):
                continue
            if not (FIXTURES / f"{stem}__k2h5.h5").exists():
                continue
            target = FIXTURES / f"{stem}__{tag}.h5"
            rewrite(source, target, chunked)
            shutil.copyfile(source.with_suffix(".npz"), target.with_suffix(".npz"))
            print(f"wrote {target.relative_to(FIXTURES.parent.parent)}")


if __name__ == "__main__":
    main()
