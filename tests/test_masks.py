"""Keras masks (issue 12): which layers pass a mask on, drop it or read it, the NumPy math that
reads one (merges, Softmax, attention), and clean refusals where Keras's rule is not reproduced.

The fixtures in tests/fixtures/masks/ (scripts/fixtures_masks.py, real Keras in every format) are
compared with Keras by tests/test_fixtures.py; this file checks what they cannot show alone.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, assert_close, convert_and_import, edit_keras_config, load_reference

import konverter.layers  # noqa: F401  (registers every converter)
from konverter import inspect, konvert
from konverter.errors import UnsupportedModel
from konverter.layers import activations, attention, merge, ops
from konverter.layers.base import CONVERTERS, MASK_POLICY, mask_policy

MASKS = FIXTURES / "masks"
rng = np.random.RandomState(12)


def randn(*shape):
    return rng.normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- policies


# Layers that read a mask only through the keras_hub blocks' own padding masks: refused with one.
WITHOUT_POLICY = {"TransformerEncoder", "TransformerDecoder"}


def test_every_converter_says_what_it_does_with_a_mask():
    """Derived per class from Keras's supports_masking / compute_mask, never left to a default."""
    missing = sorted(n for n in CONVERTERS if n not in MASK_POLICY and n.split(">")[-1] not in WITHOUT_POLICY)
    assert missing == []


@pytest.mark.parametrize(
    ("name", "keras3", "keras2"),
    [
        # supports_masking, compute_mask not overridden: the mask goes on.
        ("Dense", "pass", "pass"),
        ("BatchNormalization", "pass", "pass"),
        ("LayerNormalization", "pass", "pass"),
        ("UnitNormalization", "pass", "pass"),
        ("Activation", "pass", "pass"),
        ("PReLU", "pass", "pass"),
        ("Dropout", "pass", "pass"),
        ("SpatialDropout2D", "pass", "pass"),
        ("GaussianNoise", "pass", "pass"),
        # Keras 3's classes support masking, tf-keras's do not (or read it: GroupNormalization).
        ("Rescaling", "pass", "drop"),
        ("Normalization", "pass", "drop"),
        ("Identity", "pass", "drop"),
        ("GroupNormalization", "pass", "own"),
        # No masking support: computed without the mask, which ends there.
        ("Conv1D", "drop", "drop"),
        ("MaxPooling1D", "drop", "drop"),
        ("Flatten", "drop", "drop"),
        ("Permute", "drop", "drop"),
        ("EinsumDense", "drop", "drop"),
        ("RMSNormalization", "drop", "drop"),
        ("Dot", "drop", "drop"),
        ("ops.Add", "drop", "drop"),
        ("ops.NotEqual", "drop", "drop"),
        ("TFOpLambda", "drop", "drop"),
        # The mask is read (or made) by the layer's own math.
        ("Softmax", "own", "own"),
        ("Add", "own", "own"),
        ("Concatenate", "own", "own"),
        ("MultiHeadAttention", "own", "own"),
        ("Attention", "own", "own"),
        ("GlobalAveragePooling1D", "own", "own"),
        ("LSTM", "own", "own"),
        ("Masking", "own", "own"),
    ],
)
def test_mask_policy_follows_each_keras(name, keras3, keras2):
    assert (mask_policy(name, 3), mask_policy(name, 2)) == (keras3, keras2)


def _sequential(tmp_path, layers, weights=None, version="3.15.1", shape=(4, 2)):
    entries = [{"class_name": "InputLayer", "config": {"name": "input", "batch_shape": [None, *shape]}}]
    for cls, config in layers:
        entries.append({"class_name": cls, "config": {"trainable": True, "dtype": "float32", **config}})
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": entries}}
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = version
        f.attrs["backend"] = "tensorflow"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [c["name"].encode() for _, c in layers]
        for _, c in layers:
            g = group.create_group(c["name"])
            arrays = (weights or {}).get(c["name"], [])
            names = [f"{c['name']}/w{i}".encode() for i in range(len(arrays))]
            g.attrs["weight_names"] = names
            for n, a in zip(names, arrays):
                g.create_dataset(n.decode(), data=a)
    return path


