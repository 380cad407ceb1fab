"""LocallyConnected1D/2D: the converter and its NumPy function against naive loop references.

The references restate tf-keras's own computation the slow way, from each implementation's stored
kernel: implementation 1 one window product per output position, 2 the dense matrix times its
connectivity mask, 3 the sparse matrix built from the sorted (output, input) index pairs. They cover
options the fixtures (real tf-keras, tests/fixtures/locally_connected/) leave out; the fixtures check
batch, batch-of-1 and unbatched prediction through the generated file (tests/test_fixtures.py).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from conftest import FIXTURES

from konverter.errors import BadModelFile, UnsupportedModel
from konverter.layers import CONVERTERS, Layer, Tensor
from konverter.layers.base import Const
from konverter.layers.locally_connected import locally_connected, window_geometry

RNG = np.random.default_rng(12)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- tf-keras, the slow way


def output_length(n, k, s, padding):
    return -(-(n - k + 1) // s) if padding == "valid" else -(-n // s)


def connected_inputs(n, k, s, p, padding):
    """The inputs output position p reads along one axis (tf-keras conv_connected_inputs)."""
    centre = p * s + (k // 2 if padding == "valid" else 0)
    return range(max(0, centre - k // 2), min(n, centre - k // 2 + k))


def stored_kernel_shape(implementation, size, out, channels, filters, kernel_size, first, pairs):
    if implementation == 1:
        return (math.prod(out), math.prod(kernel_size) * channels, filters)
    if implementation == 2:
        return (channels, *size, filters, *out) if first else (*size, channels, *out, filters)
    return (len(pairs),)


def index_pairs(size, out, channels, filters, kernel_size, strides, padding, first):
    """Sorted (output index, input index) pairs of implementation 3's sparse matrix."""
    pairs = []
    for p in itertools.product(*[range(o) for o in out]):
        reads = [connected_inputs(n, k, s, q, padding) for n, k, s, q in zip(size, kernel_size, strides, p)]
        for i in itertools.product(*reads):
            for c in range(channels):
                for f in range(filters):
                    if first:
                        o_idx = np.ravel_multi_index((f, *p), (filters, *out))
                        i_idx = np.ravel_multi_index((c, *i), (channels, *size))
                    else:
                        o_idx = np.ravel_multi_index((*p, f), (*out, filters))
                        i_idx = np.ravel_multi_index((*i, c), (*size, channels))
                    pairs.append((int(o_idx), int(i_idx)))
    return sorted(pairs)


def keras_reference(x, kernel, bias, filters, implementation, kernel_size, strides, padding, first):
    """tf-keras's LocallyConnected output (no activation), in float64."""
    x = x.astype(np.float64)
    n_batch = x.shape[0]
    size = x.shape[2:] if first else x.shape[1:-1]
    channels = x.shape[1] if first else x.shape[-1]
    out = tuple(output_length(n, k, s, padding) for n, k, s in zip(size, kernel_size, strides))
    flat = x.reshape(n_batch, -1)
    if implementation == 1:
        y = np.zeros((n_batch, *out, filters))
        for index, p in enumerate(itertools.product(*[range(o) for o in out])):
            window = tuple(slice(q * s, q * s + k) for q, s, k in zip(p, strides, kernel_size))
            cell = x[(slice(None), slice(None)) + window] if first else x[(slice(None),) + window]
            y[(slice(None),) + p] = cell.reshape(n_batch, -1) @ kernel[index]
        y = np.moveaxis(y, -1, 1) if first else y
    elif implementation == 2:
        mask = np.zeros(tuple(size) + out, dtype=bool)
        for p in itertools.product(*[range(o) for o in out]):
            reads = [connected_inputs(n, k, s, q, padding) for n, k, s, q in zip(size, kernel_size, strides, p)]
            for i in itertools.product(*reads):
                mask[i + p] = True
        mask = mask.reshape((1, *size, 1, *out) if first else (*size, 1, *out, 1))
        dense = (kernel * mask).reshape(flat.shape[1], -1)
        y = (flat @ dense).reshape((n_batch, filters, *out) if first else (n_batch, *out, filters))
    else:
        pairs = index_pairs(size, out, channels, filters, kernel_size, strides, padding, first)
        sparse = np.zeros((math.prod(out) * filters, flat.shape[1]))
        sparse[tuple(np.array(pairs).T)] = kernel
        y = (flat @ sparse.T).reshape((n_batch, filters, *out) if first else (n_batch, *out, filters))
    if bias is not None:  # bias_add: channels_first reshapes the (*out, F) bias to (F, *out)
        y = y + (bias.reshape((1, filters) + out) if first else bias[None])
    return y


# ----------------------------------------------------------------------------- converting one layer


def convert(class_name, config, input_shape, weights):
    layer = Layer("lc", class_name, {"name": "lc", **config}, list(weights), 2, [Tensor(input_shape)], {})
    return CONVERTERS[class_name](layer), layer


