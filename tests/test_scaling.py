"""Time grows with what the file holds (issue 15, section 2): every pass over the graph is linear.

Each case is built in memory at two sizes, n and 10n; a linear pipeline takes ~10x as long, a
quadratic one ~100x. The bound (30x) leaves room for a noisy machine without hiding a quadratic pass.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from konverter import pipeline
from konverter.h5reader import ModelFile

RATIO = 30.0


def _dense(name: str, units: int, inbound: list | None = None) -> dict:
    entry = {
        "class_name": "Dense",
        "config": {
            "name": name,
            "trainable": True,
            "dtype": "float32",
            "units": units,
            "activation": "linear",
            "use_bias": True,
        },
    }
    if inbound is not None:
        entry["inbound_nodes"] = [[[inbound, 0, 0, {}]]]
    return entry


def _rescaling(name: str, scale: float, inbound: list | None = None) -> dict:
    entry = {
        "class_name": "Rescaling",
        "config": {"name": name, "trainable": True, "dtype": "float32", "scale": scale, "offset": 0.0},
    }
    if inbound is not None:
        entry["inbound_nodes"] = [[[inbound, 0, 0, {}]]]
    return entry


def sequential_chain(n: int, rescaling_every: int = 0, same_names: bool = False) -> ModelFile:
    """n Dense(4) layers (with a Rescaling before every k-th one), as a Keras 2 Sequential."""
    layers = [{"class_name": "InputLayer", "config": {"name": "x", "batch_input_shape": [None, 4]}}]
    weights = {}
    rng = np.random.default_rng(0)
    for i in range(n):
        if rescaling_every and i % rescaling_every == 0:
            layers.append(_rescaling(f"r{i}", 0.5))
        layers.append(_dense("d" if same_names else f"d{i}", 4))
        weights[("d" if same_names else f"d{i}",)] = [
            rng.normal(size=(4, 4)).astype(np.float32),
            np.zeros(4, np.float32),
        ]
    config = {"class_name": "Sequential", "config": {"name": "chain", "layers": layers}}
    return ModelFile("chain.h5", "h5", "2.21.0", "tensorflow", config, weights)


def rescaling_run(n: int) -> ModelFile:
    """n Rescaling layers in a row, then one Dense."""
    model = sequential_chain(1)
    layers = model.config["config"]["layers"]
    layers[1:1] = [_rescaling(f"r{i}", 0.5) for i in range(n)]
    return model


def reversed_functional(n: int) -> ModelFile:
    """A Functional chain of n Dense layers whose config lists the layers in reverse order."""
    layers = [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_input_shape": [None, 4]}, "inbound_nodes": []}
    ]
    weights = {}
    previous = "x"
    body = []
    for i in range(n):
        body.append(_dense(f"d{i}", 4, previous))
        weights[(f"d{i}",)] = [np.eye(4, dtype=np.float32), np.zeros(4, np.float32)]
        previous = f"d{i}"
    config = {
        "class_name": "Functional",
        "config": {
            "name": "reversed",
            "layers": layers + body[::-1],
            "input_layers": [["x", 0, 0]],
            "output_layers": [[previous, 0, 0]],
        },
    }
    return ModelFile("reversed.h5", "h5", "2.21.0", "tensorflow", config, weights)


def _seconds(make, n: int) -> float:
    model = make(n)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        program = pipeline.build(model)
        pipeline.emit(pipeline.optimize(program), model, model.path, "0" * 64)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize(
    "make, n",
    [
        (sequential_chain, 300),
        (lambda n: sequential_chain(n, rescaling_every=1), 200),
        (rescaling_run, 200),
        (lambda n: sequential_chain(n, same_names=True), 300),
        (reversed_functional, 200),
    ],
    ids=["dense-chain", "rescaling-next-to-dense", "rescaling-run", "repeated-names", "functional-listed-in-reverse"],
)
def test_building_and_rewriting_scale_linearly(make, n):
    small, large = _seconds(make, n), _seconds(make, 10 * n)
    assert large < RATIO * max(small, 1e-3), f"{n} -> {10 * n} layers: {small:.3f}s -> {large:.3f}s"


def test_reversed_functional_still_computes_the_chain():
    program = pipeline.build(reversed_functional(50))
    assert [op.layer.split(" ")[0].strip("'") for op in program.ops] == [f"d{i}" for i in range(50)]


# ----------------------------------------------------------------------------- rewrites keep Keras's overflow
@pytest.mark.parametrize("scale", [1e40, 1e30, -3e38], ids=["beyond-float32", "huge", "near-max"])
def test_rescaling_by_a_huge_scale_is_not_folded_and_overflows_like_keras(scale, tmp_path):
    import warnings

    model = sequential_chain(1, rescaling_every=1)
    model.config["config"]["layers"][1]["config"]["scale"] = scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # conversion is quiet: no NumPy RuntimeWarning
        program = pipeline.build(model)
        source = pipeline.emit(pipeline.optimize(program), model, model.path, "0" * 64)
    path = tmp_path / "huge_scale.py"
    path.write_text(source, encoding="utf-8")
    from conftest import import_file

    module = import_file(path)
    kernel, bias = model.weights[("d0",)]
    x = np.array([[1.0, -2.0, 0.5, 1e9], [1e-9, 0.0, 1e-30, 2.0]], dtype=np.float32)
    with np.errstate(all="ignore"):  # Keras's float32 arithmetic, one layer after the other
        expected = (x * np.float32(scale)) @ kernel + bias
    got = module.predict(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    assert not finite.all(), "the case needs an overflow"
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5)