def test_a_layer_without_a_mask_policy_is_refused_when_a_mask_reaches_it(tmp_path, monkeypatch):
    monkeypatch.setitem(CONVERTERS, "Mystery", lambda layer: layer.input)
    path = _sequential(tmp_path, [("Masking", {"name": "masking"}), ("Mystery", {"name": "mystery"})])
    with pytest.raises(UnsupportedModel, match="'mystery' \\(Mystery\\): receives a mask"):
        konvert(path, tmp_path / "out.py")


def test_a_dropped_mask_does_not_reach_the_rnn(tmp_path):
    """Permute does not support masking: Keras computes the RNN after it on every step."""
    kernel, recurrent, bias = randn(2, 2), randn(2, 2) * 0.5, randn(2)
    layers = [
        ("Masking", {"name": "masking"}),
        ("Permute", {"name": "permute", "dims": [2, 1]}),
        ("SimpleRNN", {"name": "rnn", "units": 2, "return_sequences": True}),
    ]
    path = _sequential(tmp_path, layers, {"rnn": [kernel, recurrent, bias]}, shape=(2, 4))
    module = convert_and_import(path, tmp_path)
    x = randn(3, 2, 4)
    x[:, 1] = 0.0  # a step that Masking masks; after the Permute, a feature of zeros at every step
    h = np.zeros((3, 2), np.float32)
    want = []
    for t in range(4):
        h = np.tanh(x[:, :, t] @ kernel + h @ recurrent + bias)
        want.append(h)
    assert_close(module.predict(x), np.stack(want, axis=1))


def test_identity_layers_get_their_own_name_when_the_mask_changes(tmp_path):
    """tf-keras's Identity drops the mask: its output cannot be its input's tensor, which keeps it."""
    layers = [
        ("Masking", {"name": "masking"}),
        ("Identity", {"name": "identity"}),
        ("SimpleRNN", {"name": "rnn", "units": 2}),
    ]
    weights = {"rnn": [randn(2, 2), randn(2, 2) * 0.5, randn(2)]}
    x = randn(2, 4, 2)
    x[0, 1] = 0.0
    results = {}
    for version in ("2.15.0", "3.15.1"):
        module = convert_and_import(_sequential(tmp_path, layers, weights, version), tmp_path)
        results[version] = module.predict(x)
    assert np.array_equal(results["2.15.0"][1], results["3.15.1"][1])  # nothing masked in sample 1
    assert not np.allclose(results["2.15.0"][0], results["3.15.1"][0])  # the masked step counts in tf-keras only


# ----------------------------------------------------------------------------- merges


def test_merge_masks_and_concatenation():
    a = np.array([[True, False, True, False]])
    b = np.array([[True, True, False, False]])
    assert merge.masks_and([a, b]).tolist() == [[True, False, False, False]]
    assert merge.masks_or([a, b]).tolist() == [[True, True, True, False]]
    xs = [np.zeros((1, 4, 3), np.float32), np.zeros((1, 2, 5), np.float32)]
    joined = merge.concatenate_masks(xs, [a, None], axis=1)
    assert joined.tolist() == [[True, False, True, False, True, True]]


def test_keras3_multiply_and_extremum_with_masks():
    x = np.array([[[2.0], [3.0], [5.0]]], np.float32)
    y = np.array([[[7.0], [-1.0], [4.0]]], np.float32)
    mx = np.array([[True, False, False]])
    my = np.array([[True, True, False]])
    # A masked position counts as 1; positions both mask are 0 (every input masked).
    assert merge.merge_multiply_masked([x, y], [mx, my]).ravel().tolist() == [14.0, -1.0, 0.0]
    # One input unmasked: no zeroing, the masked side still counts as 1.
    assert merge.merge_multiply_masked([x, y], [mx, None]).ravel().tolist() == [14.0, -1.0, 4.0]
    # Where one side is masked the other's value wins; where both are, the first's stays.
    assert merge.merge_extremum_masked([x, y], [mx, my], True).ravel().tolist() == [7.0, -1.0, 5.0]
    assert merge.merge_extremum_masked([x, y], [mx, my], False).ravel().tolist() == [2.0, -1.0, 5.0]
    assert merge.merge_extremum_masked([x, y], [mx, None], False).ravel().tolist() == [2.0, -1.0, 4.0]


