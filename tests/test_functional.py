"""Functional graphs, merges, normalization and attention kernels, keras.ops nodes, multi-I/O predict.

The NumPy kernels are called directly on small arrays where a property is checkable without
Keras; graph edge cases use configs written with h5py. Real-Keras agreement is in test_fixtures.
"""

from __future__ import annotations

import json
import tracemalloc

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, convert_and_import, load_reference

from konverter import konvert
from konverter.errors import BadModelFile, UnsupportedModel
from konverter.layers.attention import additive_scores, attend, causal_scores, mha_attend
from konverter.layers.merge import (
    batch_dot,
    broadcast_shapes,
    expand_rank,
    l2_normalize,
    merge_add,
    merge_average,
    merge_maximum,
    merge_minimum,
    merge_multiply,
)
from konverter.layers.normalization import group_norm, layer_norm, unit_norm

FUNCTIONAL = FIXTURES / "functional"
rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- merges
def test_merge_broadcasting_expands_lower_ranks_after_the_batch_axis():
    a, v = randn(2, 3, 4), randn(2, 4)
    got = merge_add([a, expand_rank(v, 3)])
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, a + v[:, None, :])
    # A (batch, 3) vector does not broadcast against (batch, 3, 4) without the expansion.
    assert expand_rank(randn(2, 3), 4).shape == (2, 1, 1, 3)


def test_merge_output_shapes_follow_keras_rules():
    layer = _fake_layer()
    assert broadcast_shapes(layer, [(3, 4), (4,)]) == (3, 4)
    assert broadcast_shapes(layer, [(3, 1), (1, 5)]) == (3, 5)
    assert broadcast_shapes(layer, [(None, 4), (7, 4)]) == (7, 4)
    assert broadcast_shapes(layer, [(None, 4), (1, 4)]) == (None, 4)
    with pytest.raises(BadModelFile):
        broadcast_shapes(layer, [(3, 4), (5, 4)])


def test_elementwise_merges():
    xs = [randn(2, 5) for _ in range(3)]
    np.testing.assert_allclose(merge_multiply(xs), xs[0] * xs[1] * xs[2], rtol=1e-6)
    np.testing.assert_allclose(merge_average(xs), (xs[0] + xs[1] + xs[2]) / 3, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(merge_maximum(xs), np.max(xs, axis=0))
    np.testing.assert_array_equal(merge_minimum(xs), np.min(xs, axis=0))
    assert merge_average(xs).dtype == np.float32


@pytest.mark.parametrize(
    ("xshape", "yshape", "axes", "subscripts"),
    [
        ((2, 3, 4), (2, 5, 4), (2, 2), "bik,bjk->bij"),
        ((2, 3, 4), (2, 3, 5), (1, 1), "bki,bkj->bij"),
        ((2, 3, 4), (2, 4), (2, 1), "bik,bk->bi"),
        ((2, 4), (2, 3, 4), (1, 2), "bk,bjk->bj"),
        ((2, 3, 4, 5), (2, 5, 6), (3, 1), "bijk,bkl->bijl"),
    ],
)
def test_batch_dot_matches_einsum(xshape, yshape, axes, subscripts):
    x, y = randn(*xshape), randn(*yshape)
    got = batch_dot(x, y, *axes)
    np.testing.assert_allclose(got, np.einsum(subscripts, x, y), rtol=1e-5, atol=1e-6)


def test_batch_dot_of_two_vectors_is_a_column():
    x, y = randn(3, 4), randn(3, 4)
    got = batch_dot(x, y, 1, 1)
    assert got.shape == (3, 1)
    np.testing.assert_allclose(got[:, 0], np.sum(x * y, axis=1), rtol=1e-5)


def test_l2_normalize_is_finite_on_zero_vectors():
    x = np.zeros((2, 3), np.float32)
    x[1] = [3.0, 0.0, 4.0]
    got = l2_normalize(x, 1, 1e-12)
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_allclose(got[1], [0.6, 0.0, 0.8], rtol=1e-6)


# ----------------------------------------------------------------------------- normalization
def test_layer_norm_zero_mean_unit_variance_over_several_axes():
    x = randn(3, 4, 5) * 3 + 2
    y = layer_norm(x, None, None, (1, 2), 1e-6)
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, rtol=1e-4)
    assert y.dtype == np.float32


