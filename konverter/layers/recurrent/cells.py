"""The cells' math: what one time step of SimpleRNN, GRU and LSTM computes, and their weights laid out for it.

Every loop (`loops.py`) works on rows [x_t, h_t, 1.0]: one product with a kernel stacked as [W; U; b]
gives every pre-activation of a step, biases included. The functions here prepare those kernels at
conversion time (float64, cast once) and, above them, the two in-place step helpers the loops call:

* gates (`recurrent_activation`): their columns are transformed at conversion so that each step needs
  one or two NumPy calls. sigmoid: columns negated (exact), so g = 1 + exp(-v) = 1/sigmoid(v) and
  "gate * a" is a / g (exp overflowing to inf gives the exact limit 0; predict() runs under
  np.errstate, so silently). hard_sigmoid: its scale and offset folded into the columns, leaving a
  clip to [0, 1]. tanh, relu, linear: as they are.
* the candidate `activation`: any keyword-free activation; tanh and relu computed in place.
"""

from __future__ import annotations

import numpy as np

from ...errors import BadModelFile
from .. import activations
from ..activations import celu, elu, leaky_relu, relu, tanh
from ..base import Layer

GATE_COUNT = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}
# Keras's recurrent_activation -> how the gate columns are folded (see gate_fold).
GATES = ("sigmoid", "hard_sigmoid", "tanh", "relu", "linear")

# ----------------------------------------------------------------------------- step helpers (generated file)


def gates_in_place(g, gate, ones):
    # Gate pre-activations (columns folded by gate_fold) -> the factors the loops apply, in place.
    # "sigmoid" leaves 1/sigmoid(v): the loops divide by it (see gate_product).
    if gate == "sigmoid":
        np.exp(g, out=g)
        np.add(g, ones, out=g)
    elif gate == "hard_sigmoid":
        np.clip(g, 0.0, 1.0, out=g)
    elif gate == "tanh":
        np.tanh(g, out=g)
    elif gate == "relu":
        np.maximum(g, 0.0, out=g)


def gate_product(gate):
    # How a gate factor from gates_in_place scales a value: sigmoid gates are stored as 1/sigmoid.
    return np.divide if gate == "sigmoid" else np.multiply


def activate_into(a, activation, out):
    # out = activation(a); out may be a. NumPy computes tanh and relu without a temporary.
    if activation is tanh:
        np.tanh(a, out=out)
    elif activation is relu:
        np.maximum(a, 0.0, out=out)
    else:
        out[...] = activation(a)


def linear_activation(x):
    return x


def elu_default(x):
    return elu(x, 1.0)


def celu_default(x):
    return celu(x, 1.0)


def leaky_relu_default(x):
    return leaky_relu(x, 0.2)


# ----------------------------------------------------------------------------- conversion


def candidate_activation(layer: Layer, value: object):
    """The function for an RNN's `activation` (any keyword-free activation; defaults for elu, celu, leaky_relu)."""
    name = activations.activation_name(value, layer)
    if name == "linear":
        return linear_activation
    if name == "hard_sigmoid":
        return activations.hard_sigmoid_keras2 if layer.keras_major < 3 else activations.hard_sigmoid
    defaults = {"elu": elu_default, "celu": celu_default, "leaky_relu": leaky_relu_default}
    if name in defaults:
        return defaults[name]
    fn, kwargs = activations._SIMPLE.get(name, (None, None))
    if fn is None or kwargs:
        raise layer.unsupported(f"activation {name[:40]!r} inside a recurrent layer")
    return fn


def gate_name(layer: Layer, value: object) -> str:
    """`recurrent_activation` as one of GATES, or a clean refusal."""
    name = activations.activation_name(value, layer)
    if name not in GATES:
        raise layer.unsupported(f"recurrent_activation {name[:40]!r}")
    return name


def gate_fold(layer: Layer, gate: str) -> tuple[float, float]:
    """(scale, offset) for the gate columns: v -> scale*v + offset, so that gates_in_place finishes the gate.

    Keras 2's hard_sigmoid is clip(0.2 v + 0.5), Keras 3's clip(v/6 + 0.5)."""
    if gate == "sigmoid":
        return -1.0, 0.0
    if gate == "hard_sigmoid":
        return (0.2 if layer.keras_major < 3 else 1.0 / 6.0), 0.5
    return 1.0, 0.0


