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
from konverter.graph import build_program
from konverter.h5reader import config as cfgmod
from konverter.h5reader import read_model
from konverter.layers import Layer, Tensor
from konverter.layers import activations as A
from konverter.layers.adaptive_pooling import adaptive_pool, adaptive_pooling_layer, adaptive_windows
from konverter.layers.attention import mha_attend, repeat_heads
from konverter.layers.embedding import embedding_lookup, reverse_embedding
from konverter.layers.keras_hub import (
    position_embedding,
    rotary_embedding,
    rotary_inverse_freq,
    sine_position_encoding,
    sublayer_weights,
)
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


# ----------------------------------------------------------------------------- adaptive pooling
@pytest.mark.parametrize("size", range(1, 13))
@pytest.mark.parametrize("out", range(1, 13))
def test_adaptive_windows_follow_keras_bin_formula(size, out):
    # Keras: starts floor(i*n/out), ends ceil((i+1)*n/out), computed in floating point.
    got = adaptive_windows(size, out)
    starts = np.floor(np.arange(out) * size / out).astype(int)
    ends = np.ceil(np.arange(1, out + 1) * size / out).astype(int)
    assert got == tuple(zip(starts.tolist(), ends.tolist()))
    # Every cell is used, and every window has one of the two sizes Keras's "two-pool gather" knows.
    assert {c for start, end in got for c in range(start, end)} == set(range(size))
    small = -(-size // out)
    assert {end - start for start, end in got} <= {small, small + 1}


@pytest.mark.parametrize("reduce_max", [False, True])
def test_adaptive_pool_matches_a_per_cell_reference(reduce_max):
    x = randn(2, 5, 7, 3)
    windows = (adaptive_windows(5, 3), adaptive_windows(7, 4))
    got = adaptive_pool(x, windows, reduce_max, channels_first=False)
    ref = np.empty((2, 3, 4, 3), dtype=np.float64)
    for i, (h0, h1) in enumerate(windows[0]):
        for j, (w0, w1) in enumerate(windows[1]):
            box = x[:, h0:h1, w0:w1, :].astype(np.float64)
            ref[:, i, j] = box.max(axis=(1, 2)) if reduce_max else box.mean(axis=(1, 2))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32
    first = adaptive_pool(np.moveaxis(x, -1, 1), windows, reduce_max, channels_first=True)
    np.testing.assert_array_equal(np.moveaxis(first, 1, -1), got)


def test_adaptive_pool_never_returns_a_view_of_its_input():
    x = randn(2, 4, 3)
    y = adaptive_pool(x, (adaptive_windows(4, 1),), True, channels_first=False)
    assert not np.shares_memory(x, y)


def _adaptive_layer(shape, **config):
    return Layer("p", "AdaptiveMaxPooling2D", {"name": "p", **config}, [], 3, [Tensor(shape)], {})


@pytest.mark.parametrize(
    ("shape", "config", "error", "message"),
    [
        ((None, 7, 2), {"output_size": [2, 2]}, UnsupportedModel, "unknown size"),
        ((5, 7, 2), {"output_size": [2, 0]}, BadModelFile, "invalid output_size"),
        ((5, 7, 2), {"output_size": [2, 2, 2]}, BadModelFile, "invalid output_size"),
        ((5, 7, 2), {"output_size": [1 << 20, 2]}, UnsupportedModel, "more than 65536 cells"),
        ((5, 7, 2), {"output_size": [2, 2], "data_format": "nhwc"}, UnsupportedModel, "data_format"),
        ((5, 7), {"output_size": [2, 2]}, UnsupportedModel, "rank-4 input"),
    ],
)
def test_adaptive_pooling_refusals(shape, config, error, message):
    with pytest.raises(error, match=message):
        adaptive_pooling_layer(_adaptive_layer(shape, **config))


def test_adaptive_pooling_exists_in_both_keras3_formats():
    assert {"adaptive_pooling__k3h5", "adaptive_pooling__k3keras"} <= fixture_names()


# ----------------------------------------------------------------------------- LayerScale, ReversibleEmbedding
def test_layer_scale_and_convnext_exist_in_their_formats():
    names = fixture_names()
    assert {f"layer_scale__{fmt}" for fmt in ("k2h5", "k2keras", "k3h5", "k3keras")} <= names
    assert {f"convnext_small__{fmt}" for fmt in ("k2h5", "k3h5", "k3keras")} <= names
    assert {"reversible_embedding__k3h5", "reversible_embedding__k3keras"} <= names


def test_a_custom_class_named_like_layer_scale_stays_refused(tmp_path):
    model = tmp_path / "custom.keras"

    def edit(config):
        entry = next(e for e in _layers(config) if e["class_name"] == "LayerScale")
        entry["module"], entry["registered_name"] = "my_package.layers", "my_package>LayerScale"

    edit_keras_config(BREADTH / "layer_scale__k3keras.keras", model, edit)
    with pytest.raises(UnsupportedModel, match=r"LayerScale: custom object"):
        konvert(model, tmp_path / "out.py")


@pytest.mark.parametrize("cap", [None, 2.0])
@pytest.mark.parametrize("tied", [True, False])
def test_reverse_embedding_matches_definition(cap, tied):
    x, table, kernel = randn(2, 3, 4), randn(7, 4), randn(4, 7)
    got = reverse_embedding(x, table, None if tied else kernel, cap)
    logits = x.astype(np.float64) @ (table.T if tied else kernel).astype(np.float64)
    ref = logits if cap is None else np.tanh(logits / cap) * cap
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (2, 3, 7)


def test_tied_reversible_embedding_stores_its_table_once():
    # Both calls of the shared layer read the same array: the generated file embeds it once.
    program = build_program(read_model(BREADTH / "reversible_embedding__k3keras.keras"))
    lookup = next(op for op in program.ops if op.fn is embedding_lookup)
    reverse = next(op for op in program.ops if op.fn is reverse_embedding and op.args[2] is None)
    assert np.shares_memory(lookup.args[1].array, reverse.args[1].array)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"reverse_dtype": "bfloat16"}, "reverse_dtype 'bfloat16'"), ({"lora_rank": 4}, "LoRA")],
)
def test_reversible_embedding_refusals(tmp_path, changes, message):
    model = tmp_path / "edited.keras"

    def edit(config):
        for entry in _layers(config):
            if entry["class_name"] == "ReversibleEmbedding":
                entry["config"].update(changes)

    edit_keras_config(BREADTH / "reversible_embedding__k3keras.keras", model, edit)
    with pytest.raises(UnsupportedModel, match=message):
        konvert(model, tmp_path / "out.py")