def test_group_norm_extremes():
    x = randn(2, 3, 6)
    # One group per channel: each channel normalized over the other axes (instance norm).
    per_channel = group_norm(x, None, None, 6, 2, 1e-5)
    np.testing.assert_allclose(per_channel, layer_norm(x, None, None, (1,), 1e-5), rtol=1e-4, atol=1e-5)
    # One group: everything but the batch axis normalized together.
    one = group_norm(x, None, None, 1, 2, 1e-5)
    np.testing.assert_allclose(one, layer_norm(x, None, None, (1, 2), 1e-5), rtol=1e-4, atol=1e-5)


def test_unit_norm_gives_unit_length():
    y = unit_norm(randn(4, 3, 2), (2,), 1e-24)
    np.testing.assert_allclose(np.linalg.norm(y, axis=2), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- attention
def test_mha_attend_single_head_equals_plain_attention():
    q, k, v = randn(2, 3, 1, 4), randn(2, 5, 1, 4), randn(2, 5, 1, 2)
    got = mha_attend(q, k, v, (1,), 0.5, False)
    s = np.einsum("bqd,bkd->bqk", q[:, :, 0] * 0.5, k[:, :, 0])
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(got[:, :, 0], w @ v[:, :, 0], rtol=1e-5, atol=1e-6)


def test_mha_attend_over_two_axes_flattens_them():
    q = randn(2, 2, 3, 2, 4)  # batch, 2 x 3 positions, 2 heads, key_dim 4
    got = mha_attend(q, q, q, (1, 2), 1.0, False)
    flat = q.reshape(2, 6, 2, 4)
    np.testing.assert_allclose(got.reshape(2, 6, 2, 4), mha_attend(flat, flat, flat, (1,), 1.0, False), rtol=1e-5)


def test_causal_attention_first_query_sees_only_first_key():
    q, v = randn(2, 4, 3), randn(2, 4, 3)
    s = causal_scores(q @ np.swapaxes(q, -1, -2))
    assert (s[:, 0, 1:] < -1e8).all() and (np.triu(s[0], 1)[np.triu_indices(4, 1)] < -1e8).all()
    out = attend(q @ np.swapaxes(q, -1, -2), v, True)
    np.testing.assert_allclose(out[:, 0], v[:, 0], rtol=1e-6)


def test_additive_scores_shape_and_values():
    q, k, scale = randn(2, 3, 4), randn(2, 5, 4), randn(4)
    s = additive_scores(q, k, scale)
    assert s.shape == (2, 3, 5)
    np.testing.assert_allclose(s[1, 2, 3], np.sum(scale * np.tanh(q[1, 2] + k[1, 3])), rtol=1e-5)


# ----------------------------------------------------------------------------- graph configs
def _fake_layer():
    from konverter.layers.base import Layer

    return Layer("m", "Add", {}, [], 3, [], {})


def _ref(name, node=0, index=0):
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, node, index]}}


def _input(name, shape):
    return {"class_name": "InputLayer", "name": name, "config": {"name": name, "batch_shape": [None, *shape]}}


def _layer(cls, name, inbound, **config):
    config = {"name": name, "trainable": True, "dtype": "float32", **config}
    return {"class_name": cls, "name": name, "config": config, "inbound_nodes": inbound}


def _op(cls, name, inbound, module="keras.src.ops.numpy", **config):
    # Keras 3's .h5 writer leaves out "module"; ops have neither "trainable" nor "dtype".
    entry = {"class_name": cls, "name": name, "config": {"name": name, **config}, "inbound_nodes": inbound}
    if module:
        entry["module"] = module
    return entry


def _write_model(path, layers, inputs, outputs, weights=None, version="3.5.0"):
    """A legacy-HDF5 full model holding a Functional config and `weights` {layer: [arrays]}."""
    config = {
        "class_name": "Functional",
        "config": {"name": "m", "layers": layers, "input_layers": inputs, "output_layers": outputs},
    }
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = version
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [e["name"].encode() for e in layers]
        for e in layers:
            g = group.create_group(e["name"])
            arrays = (weights or {}).get(e["name"], [])
            names = [f"{e['name']}/w{i}".encode() for i in range(len(arrays))]
            g.attrs["weight_names"] = names
            for n, a in zip(names, arrays):
                g.create_dataset(n.decode(), data=a)
    return path