def from_cudnn(weights: list, gates: int) -> list:
    """CuDNNGRU/CuDNNLSTM store each gate's kernels in cuDNN memory order (tf-keras _convert_rnn_weights)."""
    kernel, recurrent, bias = weights
    kernel = np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(kernel, gates)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, gates)])
    if gates == 4:
        bias = np.sum(np.split(bias, 2), axis=0)
    else:
        bias = bias.reshape(2, -1)
    return [kernel, recurrent, bias]


def _fold(step: np.ndarray, cols: slice, fold: tuple) -> None:
    # The gate columns of a stacked [W; U; b] kernel (float64, in place): scale all rows, offset the bias row.
    scale, offset = fold
    step[:, cols] *= scale
    step[-1, cols] += offset


def simple_rnn_kernel(kernel, recurrent_kernel, bias) -> np.ndarray:
    """[W; U; b] for simple_rnn_sequence (b = 0 without a bias)."""
    b = np.zeros((1, kernel.shape[1])) if bias is None else np.asarray(bias, np.float64)[None]
    return np.vstack([kernel, recurrent_kernel, b]).astype(np.float32)


def gru_kernels(kernel, recurrent_kernel, bias, reset_after: bool, fold: tuple) -> dict:
    """The weights of gru_sequence, columns z, r, h (Keras's order).

    step_kernel = [[W_zr', 0], [U_zr', U_h], [b_zr', rb_h]] (reset_after) or [[W_zr'], [U_zr'], [b_zr']]
    where ' marks the folded gate columns and b_zr sums both biases (they only ever add); the input part
    of the candidate (input_h_kernel W_h, input_h_bias b_h) is one product for all steps before the loop.
    reset_after=False multiplies r*h by U_h (recurrent_h_kernel) inside the step instead."""
    u, features = recurrent_kernel.shape[0], kernel.shape[0]
    if bias is None:
        bias = np.zeros((2, 3 * u))
    elif not reset_after:
        bias = np.vstack([np.asarray(bias, np.float64), np.zeros(3 * u)])
    else:
        bias = np.asarray(bias, np.float64)
    step = np.zeros((features + u + 1, 3 * u))
    step[:features, : 2 * u] = kernel[:, : 2 * u]
    step[features:-1] = recurrent_kernel
    step[-1, : 2 * u] = bias[0, : 2 * u] + bias[1, : 2 * u]
    step[-1, 2 * u :] = bias[1, 2 * u :]
    _fold(step, slice(0, 2 * u), fold)
    weights = {
        "input_h_kernel": np.ascontiguousarray(kernel[:, 2 * u :], dtype=np.float32),
        "input_h_bias": bias[0, 2 * u :].astype(np.float32),
    }
    if reset_after:
        weights["step_kernel"] = step.astype(np.float32)
    else:  # (both kernels contiguous: np.dot copies strided views)
        weights["step_kernel"] = np.ascontiguousarray(step[:, : 2 * u], dtype=np.float32)
        weights["recurrent_h_kernel"] = np.ascontiguousarray(recurrent_kernel[:, 2 * u :], dtype=np.float32)
    return weights


def lstm_kernel(kernel, recurrent_kernel, bias, fold: tuple) -> np.ndarray:
    """[W; U; b] for lstm_sequence, columns reordered from Keras's i, f, c, o to i, f, o, c so that the
    three gates are side by side (one gates_in_place call), gate columns folded."""
    u = recurrent_kernel.shape[0]
    b = np.zeros(4 * u) if bias is None else np.asarray(bias, np.float64)
    step = np.vstack([kernel, recurrent_kernel, b[None]])
    step = step[:, np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]]
    _fold(step, slice(0, 3 * u), fold)
    return step.astype(np.float32)


def check_bias_shape(layer: Layer, kind: str, units: int, bias: np.ndarray, cudnn: bool) -> None:
    if cudnn:
        allowed = {(2 * GATE_COUNT[kind] * units,)}
    elif kind == "GRU":
        allowed = {(2, 3 * units), (3 * units,)}
    else:
        allowed = {(GATE_COUNT[kind] * units,)}
    if tuple(bias.shape) not in allowed:
        raise BadModelFile(f"{layer.describe()} bias has shape {tuple(bias.shape)}, unexpected for {units} units")