def run(layer, x):
    """Evaluate the recorded ops as the generated predict() does."""
    env = {id(layer.args[0]): x}

    def value(v):
        return env[id(v)] if isinstance(v, Tensor) else v.array if isinstance(v, Const) else v

    for op in layer.ops:
        env[id(op.outputs[0])] = op.fn(*[value(a) for a in op.args], **{k: value(v) for k, v in op.kwargs.items()})
    return env[id(layer.ops[-1].outputs[0])]


GEOMETRY_1D = [
    ("valid", (3,), (1,)),
    ("valid", (2,), (3,)),  # strides longer than the kernel: inputs skipped
    ("same", (2,), (1,)),  # even kernel: the extra zero goes before, not after as in Conv1D
    ("same", (3,), (2,)),
    ("same", (4,), (3,)),
    ("same", (9,), (1,)),  # longer than the input
    ("same", (8,), (3,)),
]
GEOMETRY_2D = [
    ("valid", (3, 2), (1, 2)),
    ("valid", (2, 2), (3, 1)),
    ("same", (2, 3), (2, 1)),
    ("same", (3, 3), (1, 1)),
    ("same", (9, 2), (1, 3)),
    ("same", (4, 5), (3, 2)),
]
CASES = [
    (impl, padding, kernel_size, strides)
    for impl in (1, 2, 3)
    for padding, kernel_size, strides in GEOMETRY_1D + GEOMETRY_2D
    if impl != 1 or padding == "valid"
]


