"""Shared test helpers: convert a fixture, import the generated module, compare with Keras's outputs."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
_counter = itertools.count()


def model_file_for(npz: Path) -> Path:
    """The model file that an `<name>__<fmt>.npz` reference belongs to."""
    for ext in (".h5", ".keras", ".hdf5"):
        candidate = npz.with_suffix(ext)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no model file next to {npz}")


def import_file(path: Path):
    """Import a generated module from its path under a unique name."""
    name = f"konverter_generated_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def convert_and_import(model_path: Path, out_dir: Path, **options):
    from konverter import konvert

    out = konvert(model_path, out_dir / (model_path.stem + ".py"), **options)
    return import_file(out)


def edit_keras_config(source: Path, target: Path, edit) -> Path:
    """Copy a .keras archive with its config.json changed by `edit(config)` (weights untouched)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            out.writestr(info, data)
    return target


def assert_close(got, ref, what: str = "") -> None:
    """|got - ref| <= 1e-5 + 1e-4 * |ref| elementwise, shapes equal, NaN where Keras has NaN."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != Keras {ref.shape}"
    if ref.dtype.kind == "U":  # text outputs (StringLookup invert) are equal or not
        assert np.array_equal(got, ref), f"{what}: {got!r} != Keras {ref!r}"
        return
    both_nan = np.isnan(got) & np.isnan(ref)
    err = np.where(both_nan, 0.0, np.abs(got.astype(np.float64) - ref.astype(np.float64)))
    bound = 1e-5 + 1e-4 * np.abs(ref.astype(np.float64))
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} values off, worst at {i}: got {got[i]} Keras {ref[i]}")


def load_reference(npz: Path) -> tuple[list, list]:
    with np.load(npz, allow_pickle=False) as data:
        xs = [data[f"x{i}"] for i in range(len([k for k in data.files if k.startswith("x")]))]
        ys = [data[f"y{i}"] for i in range(len([k for k in data.files if k.startswith("y")]))]
    return xs, ys


def as_output_list(module, result) -> list:
    if isinstance(result, dict):
        return [result[name] for name in module.OUTPUT_NAMES]
    if isinstance(result, list):
        return result
    return [result]


def check_all_modes(module, xs: list, ys: list, label: str) -> None:
    """Batch, batch of 1 and unbatched predictions all equal Keras's outputs."""
    before = [x.copy() for x in xs]
    got = as_output_list(module, module.predict(*xs))
    assert len(got) == len(ys), f"{label}: {len(got)} outputs, Keras has {len(ys)}"
    for k, (g, y) in enumerate(zip(got, ys)):
        assert_close(g, y, f"{label} batch output {k}")
    for i in range(len(xs[0])):
        one = as_output_list(module, module.predict(*[x[i : i + 1] for x in xs]))
        single = as_output_list(module, module.predict(*[x[i] for x in xs]))
        for k, y in enumerate(ys):
            assert_close(one[k], y[i : i + 1], f"{label} batch-of-1 sample {i} output {k}")
            assert_close(single[k], y[i], f"{label} unbatched sample {i} output {k}")
    for x, b in zip(xs, before):
        assert np.array_equal(x, b, equal_nan=x.dtype.kind == "f"), f"{label}: predict modified its input"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