# ----------------------------------------------------------------------------- Softmax


def test_softmax_masked_by_rule():
    x = np.array([[[1.0, 2.0, 3.0], [0.5, -0.5, 4.0]]], np.float32)
    keep = np.array([[[True, False, True], [False, False, False]]])
    where = activations.softmax_masked(x, keep, -1, additive=False, zero_masked=True)
    e = np.exp(np.array([1.0, 3.0]) - 3.0)
    assert_close(where[0, 0], np.array([e[0] / e.sum(), 0.0, e[1] / e.sum()]))
    assert np.array_equal(where[0, 1], np.zeros(3))  # Keras 3.10+: a fully masked row is zeros
    added = activations.softmax_masked(x, keep, -1, additive=True, zero_masked=False)
    assert_close(added[0, 0], where[0, 0])
    assert_close(added[0, 1], np.full(3, 1 / 3))  # tf-keras: x - 1e9 everywhere, nearly uniform
    # A float mask: added as it is (tf-keras), or kept where above 0.5 (Keras 3.13+).
    half = np.array([[[1.0, 0.2, 0.7], [1.0, 1.0, 1.0]]], np.float32)
    assert_close(activations.softmax_masked(x, half, -1, False, True)[0, 0], where[0, 0])


def _softmax_model(tmp_path, version):
    path = tmp_path / f"softmax_{version}.h5"
    shutil.copy(MASKS / "softmax__k3h5.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = version
    return path


def test_softmax_follows_the_writers_keras_version(tmp_path):
    """Keras 3 before 3.10 added -1e9 to masked scores and kept a fully masked row uniform; 3.10+
    gives zeros there (the fixture: 3.15). Elsewhere the versions agree."""
    xs, ys = load_reference(MASKS / "softmax__k3h5.npz")
    old = convert_and_import(_softmax_model(tmp_path, "3.9.2"), tmp_path).predict(*xs)[0]
    hidden = ~xs[1].any(axis=-1)  # rows that the mask hides entirely
    assert hidden.any()
    assert_close(old[~hidden], ys[0][~hidden])
    assert_close(old[hidden], np.full((int(hidden.sum()), 4), 0.25, np.float32))
    assert np.all(ys[0][hidden] == 0.0)


def test_softmax_of_keras_3_11_matches_and_an_unknown_version_is_refused(tmp_path):
    """3.10-3.12 added -1e9 and then scaled by the mask: for a boolean mask the same numbers as the
    fixture's 3.15. Without a version Konverter cannot tell which rule applies."""
    xs, ys = load_reference(MASKS / "softmax__k3h5.npz")
    module = convert_and_import(_softmax_model(tmp_path, "3.11.0"), tmp_path)
    for got, want in zip(module.predict(*xs), ys):
        assert_close(got, want)
    with pytest.raises(UnsupportedModel, match="unknown Keras version"):
        konvert(_softmax_model(tmp_path, "3.x"), tmp_path / "out.py")


def test_softmax_with_a_mask_of_lower_rank_is_refused(tmp_path):
    """A (batch, steps) mask meets a (batch, steps, features) input right-aligned in Keras: its
    batch axis would land on the steps. Refused, not broadcast."""
    layers = [("Masking", {"name": "masking"}), ("Softmax", {"name": "softmax"})]
    with pytest.raises(UnsupportedModel, match="'softmax' \\(Softmax\\): a mask of shape \\(4,\\)"):
        konvert(_sequential(tmp_path, layers), tmp_path / "out.py")


# ----------------------------------------------------------------------------- attention


def _naive_attention(q, k, v, keep, scale, penalty, zero):
    """Per sample and head, with Python loops: scores, masked scores replaced, softmax, weights."""
    b, t, n, _ = q.shape
    out = np.zeros((b, t, n, v.shape[-1]), np.float64)
    for i in range(b):
        for h in range(n):
            s = (q[i, :, h] * scale) @ k[i, :, h].T
            s = np.where(keep[min(i, len(keep) - 1)], s, penalty)
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            if zero:
                p = np.where(keep[min(i, len(keep) - 1)], p, 0.0)
            out[i, :, h] = p @ v[i, :, h]
    return out


@pytest.mark.parametrize("zero", [False, True])
def test_mha_attend_masked_against_loops(zero):
    q, k, v = randn(3, 4, 2, 5), randn(3, 6, 2, 5), randn(3, 6, 2, 3)
    query_mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]], bool)
    value_mask = np.array([[1, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    keep = attention.attention_keep(query_mask, value_mask, None, None)
    assert keep.shape == (3, 4, 6) and keep[1].sum() == 0 and not keep[0, 2].any()
    penalty = attention.KERNEL_PENALTY
    got = attention.mha_attend_masked(q, k, v, keep, 0.5, False, penalty, False, zero)
    assert_close(got, _naive_attention(q, k, v, keep, 0.5, penalty, zero))
    if not zero:  # the fused kernel: a fully masked row averages every value
        assert_close(got[1, 0], v[1].mean(axis=0))
    else:
        assert np.all(got[1] == 0.0)


def test_mha_attend_masked_causal_combines_masks_once():
    q, k, v = randn(2, 3, 1, 4), randn(2, 3, 1, 4), randn(2, 3, 1, 2)
    keep = attention.attention_keep(None, np.array([[0, 1, 1], [1, 1, 1]], bool), None, None)
    got = attention.mha_attend_masked(q, k, v, keep, 1.0, True, -1e9, True, False)
    lower = np.tril(np.ones((3, 3), bool))
    # Step 0 of sample 0 sees only step 0, which the value mask hides: a position that both masks
    # hide loses 1e9 once (tf-keras ANDs the masks first), so that row is uniform, not skewed.
    s = q[0, :, 0] @ k[0, :, 0].T
    masked = s + (1.0 - (keep[0] & lower).astype(np.float32)) * -1e9
    p = np.exp(masked - masked.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    assert_close(got[0, :, 0], p @ v[0, :, 0])
    assert_close(got[0, 0, 0], v[0, :, 0].mean(axis=0))


def test_attention_keep_with_key_and_given_masks():
    q = np.array([[True, False]])
    v = np.array([[True, True, False]])
    k = np.array([[False, True, True]])
    given = np.array([[[True, True, True], [True, True, True]]])
    keep = attention.attention_keep(q, v, k, given)
    assert keep.tolist() == [[[False, True, False], [False, False, False]]]


def test_dense_attention_masks_rows_and_columns():
    s, v = randn(2, 3, 4), randn(2, 4, 2)
    value_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    query_mask = np.array([[1, 0, 1], [1, 1, 1]], bool)
    got = attention.attend_masked(s, v, value_mask, query_mask, False)
    assert np.all(got[0, 1] == 0.0)
    weights = np.exp(s[0, 0, :2] - s[0, 0, :2].max())
    assert_close(got[0, 0], (weights / weights.sum()) @ v[0, :2])
    assert_close(got[1], attention.attend(s[1:], v[1:], False)[0])


def _edit_attention_inputs(config):
    """The `dropout` attention reads the `cross` attention's Masking outputs: two attentions side by
    side on one masked tensor."""
    layers = config["config"]["layers"]
    attentions = [e for e in layers if e["class_name"] == "MultiHeadAttention"]
    cross, dropout = attentions[0], attentions[1]
    dropout["inbound_nodes"][0]["args"] = json.loads(json.dumps(cross["inbound_nodes"][0]["args"]))


def test_side_by_side_attention_on_one_masked_tensor_is_refused_in_keras3(tmp_path):
    """Keras 3.7+'s MultiHeadAttention deletes its inputs' masks; which of two side-by-side readers
    runs first is Keras's graph order. Konverter refuses instead of guessing."""
    path = edit_keras_config(
        MASKS / "multi_head_attention__k3keras.keras", tmp_path / "m.keras", _edit_attention_inputs
    )
    with pytest.raises(UnsupportedModel, match="Keras 3.7\\+ deletes that mask"):
        konvert(path, tmp_path / "out.py")


def _residual_from_the_masking(config):
    """The residual Add reads the Masking's output instead of the Dropout's (the same array): in
    Keras that tensor keeps its mask after the attention, which deletes only the Dropout's."""
    layers = config["config"]["layers"]
    add = next(e for e in layers if e["class_name"] == "Add")
    dropout = next(e for e in layers if e["class_name"] == "Dropout")
    add["inbound_nodes"][0]["args"][0][0] = dropout["inbound_nodes"][0]["args"][0]


def test_attention_deleting_the_mask_of_one_name_of_a_shared_array(tmp_path):
    """Dropout passes its input array on: Konverter's one array stands for two Keras tensors. The
    fixture's residual reads the Dropout's (converted and compared with Keras by test_fixtures);
    reading the Masking's instead, which keeps its mask in Keras, is refused."""
    source = MASKS / "multi_head_attention__k3keras.keras"
    path = edit_keras_config(source, tmp_path / "m.keras", _residual_from_the_masking)
    with pytest.raises(UnsupportedModel, match="'add[^']*' also reads"):
        konvert(path, tmp_path / "out.py")


def test_masked_attention_from_a_torch_file_is_refused(tmp_path):
    path = tmp_path / "torch.h5"
    shutil.copy(MASKS / "group_query_attention__k3h5.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["backend"] = "torch"
    with pytest.raises(UnsupportedModel, match="torch-backend"):
        konvert(path, tmp_path / "out.py")


def test_tf_keras_group_normalization_with_a_mask_is_refused(tmp_path):
    layers = [
        ("Masking", {"name": "masking"}),
        ("GroupNormalization", {"name": "gn", "groups": 1, "axis": -1, "epsilon": 1e-3}),
    ]
    weights = {"gn": [np.ones(2, np.float32), np.zeros(2, np.float32)]}
    with pytest.raises(UnsupportedModel, match="weighted by the mask"):
        konvert(_sequential(tmp_path, layers, weights, version="2.15.0"), tmp_path / "out.py")


# ----------------------------------------------------------------------------- mask ops and the issue's model


def test_boolean_ops_for_keras3_mask_graphs():
    x = np.array([[[0.0, 0.0], [1.0, 0.0]]], np.float32)
    assert ops.op_any(ops.op_not_equal(x, 0.0), axis=(2,), keepdims=False).tolist() == [[False, True]]
    assert ops.op_all(x == 0.0, axis=(2,), keepdims=False).tolist() == [[True, False]]
    ones = ops.op_full_like(x, 1, "bool")
    assert ones.dtype == bool and ones.shape == x.shape and ones.all()
    assert ops.op_logical_or(ones, ~ones).all() and not ops.op_logical_and(ones, ~ones).any()


@pytest.mark.parametrize("fmt", ["k2h5", "k2keras", "k3h5", "k3keras"])
@pytest.mark.parametrize("name", ["issue_sequential", "issue_functional"])
def test_the_issues_model_converts_in_every_format(name, fmt):
    """A bidirectional GRU on Masking, then BatchNormalization: refused with "receives a mask" before."""
    path = next(MASKS.glob(f"{name}__{fmt}.*[5s]"))
    summary = inspect(path)
    assert summary.convertible, summary.problems


def test_mask_fixtures_exist_in_their_formats():
    names = {p.stem for p in MASKS.glob("*.npz")}
    for name in ("pass_through", "version_dependent", "dropped", "merges", "attention", "softmax"):
        assert {f"{name}__{fmt}" for fmt in ("k2h5", "k3h5", "k3keras")} <= names
    assert {f"group_query_attention__{fmt}" for fmt in ("k3h5", "k3keras")} <= names