@pytest.mark.parametrize("implementation,padding,kernel_size,strides", CASES)
@pytest.mark.parametrize("first", [False, True], ids=["channels_last", "channels_first"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_every_implementation_matches_tf_keras_computation(
    implementation, padding, kernel_size, strides, first, use_bias
):
    nd = len(kernel_size)
    size, channels, filters = (7,) if nd == 1 else (5, 4), 3 if nd == 1 else 2, 3
    out = tuple(output_length(n, k, s, padding) for n, k, s in zip(size, kernel_size, strides))
    pairs = (
        index_pairs(size, out, channels, filters, kernel_size, strides, padding, first) if implementation == 3 else []
    )
    kernel = rand(*stored_kernel_shape(implementation, size, out, channels, filters, kernel_size, first, pairs))
    bias = rand(*out, filters) if use_bias else None
    shape = (channels, *size) if first else (*size, channels)
    x = rand(4, *shape)
    config = {
        "filters": filters,
        "kernel_size": list(kernel_size),
        "strides": list(strides),
        "padding": padding,
        "data_format": "channels_first" if first else "channels_last",
        "use_bias": use_bias,
        "activation": "linear",
        "implementation": implementation,
    }
    class_name = f"LocallyConnected{nd}D"
    result, layer = convert(class_name, config, shape, [kernel] + ([bias] if use_bias else []))
    want = keras_reference(x, kernel, bias, filters, implementation, kernel_size, strides, padding, first)
    got = run(layer, x)
    assert result.shape == want.shape[1:] == got.shape[1:]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_relu_is_fused_and_other_activations_follow():
    x, kernel, bias = rand(2, 6, 2), rand(5, 4, 3), rand(5, 3)
    config = {"filters": 3, "kernel_size": [2], "activation": "relu", "implementation": 1}
    _, layer = convert("LocallyConnected1D", config, (6, 2), [kernel, bias])
    assert [op.fn for op in layer.ops] == [locally_connected] and layer.ops[0].kwargs["relu"] is True
    want = np.maximum(keras_reference(x, kernel, bias, 3, 1, (2,), (1,), "valid", False), 0)
    np.testing.assert_allclose(run(layer, x), want, rtol=1e-4, atol=1e-5)
    _, layer = convert("LocallyConnected1D", {**config, "activation": "tanh"}, (6, 2), [kernel, bias])
    assert len(layer.ops) == 2
    want = np.tanh(keras_reference(x, kernel, bias, 3, 1, (2,), (1,), "valid", False))
    np.testing.assert_allclose(run(layer, x), want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the NumPy function itself


def naive_locally_connected(x, kernel, bias, kernel_size, strides, pads, first):
    """One window dot product per sample and output position, on the zero-padded input."""
    if first:
        x = np.moveaxis(x, 1, -1)
    xp = np.pad(x.astype(np.float64), [(0, 0), *pads, (0, 0)])
    out = [(n - k) // s + 1 for n, k, s in zip(xp.shape[1:-1], kernel_size, strides)]
    y = np.zeros((x.shape[0], *out, kernel.shape[-1]))
    for sample in range(x.shape[0]):
        for index, p in enumerate(itertools.product(*[range(o) for o in out])):
            window = xp[(sample,) + tuple(slice(q * s, q * s + k) for q, s, k in zip(p, strides, kernel_size))]
            y[(sample,) + p] = window.reshape(-1) @ kernel[index]
    if bias is not None:
        y += bias
    return np.moveaxis(y, -1, 1) if first else y


@pytest.mark.parametrize(
    "size,kernel_size,strides,pads",
    [
        ((7,), (3,), (2,), ((0, 0),)),
        ((6,), (4,), (1,), ((2, 1),)),
        ((5, 4), (2, 3), (1, 2), ((0, 0), (0, 0))),
        ((5, 4), (3, 3), (2, 1), ((1, 1), (1, 2))),
    ],
)
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_function_matches_a_loop_over_positions(size, kernel_size, strides, pads, first, with_bias):
    channels, filters = 3, 2
    out = tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(size, kernel_size, strides, pads))
    kernel = rand(math.prod(out), math.prod(kernel_size) * channels, filters)
    bias = rand(*out, filters) if with_bias else None
    x = rand(3, channels, *size) if first else rand(3, *size, channels)
    keep = x.copy()
    got = locally_connected(x, kernel, bias, kernel_size, strides, pads, first)
    want = naive_locally_connected(x, kernel, bias, kernel_size, strides, pads, first)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.array_equal(x, keep)
    for rows in (x[:1], x[:0], np.asfortranarray(x)):  # batch of 1, empty batch, a non-contiguous input
        np.testing.assert_allclose(
            locally_connected(rows, kernel, bias, kernel_size, strides, pads, first),
            want[: len(rows)],
            rtol=1e-4,
            atol=1e-5,
        )
    relu = locally_connected(x, kernel, bias, kernel_size, strides, pads, first, relu=True)
    np.testing.assert_allclose(relu, np.maximum(want, 0), rtol=1e-4, atol=1e-5)


def test_cut_windows_read_what_tf_keras_reads_within_twice_its_entries():
    """'same' windows longer than the input are cut; every output still reads tf-keras's inputs,
    and the cut window's taps stay under twice the entries tf-keras connects."""
    for n, k, s in itertools.product(range(1, 20), range(1, 45), range(1, 9)):
        out, window, before, after = window_geometry(n, k, s, "same")
        assert out == output_length(n, k, s, "same")
        assert (out - 1) * s + window <= n + before + after  # the last window fits the padded input
        reads = 0
        for p in range(out):
            start = p * s - before
            kept = range(max(0, start), min(n, start + window))
            assert kept == connected_inputs(n, k, s, p, "same"), (n, k, s, p)
            reads += len(kept)
        assert out * window < 2 * reads


# ----------------------------------------------------------------------------- refusals and lying files

BASE = {"filters": 2, "kernel_size": [3], "strides": [1], "padding": "valid", "implementation": 1}


@pytest.mark.parametrize(
    "changes,shape,weights,error,message",
    [
        ({"padding": "same"}, (6, 2), [], BadModelFile, "padding 'same' with implementation 1"),
        ({"padding": "causal", "implementation": 2}, (6, 2), [], BadModelFile, "padding 'causal'"),
        ({"implementation": 4}, (6, 2), [], BadModelFile, "implementation 4"),
        ({"strides": [0]}, (6, 2), [], BadModelFile, "invalid strides"),
        ({"kernel_size": [7]}, (6, 2), [], BadModelFile, "kernel larger than its input"),
        ({}, (6, 2), [np.zeros((4, 6, 2), np.float32)], BadModelFile, "weight arrays"),
        ({}, (6, 2), [np.zeros((4, 5, 2)), np.zeros((4, 2))], BadModelFile, "weight 0 has shape"),
        ({"data_format": "channels_middle"}, (6, 2), [], UnsupportedModel, "data_format"),
        ({}, (None, 2), [], UnsupportedModel, "known size"),
        ({}, (6, 2, 1), [], UnsupportedModel, "rank-3 input"),
    ],
)
def test_bad_configs_and_weights_are_named(changes, shape, weights, error, message):
    with pytest.raises(error, match=message):
        convert("LocallyConnected1D", {**BASE, **changes}, shape, weights)


def test_a_sparse_kernel_too_short_for_a_huge_input_is_refused_before_any_allocation():
    config = {**BASE, "kernel_size": [3, 3], "implementation": 3, "padding": "same"}
    started = time.perf_counter()
    with pytest.raises(BadModelFile, match="too small for its config"):
        convert("LocallyConnected2D", config, (10**6, 10**6, 4), [np.zeros(100, np.float32)])
    with pytest.raises(BadModelFile, match="weight 0 has shape"):  # the right size bound, a wrong count
        convert("LocallyConnected2D", config, (3, 3, 1), [np.zeros(9 * 2 + 7, np.float32), np.zeros((3, 3, 2))])
    assert time.perf_counter() - started < 1.0


def test_fixtures_cover_every_implementation_in_both_keras2_formats():
    names = {p.stem for p in (FIXTURES / "locally_connected").glob("*.npz")}
    for fmt in ("k2h5", "k2keras"):
        assert {f"implementation{i}__{fmt}" for i in (1, 2, 3)} | {f"lc_stack__{fmt}"} <= names