def test_cycle_is_refused_cleanly(tmp_path):
    layers = [
        _input("x", (2,)),
        _layer("Add", "a", [{"args": [[_ref("x"), _ref("b")]], "kwargs": {}}]),
        _layer("Add", "b", [{"args": [[_ref("x"), _ref("a")]], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "cycle.h5", layers, [["x", 0, 0]], [["b", 0, 0]])
    with pytest.raises(BadModelFile, match="cycle"):
        konvert(path, tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()


@pytest.mark.parametrize("ref", [["ghost", 0, 0], ["a", 3, 0]])
def test_dangling_reference_is_refused_cleanly(tmp_path, ref):
    layers = [
        _input("x", (2,)),
        _layer("Add", "a", [{"args": [[_ref("x"), _ref("x")]], "kwargs": {}}]),
        _layer("Add", "b", [{"args": [[_ref("x"), _ref(*ref)]], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "dangling.h5", layers, [["x", 0, 0]], [["b", 0, 0]])
    with pytest.raises(BadModelFile):
        konvert(path, tmp_path / "out.py")


def test_output_never_computed_is_refused(tmp_path):
    layers = [_input("x", (2,)), _layer("Add", "a", [{"args": [[_ref("x"), _ref("x")]], "kwargs": {}}])]
    path = _write_model(tmp_path / "out_ref.h5", layers, [["x", 0, 0]], [["a", 1, 0]])
    with pytest.raises(BadModelFile, match="never computed"):
        konvert(path, tmp_path / "out.py")


@pytest.mark.parametrize("module", ["keras.src.ops.numpy", None])
def test_unsupported_ops_are_all_named_at_once(tmp_path, module):
    layers = [
        _input("x", (3,)),
        _op("Cumsum", "cumsum", [{"args": [_ref("x")], "kwargs": {}}], module=module, axis=1, dtype=None),
        _op("Sort", "sort", [{"args": [_ref("cumsum")], "kwargs": {}}], module=module),
        _layer("Lambda", "lambda", [{"args": [_ref("sort")], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "ops.h5", layers, [["x", 0, 0]], [["lambda", 0, 0]])
    with pytest.raises(UnsupportedModel) as err:
        konvert(path, tmp_path / "out.py")
    message = str(err.value)
    for part in ("'cumsum' (ops.Cumsum", "'sort' (ops.Sort", "'lambda' (Lambda"):
        assert part in message
    assert "\n" not in message


def test_op_that_touches_the_batch_axis_is_refused(tmp_path):
    layers = [
        _input("x", (3,)),
        _op("Sum", "sum", [{"args": [_ref("x")], "kwargs": {}}], axis=0, keepdims=False),
        _op("Add", "add", [{"args": [_ref("x"), 1.0], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "batch_op.h5", layers, [["x", 0, 0]], [["sum", 0, 0], ["add", 0, 0]])
    with pytest.raises(UnsupportedModel, match="'sum' \\(ops.Sum\\).*batch axis"):
        konvert(path, tmp_path / "out.py")


@pytest.mark.parametrize("module", ["keras.src.ops.numpy", None])
def test_op_add_is_not_the_add_layer(tmp_path, module):
    # keras.ops.add(x, 1.0) and keras.layers.Add share the class name "Add"; Keras 3's .h5
    # writer (module=None here) does not even record that the entry is an op.
    layers = [
        _input("x", (3,)),
        _op("Add", "add", [{"args": [_ref("x"), 1.5], "kwargs": {}}], module=module),
        _layer("Add", "add_layer", [{"args": [[_ref("add"), _ref("x")]], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "op_add.h5", layers, [["x", 0, 0]], [["add_layer", 0, 0]])
    generated = convert_and_import(path, tmp_path)
    np.testing.assert_array_equal(generated.predict([1.0, 2.0, 3.0]), [3.5, 5.5, 7.5])


def _residual_chain(tmp_path, depth: int, width: int):
    layers = [_input("x", (width,))]
    weights = {}
    prev = "x"
    for i in range(depth):
        layers.append(_layer("Dense", f"d{i}", [{"args": [_ref(prev)], "kwargs": {}}], units=width, activation="relu"))
        layers.append(_layer("Add", f"a{i}", [{"args": [[_ref(prev), _ref(f"d{i}")]], "kwargs": {}}]))
        kernel = (np.eye(width) * 0.5).astype(np.float32)
        weights[f"d{i}"] = [kernel, np.zeros(width, np.float32)]
        prev = f"a{i}"
    return _write_model(tmp_path / "chain.h5", layers, [["x", 0, 0]], [[prev, 0, 0]], weights)


def test_straight_line_code_reuses_names_and_keeps_peak_memory_flat(tmp_path):
    depth, width, batch = 30, 256, 512
    module = convert_and_import(_residual_chain(tmp_path, depth, width), tmp_path)
    source = open(module.__file__).read()
    body = source[source.index("def predict") :]
    used = {name for name in ("t0", "t1", "t2", "t3") if f"{name} = " in body}
    assert used == {"t0", "t1"}, used  # 60 layers, two live arrays at a time
    x = np.ones((batch, width), np.float32)
    expected = x * 1.5**depth
    module.predict(x)  # warm up (imports, caches)
    tracemalloc.start()
    y = module.predict(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    activation = batch * width * 4
    assert peak < 5 * activation, f"peak {peak} bytes for {activation}-byte activations"


def test_dead_branches_are_not_computed(tmp_path):
    layers = [
        _input("x", (2,)),
        _layer("Add", "unused", [{"args": [[_ref("x"), _ref("x")]], "kwargs": {}}]),
        _layer("Multiply", "used", [{"args": [[_ref("x"), _ref("x")]], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "dead.h5", layers, [["x", 0, 0]], [["used", 0, 0]])
    module = convert_and_import(path, tmp_path)
    assert "merge_add" not in open(module.__file__).read()
    np.testing.assert_array_equal(module.predict([2.0, 3.0]), [4.0, 9.0])


# ----------------------------------------------------------------------------- multi-input / output predict
@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    path = FUNCTIONAL / "two_inputs__k3keras.keras"
    module = convert_and_import(path, tmp_path_factory.mktemp("two"))
    xs, ys = load_reference(path.with_suffix(".npz"))
    return module, xs, ys[0]


def test_multi_input_calling_conventions(two_inputs):
    module, (a, b), y = two_inputs
    assert module.INPUT_NAMES == ("left", "right")
    for got in (
        module.predict(a, b),
        module.predict([a, b]),
        module.predict((a, b)),
        module.predict({"left": a, "right": b}),
        module.predict({"right": b, "left": a}),
        module.predict(a.tolist(), b.tolist()),
    ):
        np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-5)


def test_multi_input_unbatched_together(two_inputs):
    module, (a, b), y = two_inputs
    for i in range(len(a)):
        np.testing.assert_allclose(module.predict(a[i], b[i]), y[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(module.predict({"left": a[i], "right": b[i]}), y[i], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one sample, or every input as a batch"):
        module.predict(a[0], b)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, a, b: m.predict(a),
        lambda m, a, b: m.predict(a, b, b),
        lambda m, a, b: m.predict({"left": a}),
        lambda m, a, b: m.predict({"left": a, "wrong": b}),
        lambda m, a, b: m.predict(b, a),
    ],
)
def test_multi_input_mistakes_raise_value_error(two_inputs, call):
    module, (a, b), _ = two_inputs
    with pytest.raises(ValueError):
        call(module, a, b)


def test_dict_outputs_come_back_as_a_dict(tmp_path):
    path = FUNCTIONAL / "dict_outputs__k2h5.h5"
    module = convert_and_import(path, tmp_path)
    (x,), ys = load_reference(path.with_suffix(".npz"))
    got = module.predict(x)
    assert isinstance(got, dict) and list(got) == ["probs", "score"] == list(module.OUTPUT_NAMES)
    one = module.predict(x[0])
    assert one["probs"].shape == (3,) and one["score"].shape == (1,)
    np.testing.assert_allclose(got["probs"], ys[0], rtol=1e-4, atol=1e-5)


def test_list_outputs_and_docstring(tmp_path):
    path = FUNCTIONAL / "mha_cross__k3keras.keras"
    module = convert_and_import(path, tmp_path)
    xs, ys = load_reference(path.with_suffix(".npz"))
    got = module.predict(*xs)
    assert isinstance(got, list) and len(got) == 2
    single = module.predict(*[x[0] for x in xs])
    assert [s.shape for s in single] == [y.shape[1:] for y in ys]
    doc = module.__doc__
    for name in ("query", "value", "key"):
        assert name in doc
    assert "(None, 3, 7) float32" in doc and "(None, 3, 6) float32" in doc
    assert "predict(x0, x1)" in doc


def test_functional_conversion_is_deterministic(tmp_path):
    path = FUNCTIONAL / "nested_functional__k2h5.h5"
    first = konvert(path, tmp_path / "a.py").read_bytes()
    second = konvert(path, tmp_path / "b.py").read_bytes()
    assert first == second


# ----------------------------------------------------------------------------- more ops, einsum, resizing
def _slice(start=None, stop=None, step=None):
    return {"class_name": "__slice__", "config": {"start": start, "stop": stop, "step": step}}


def test_get_item_keeps_the_batch_axis_whole(tmp_path):
    key = [{"class_name": "__ellipsis__", "config": {}}, _slice(None, None, -2), 1]
    layers = [_input("x", (3, 5, 2)), _op("GetItem", "get_item", [{"args": [_ref("x"), key], "kwargs": {}}])]
    path = _write_model(tmp_path / "getitem.h5", layers, [["x", 0, 0]], [["get_item", 0, 0]])
    module = convert_and_import(path, tmp_path)
    x = randn(2, 3, 5, 2)
    assert module.OUTPUT_SHAPE == (None, 3, 3)
    np.testing.assert_array_equal(module.predict(x), x[..., ::-2, 1])
    np.testing.assert_array_equal(module.predict(x[0]), x[0, :, ::-2, 1])

    layers[1] = _op("GetItem", "get_item", [{"args": [_ref("x"), [0, _slice()]], "kwargs": {}}])
    path = _write_model(tmp_path / "getitem_batch.h5", layers, [["x", 0, 0]], [["get_item", 0, 0]])
    with pytest.raises(UnsupportedModel, match="batch axis"):
        konvert(path, tmp_path / "out.py")


def test_attention_mask_that_is_not_boolean_is_refused(tmp_path):
    # (Boolean masks given at call time convert: tests/test_masks.py.)
    call = {"args": [[_ref("q"), _ref("v")]], "kwargs": {"mask": [_ref("qm"), _ref("vm")]}}
    layers = [
        _input("q", (3, 4)),
        _input("v", (3, 4)),
        _input("qm", (3,)),
        _input("vm", (3,)),
        _layer("Attention", "attention", [call]),
    ]
    ins = [["q", 0, 0], ["v", 0, 0], ["qm", 0, 0], ["vm", 0, 0]]
    path = _write_model(tmp_path / "mask.h5", layers, ins, [["attention", 0, 0]])
    with pytest.raises(UnsupportedModel, match="'attention' \\(Attention\\): a query mask"):
        konvert(path, tmp_path / "out.py")


def test_einsum_dense_with_ellipsis_and_refusal_of_batch_contraction(tmp_path):
    kernel = randn(4, 2, 3)
    dense = _layer("EinsumDense", "ed", [{"args": [_ref("x")], "kwargs": {}}], equation="...c,cde->...de")
    path = _write_model(
        tmp_path / "ed.h5", [_input("x", (5, 4)), dense], [["x", 0, 0]], [["ed", 0, 0]], {"ed": [kernel]}
    )
    module = convert_and_import(path, tmp_path)
    x = randn(2, 5, 4)
    np.testing.assert_allclose(module.predict(x), np.einsum("btc,cde->btde", x, kernel), rtol=1e-5, atol=1e-6)
    # The file's letters never reach the generated code: Konverter writes its own equation.
    assert "...c,cde" not in open(module.__file__).read()

    mixing = _layer("EinsumDense", "ed", [{"args": [_ref("x")], "kwargs": {}}], equation="abc,ad->dbc")
    weights = {"ed": [randn(7, 2)]}
    path = _write_model(tmp_path / "ed_bad.h5", [_input("x", (5, 4)), mixing], [["x", 0, 0]], [["ed", 0, 0]], weights)
    with pytest.raises(UnsupportedModel, match="batch axis"):
        konvert(path, tmp_path / "out2.py")


def test_multi_head_attention_called_with_keyword_tensors(tmp_path):
    # mha(query=q, value=v): Keras 3 stores both as keyword arguments; key defaults to value.
    wq, bq, wk, bk = randn(4, 2, 3), randn(2, 3), randn(5, 2, 3), randn(2, 3)
    wv, bv, wo, bo = randn(5, 2, 3), randn(2, 3), randn(2, 3, 4), randn(4)
    call = {"args": [], "kwargs": {"query": _ref("q"), "value": _ref("v"), "training": False}}
    mha = _layer("MultiHeadAttention", "mha", [call], num_heads=2, key_dim=3, attention_axes=None)
    layers = [_input("q", (3, 4)), _input("v", (6, 5)), mha]
    weights = {"mha": [wq, bq, wk, bk, wv, bv, wo, bo]}
    path = _write_model(tmp_path / "mha.h5", layers, [["q", 0, 0], ["v", 0, 0]], [["mha", 0, 0]], weights)
    module = convert_and_import(path, tmp_path)
    q, v = randn(2, 3, 4), randn(2, 6, 5)
    qp = np.einsum("btc,cnd->btnd", q, wq) + bq
    kp = np.einsum("bsc,cnd->bsnd", v, wk) + bk
    vp = np.einsum("bsc,cnd->bsnd", v, wv) + bv
    s = np.einsum("btnd,bsnd->bnts", qp / np.sqrt(3.0), kp)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bnts,bsnd->btnd", w, vp)
    expected = np.einsum("btnd,nde->bte", o, wo) + bo
    np.testing.assert_allclose(module.predict(q, v), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(module.predict(q[1], v[1]), expected[1], rtol=1e-4, atol=1e-5)


def test_nested_model_node_index_out_of_range_falls_back_by_one(tmp_path):
    # A writer that shifted a nested model's node index where Konverter expects no shift
    # (["inner", 1, 0] although the model has one call): the only existing call is meant.
    inner = {
        "class_name": "Functional",
        "name": "inner",
        "config": {
            "name": "inner",
            "layers": [_input("a", (2,)), _layer("Add", "twice", [{"args": [[_ref("a"), _ref("a")]], "kwargs": {}}])],
            "input_layers": [["a", 0, 0]],
            "output_layers": [["twice", 0, 0]],
        },
        "inbound_nodes": [{"args": [_ref("x")], "kwargs": {}}],
    }
    layers = [
        _input("x", (2,)),
        inner,
        _layer("Multiply", "times_x", [{"args": [[_ref("inner", 1), _ref("x")]], "kwargs": {}}]),
    ]
    path = _write_model(tmp_path / "shifted.h5", layers, [["x", 0, 0]], [["times_x", 0, 0]])
    module = convert_and_import(path, tmp_path)
    np.testing.assert_array_equal(module.predict([1.0, 3.0]), [2.0, 18.0])


def _tf_op(function, name, node, cls="TFOpLambda"):
    return {
        "class_name": cls,
        "name": name,
        "config": {"name": name, "trainable": True, "dtype": "float32", "function": function},
        "inbound_nodes": [node],
    }


def test_tf_op_layers_with_a_constant_first_argument(tmp_path):
    # tf.keras: `2.0 - x` is tf.math.subtract with a _CONSTANT_VALUE first argument; then x[:, None, 1].
    layers = [
        _input("x", (3,)),
        _tf_op("math.subtract", "sub", ["_CONSTANT_VALUE", -1, 2.0, {"y": ["x", 0, 0], "name": None}]),
        _tf_op(
            "__operators__.getitem",
            "item",
            ["sub", 0, 0, {"slice_spec": [{"start": None, "stop": None, "step": None}, None, 1]}],
            cls="SlicingOpLambda",
        ),
    ]
    path = _write_model(tmp_path / "tfop.h5", layers, [["x", 0, 0]], [["item", 0, 0]], version="2.15.0")
    module = convert_and_import(path, tmp_path)
    assert module.OUTPUT_SHAPE == (None, 1)
    np.testing.assert_array_equal(module.predict([[1.0, 5.0, 7.0]]), [[-3.0]])


def test_unsupported_tf_functions_are_named_with_other_problems(tmp_path):
    layers = [
        _input("x", (3,)),
        _tf_op("math.cumsum", "tf.math.cumsum", ["x", 0, 0, {"axis": 1}]),
        _tf_op("math.add", "tf.math.add", ["tf.math.cumsum", 0, 0, {"y": 1.0}]),
        _layer("Lambda", "lambda", [[["tf.math.add", 0, 0, {}]]]),
    ]
    path = _write_model(tmp_path / "tfop_bad.h5", layers, [["x", 0, 0]], [["lambda", 0, 0]], version="2.15.0")
    with pytest.raises(UnsupportedModel) as err:
        konvert(path, tmp_path / "out.py")
    message = str(err.value)
    assert "'tf.math.cumsum' (TFOpLambda: TensorFlow function tf.math.cumsum not supported)" in message
    assert "'lambda' (Lambda" in message and "tf.math.add'" not in message
