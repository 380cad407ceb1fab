"""The activation functions themselves: float64 references, extreme inputs, no warnings, float32 out."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from konverter.layers import activations as A

X = np.array([-1e4, -88.0, -20.0, -3.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 20.0, 88.0, 1e4], dtype=np.float32)


def sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


REFERENCES = {
    A.relu: lambda x: np.maximum(x, 0),
    A.sigmoid: sigmoid64,
    A.tanh: np.tanh,
    A.softplus: lambda x: np.logaddexp(0, x.astype(np.float64)),
    A.softsign: lambda x: x / (1 + np.abs(x)),
    A.selu: lambda x: A.SELU_SCALE * np.where(x > 0, x, A.SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    A.swish: lambda x: x * sigmoid64(x),
    A.gelu: lambda x: np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)]),
    A.mish: lambda x: x * np.tanh(np.logaddexp(0, x.astype(np.float64))),
    A.log_sigmoid: lambda x: -np.logaddexp(0, -x.astype(np.float64)),
    A.hard_sigmoid: lambda x: np.clip(x / 6 + 0.5, 0, 1),
    A.hard_sigmoid_keras2: lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    A.hard_silu: lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    A.sparse_plus: lambda x: np.where(x <= -1, 0, np.where(x < 1, (x + 1) ** 2 / 4, x)),
    A.tanh_shrink: lambda x: x - np.tanh(x.astype(np.float64)),
}


@pytest.mark.parametrize("fn", list(REFERENCES), ids=lambda f: f.__name__)
def test_activation_matches_float64_reference_without_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fn(X)
    assert got.dtype == np.float32
    assert np.all(np.isfinite(got))
    ref = REFERENCES[fn](X)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_erf_is_accurate_to_float32_tolerance():
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    ref = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(A.erf(x) - ref)) < 3e-7


@pytest.mark.parametrize("fn", [A.softmax, A.log_softmax, A.sparsemax])
def test_axis_activations_are_stable_and_per_row(fn):
    x = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn(x, axis=-1)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    rows = np.stack([fn(x[i : i + 1], axis=-1)[0] for i in range(2)])
    np.testing.assert_allclose(y, rows)
    if fn is not A.log_softmax:
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)


def test_sparsemax_follows_keras_not_the_paper():
    # Keras 3 computes tau = (sum of the cumulative sums over the support - 1) / k, which differs
    # from Martins & Astudillo's (cumsum_k - 1) / k once the support has two or more elements:
    # z = (1, 0.5, -1) gives (0.25, 0, 0) in Keras (the paper: 0.75, 0.25, 0). We match Keras;
    # the k3 activations_f fixtures check it against real Keras.
    got = A.sparsemax(np.array([[1.0, 0.5, -1.0]], np.float32), axis=-1)
    np.testing.assert_allclose(got, [[0.25, 0.0, 0.0]], atol=1e-7)


def test_relu_general_matches_keras_definition():
    x = np.array([-2.0, -0.1, 0.1, 0.25, 1.0, 3.0], dtype=np.float32)
    y = A.relu_general(x, negative_slope=0.1, max_value=1.5, threshold=0.2)
    expected = [0.1 * (-2.2), 0.1 * (-0.3), 0.1 * (-0.1), 0.25, 1.0, 1.5]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert y.dtype == np.float32