# ----------------------------------------------------------------------------- GroupQueryAttention
def test_group_query_attention_exists_in_both_keras3_formats():
    assert {"group_query_attention__k3h5", "group_query_attention__k3keras"} <= fixture_names()


def test_grouped_heads_attend_to_their_groups_key_value_head():
    # 4 query heads over 2 key/value heads: query heads 0, 1 use kv head 0, heads 2, 3 kv head 1.
    q, k, v = randn(2, 5, 4, 3), randn(2, 6, 2, 3), randn(2, 6, 2, 3)
    got = mha_attend(q, repeat_heads(k, 2), repeat_heads(v, 2), axes=(1,), scale=0.5, causal=True)
    for h in range(4):
        s = 0.5 * np.einsum("btd,bsd->bts", q[:, :, h], k[:, :, h // 2]).astype(np.float64)
        s = np.where(np.tril(np.ones((5, 6), dtype=bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(got[:, :, h], p @ v[:, :, h // 2], rtol=1e-5, atol=1e-6)


def _edit_gqa(tmp_path, edit_entry):
    model = tmp_path / "edited.keras"

    def edit(config):
        entry = next(e for e in _layers(config) if e["class_name"] == "GroupQueryAttention")
        edit_entry(entry)

    return edit_keras_config(BREADTH / "group_query_attention__k3keras.keras", model, edit)


def _attention_mask(entry):
    node = entry["inbound_nodes"][0]
    node["kwargs"]["attention_mask"] = node["args"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e["config"].update(use_gate=True), "use_gate"),
        (lambda e: e["config"].update(sliding_window=2), "sliding_window"),
        (_attention_mask, "an attention_mask of shape \\(5, 6\\) \\(float32\\)"),
        (lambda e: e["inbound_nodes"][0]["kwargs"].update(return_attention_scores=True), "return_attention_scores"),
    ],
)
def test_group_query_attention_refusals(tmp_path, edit, message):
    with pytest.raises(UnsupportedModel, match=message):
        konvert(_edit_gqa(tmp_path, edit), tmp_path / "out.py")


def test_group_query_attention_with_heads_that_do_not_group_is_a_bad_file(tmp_path):
    with pytest.raises(BadModelFile, match="4 query heads for 3 key/value heads"):
        konvert(_edit_gqa(tmp_path, lambda e: e["config"].update(num_key_value_heads=3)), tmp_path / "out.py")


# ----------------------------------------------------------------------------- keras_hub
HUB = ("hub_encoder", "hub_decoder", "hub_embeddings")


def test_keras_hub_fixtures_exist_in_both_keras3_formats():
    assert {f"{name}__{fmt}" for name in HUB for fmt in ("k3h5", "k3keras")} <= fixture_names()


@pytest.mark.parametrize(
    "path",
    ["hub_bert_backbone__k3keras.keras", "hub_bert_backbone__k3h5.h5", "hub_bert_classifier__k3keras.keras"],
)
def test_keras_hub_backbone_and_task_models_are_refused_by_class_name(path, tmp_path):
    with pytest.raises(UnsupportedModel) as caught:
        konvert(BREADTH / path, tmp_path / "out.py")
    message = str(caught.value)
    assert "BertBackbone" in message or "BertTextClassifier" in message
    assert "subclassed Model, which is not supported" in message
    assert caught.value.exit_code == 4
    assert not (tmp_path / "out.py").exists()


def test_sine_position_encoding_matches_its_definition():
    x = randn(2, 5, 6)
    got = sine_position_encoding(x, max_wavelength=100.0, start=3)
    pos = np.arange(3, 8, dtype=np.float64)[:, None]
    j = np.arange(6)
    angle = pos * (1 / 100.0) ** (2 * (j // 2) / 6)
    ref = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(got, np.broadcast_to(ref, x.shape), rtol=1e-5, atol=1e-6)
    assert got.flags.writeable and got.dtype == np.float32


def test_rotary_embedding_rotates_each_feature_pair_by_position_times_frequency():
    x = randn(2, 4, 6)
    inverse = rotary_inverse_freq(6, 6, 10000.0, 1.0)
    got = rotary_embedding(x, inverse, start=0, sequence_axis=1, feature_axis=2)
    for t in range(4):
        for i in range(3):  # features i and i + 3 form one rotating pair
            a, b = x[:, t, i].astype(np.float64), x[:, t, i + 3].astype(np.float64)
            theta = t * 10000.0 ** (-2 * i / 6)
            np.testing.assert_allclose(got[:, t, i], a * np.cos(theta) - b * np.sin(theta), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[:, t, i + 3], b * np.cos(theta) + a * np.sin(theta), rtol=1e-5, atol=1e-6)


def test_position_embedding_result_is_not_a_view_of_the_table():
    table = randn(9, 4)
    got = position_embedding(randn(2, 5, 4), table, start=2)
    np.testing.assert_array_equal(got[1], table[2:7])
    assert not np.shares_memory(got, table)


def _edit_hub(tmp_path, name: str, class_name: str, edit_entry):
    """A keras_hub fixture's .keras (bare class names there, "keras_hub>Name" in .h5) edited."""
    model = tmp_path / "edited.keras"

    def edit(config):
        edit_entry(next(e for e in _layers(config) if e["class_name"] == class_name))

    return edit_keras_config(BREADTH / f"{name}__k3keras.keras", model, edit)


def _padding_mask(entry):
    node = entry["inbound_nodes"][0]
    node["kwargs"]["padding_mask"] = node["args"][0]


@pytest.mark.parametrize(
    ("name", "class_name", "edit", "message"),
    [
        ("hub_encoder", "TransformerEncoder", _padding_mask, "called with padding_mask"),
        ("hub_embeddings", "RotaryEmbedding", lambda e: e["config"].update(rope_type="yarn"), "rope_type"),
        (
            "hub_embeddings",
            "PositionEmbedding",
            lambda e: e["inbound_nodes"][0]["kwargs"].update(start_index=e["inbound_nodes"][0]["args"][0]),
            "start_index computed at run time",
        ),
        (
            "hub_encoder",
            "TransformerEncoder",
            lambda e: e.update(module="my_pkg.layers", registered_name="my_pkg>TransformerEncoder"),
            "custom object",
        ),
    ],
)
def test_keras_hub_refusals(tmp_path, name, class_name, edit, message):
    with pytest.raises(UnsupportedModel, match=message):
        konvert(_edit_hub(tmp_path, name, class_name, edit), tmp_path / "out.py")


def test_a_weight_of_no_known_sublayer_is_refused():
    layer = Layer("enc", "TransformerEncoder", {}, [randn(4)], 3, [Tensor((3, 4))], {}, weight_names=["enc/x/gamma"])
    with pytest.raises(UnsupportedModel, match="belongs to no known sublayer"):
        sublayer_weights(layer, {"norm": ("norm",)})
