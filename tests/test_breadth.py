"""Breadth (issue 12): keras.ops activation nodes, adaptive pooling, LayerScale, ReversibleEmbedding,
GroupQueryAttention. Agreement with real Keras on every fixture is in test_fixtures (family
`breadth`); here: the kernels against independent NumPy references, the fixtures' formats, and
the clean refusals.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, check_all_modes, convert_and_import, edit_keras_config, load_reference

from konverter import UnsupportedModel, konvert
from konverter.errors import BadModelFile
from konverter.h5reader import config as cfgmod
from konverter.layers import Layer, Tensor
from konverter.layers import activations as A
from konverter.layers.ops import activation_op

BREADTH = FIXTURES / "breadth"
rng = np.random.default_rng(12)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def fixture_names() -> set:
    return {p.stem for p in BREADTH.glob("*.npz")}


def _layers(config: dict) -> list:
    return config["config"]["layers"]


# ----------------------------------------------------------------------------- keras.ops activations
def test_threshold_matches_definition_and_keeps_float32():
    x = np.array([-1.0, 0.2, 0.2001, 3.0], dtype=np.float32)
    got = A.threshold(x, threshold=0.2, default_value=-7.0)
    np.testing.assert_array_equal(got, [-7.0, -7.0, np.float32(0.2001), 3.0])
    assert got.dtype == np.float32


def test_softmax_over_several_axes_is_one_joint_softmax():
    # keras.ops.softmax(x, axis=(1, 2)) (JAX backend): one distribution over both axes per sample.
    x = randn(2, 3, 4)
    got = A.softmax(x, axis=(1, 2))
    flat = x.reshape(2, -1).astype(np.float64)
    ref = np.exp(flat - flat.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(got.reshape(2, -1), ref, rtol=1e-5, atol=1e-7)


def test_activation_ops_exist_in_both_keras3_formats():
    names = fixture_names()
    for fmt in ("k3h5", "k3keras"):
        assert f"activation_ops__{fmt}" in names
        assert f"ops_drop_mask__{fmt}" in names


def test_relu_operation_is_an_op_node_in_both_formats():
    # keras.activations.relu on a symbolic tensor records the operation ReLU (keras.src.activations),
    # whose class name and config keys are the ReLU layer's: .keras says so in `module`, .h5 by the
    # config having neither `trainable` nor `dtype`.
    keras_entry = {"module": "keras.src.activations.activations", "class_name": "ReLU", "config": {"name": "re_lu"}}
    h5_entry = {"class_name": "ReLU", "config": {"name": "re_lu", "max_value": 6.0}}
    layer_entry = {"class_name": "ReLU", "config": {"name": "re_lu", "trainable": True, "dtype": "float32"}}
    assert cfgmod.is_op_node(keras_entry) and cfgmod.is_op_node(h5_entry)
    assert not cfgmod.is_op_node(layer_entry)


@pytest.mark.parametrize("fmt", ["k3h5", "k3keras"])
def test_relu_operation_converts_from_h5_as_from_keras(fmt, tmp_path):
    ext = "h5" if fmt == "k3h5" else "keras"
    npz = BREADTH / f"activation_ops__{fmt}.npz"
    module = convert_and_import(BREADTH / f"activation_ops__{fmt}.{ext}", tmp_path)
    xs, ys = load_reference(npz)
    relu_outputs = [i for i, n in enumerate(module.OUTPUT_NAMES) if n.startswith("re_lu")]
    assert len(relu_outputs) == 3
    got = module.predict(*xs)
    for i in relu_outputs:
        np.testing.assert_allclose(got[i], ys[i], rtol=1e-4, atol=1e-5)


def _edit_op(tmp_path, class_name: str, **changes):
    """The activation_ops fixture with the first `class_name` node's config changed."""
    model = tmp_path / "edited.keras"

    def edit(config):
        entry = next(e for e in _layers(config) if e["class_name"] == class_name)
        entry["config"].update(changes)

    return edit_keras_config(BREADTH / "activation_ops__k3keras.keras", model, edit)


@pytest.mark.parametrize(
    ("class_name", "changes", "message"),
    [
        ("Softmax", {"axis": 0}, "over the batch axis"),
        ("Softmax", {"axis": None}, "over every axis"),
        ("Elu", {"beta": 2.0}, "argument 'beta'"),
        ("Celu", {"alpha": 0.0}, "celu with alpha 0"),
    ],
)
def test_activation_op_options_keras_cannot_mean_are_refused(tmp_path, class_name, changes, message):
    with pytest.raises(UnsupportedModel, match=message):
        konvert(_edit_op(tmp_path, class_name, **changes), tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()


@pytest.mark.parametrize(
    ("class_name", "changes", "message"),
    [
        ("Elu", {"alpha": "1; import os"}, "alpha must be a number"),
        ("Glu", {"axis": [1, 2]}, "invalid for rank 3"),
        ("Threshold", {"default_value": None}, "has no default_value"),
    ],
)
def test_activation_op_options_keras_cannot_write_are_a_bad_file(tmp_path, class_name, changes, message):
    with pytest.raises(BadModelFile, match=message):
        konvert(_edit_op(tmp_path, class_name, **changes), tmp_path / "out.py")


def test_glu_over_an_odd_axis_is_a_bad_file():
    layer = Layer("g", "ops.Glu", {"name": "g", "axis": 1}, [], 3, [Tensor((5, 6))], {})
    with pytest.raises(BadModelFile, match="odd size 5"):
        activation_op(layer)
    assert layer.ops == []


def test_ops_drop_the_mask_like_keras(tmp_path):
    # Embedding(mask_zero) -> ops.relu -> GlobalAveragePooling1D: Keras averages every step, masked
    # ones included, because an operation does not carry the mask on.
    npz = BREADTH / "ops_drop_mask__k3keras.npz"
    module = convert_and_import(npz.with_suffix(".keras"), tmp_path)
    xs, ys = load_reference(npz)
    check_all_modes(module, xs, ys, "ops_drop_mask")
