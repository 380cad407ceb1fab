"""Recurrent layers: SimpleRNN, GRU, LSTM (and the old CuDNNGRU/CuDNNLSTM), Bidirectional, TimeDistributed.

Batch axis 0, time axis 1. Each layer is one function call in the generated file. Per-sample latency
is dominated by NumPy's fixed cost per call (~0.4 us), so the converter prepares the weights so
that each time step makes as few calls as possible:

* the common cases (SimpleRNN; GRU and LSTM with sigmoid gates and tanh) work on a (time + 1,
  [batch,] features + units + 1) array whose row t is [x_t, h_t, 1.0]: one product with a kernel
  stacked as [W; U; b] gives every pre-activation of the step, biases included, and each step writes
  its state into the next row, which is also the stacked output. A batch of one (without a mask)
  runs on 1-D rows, np.dot's fastest case;
* sigmoid gates: their columns are negated at conversion (exact), so e = 1 + exp(-v) in two calls
  and "gate * a" is a / e; exp overflowing to inf gives the exact limit 0 (predict() runs under
  np.errstate, so silently). SimpleRNN: 2 calls per step, LSTM 9, GRU 9 (reset_after=False: 10);
* every buffer is allocated per call (never shared between calls or threads), `out=` everywhere;
* other activations take the generic loops: gate columns reordered so that every gate goes through
  ONE in-place activation call; sigmoid(2v) = 0.5*tanh(v) + 0.5 on weights halved at conversion;
  hard_sigmoid folds its scale and offset into the weights, leaving one clip.

Masks (from Masking or Embedding(mask_zero=True)) follow Keras: a masked step carries the state
forward and outputs the previous output, or zeros inside Bidirectional (zero_output_for_mask).
"""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from ..h5reader import config as cfgmod
from . import activations
from .activations import celu, elu, leaky_relu
from .base import CONVERTERS, MASK_POLICY, Layer, Tensor, as_int, converter

# ----------------------------------------------------------------------------- step functions

RNN_CHUNK_ROWS = 256  # samples per chunk of a large batch in the [x, h, 1] row loops


def gate_sigmoid_halved(g):
    # In place: sigmoid(2g) = 0.5*tanh(g) + 0.5; the weights feeding g were halved at conversion.
    np.tanh(g, out=g)
    g *= 0.5
    g += 0.5


def gate_clip_unit(g):
    # In place: hard_sigmoid whose scale and offset were folded into the weights.
    np.clip(g, 0.0, 1.0, out=g)


def gate_tanh(g):
    np.tanh(g, out=g)


def gate_relu(g):
    np.maximum(g, 0.0, out=g)


def gate_linear(g):
    pass


def linear_activation(x):
    return x


def elu_default(x):
    return elu(x, 1.0)


def celu_default(x):
    return celu(x, 1.0)


def leaky_relu_default(x):
    return leaky_relu(x, 0.2)


def project_steps(x, kernel, bias, go_backwards):
    # One matmul for all time steps; result[t] is the (batch, gates) input part of step t.
    batch, steps = x.shape[0], x.shape[1]
    xw = np.dot(x.reshape(batch * steps, x.shape[2]), kernel)
    if bias is not None:
        xw += bias
    xw = xw.reshape(batch, steps, kernel.shape[1]).swapaxes(0, 1)
    return xw[::-1] if go_backwards else xw


def steps_mask(mask, go_backwards):
    # (batch, time) booleans -> (time, batch, 1) in processing order.
    m = np.swapaxes(mask, 0, 1)[:, :, None]
    return m[::-1] if go_backwards else m


def start_state(state, batch, units):
    if state is None:
        return np.zeros((batch, units), dtype=np.float32)
    return np.ascontiguousarray(state, dtype=np.float32)


def rnn_outputs(outs, mask, return_sequences, zero_masked):
    # Stack per-step outputs (a list, or a (time, batch, units) array) back to (batch, time, units),
    # or take the last processed step.
    if not return_sequences:
        if zero_masked and mask is not None:
            return np.where(mask[-1], outs[-1], 0.0)
        return outs[-1].copy()  # outs[-1] is also the final state: keep the two outputs independent
    seq = np.stack(outs, axis=1) if isinstance(outs, list) else outs.swapaxes(0, 1).copy()
    if zero_masked and mask is not None:
        seq = np.where(np.swapaxes(mask, 0, 1), seq, 0.0)
    return seq


def step_rows(x, state, units, go_backwards, lead):
    # The work array of the row loops: row t is [x_t, h_t, 1.0] in processing order, shape
    # (time + 1, *lead, features + units + 1); returns it and its h view, h_0 = state (or zeros).
    steps, features = x.shape[1], x.shape[2]
    rows = np.empty((steps + 1,) + lead + (features + units + 1,), dtype=np.float32)
    xs = x[:, ::-1] if go_backwards else x
    rows[:steps, ..., :features] = xs.swapaxes(0, 1) if lead else xs[0]
    rows[..., -1] = 1.0
    states = rows[..., features:-1]
    states[0] = 0.0 if state is None else np.reshape(state, lead + (units,))
    return rows, states


def rnn_chunked(fn, batch_args, rest):
    # Large batches in chunks of RNN_CHUNK_ROWS samples: each chunk's rows stay in cache (10,000
    # samples of the benchmark GRU: 95 ms at once, 59 ms in chunks). batch_args have the batch first.
    n = batch_args[0].shape[0]
    parts = [
        fn(*[None if a is None else a[i : i + RNN_CHUNK_ROWS] for a in batch_args], *rest)
        for i in range(0, n, RNN_CHUNK_ROWS)
    ]
    return tuple(np.concatenate(p, axis=0) for p in zip(*parts))


def simple_rnn_sequence(x, state, mask, step_kernel, activation, options):
    # options = (go_backwards, return_sequences, zero_masked, in_place). h = act([x, h, 1] [W; U; b]):
    # row t of `rows` is [x_t, h_t, 1.0] and each step's product lands in the next row's state, so
    # a step is 2 NumPy calls with an in-place activation (in_place), else the result is copied back.
    if x.shape[0] > RNN_CHUNK_ROWS:
        return rnn_chunked(simple_rnn_sequence, (x, state, mask), (step_kernel, activation, options))
    go_backwards, return_sequences, zero_masked, in_place = options
    batch, steps, features = x.shape
    units = step_kernel.shape[1]
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    product = np.matmul if lead else np.dot  # np.dot is the faster 1-D product but needs contiguous out
    m = steps_mask(mask, go_backwards) if mask is not None else None
    for t in range(steps):
        h = states[t + 1]
        product(rows[t], step_kernel, out=h)
        if in_place:
            activation(h)
        else:
            h[...] = activation(h)
        if m is not None:  # masked samples carry the state forward
            np.copyto(h, states[t], where=~m[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy()


def gru_sequence(x, state, mask, kernel, bias, recurrent_kernel, recurrent_bias, activation, gate, options):
    # GRU, reset_after=True. Columns z, r, h; z weights the OLD state: h = z*h_old + (1-z)*hh with
    # hh = act(x W_h + b_h + r * (h U_h + rb_h)). rb_z, rb_r are folded into `bias` at conversion.
    go_backwards, return_sequences, zero_masked = options
    units = recurrent_kernel.shape[0]
    xw = project_steps(x, kernel, bias, go_backwards)
    xzr, xh = xw[:, :, : 2 * units], xw[:, :, 2 * units :]
    h = start_state(state, x.shape[0], units)
    hu = np.empty((x.shape[0], 3 * units), dtype=np.float32)
    hu_zr, hu_h = hu[:, : 2 * units], hu[:, 2 * units :]
    g = np.empty((x.shape[0], 2 * units), dtype=np.float32)
    z, r = g[:, :units], g[:, units:]
    m = steps_mask(mask, go_backwards) if mask is not None else None
    outs = []
    for t, (xzr_t, xh_t) in enumerate(zip(xzr, xh)):
        np.dot(h, recurrent_kernel, out=hu)
        np.add(xzr_t, hu_zr, out=g)
        gate(g)
        hu_h += recurrent_bias  # in place in the step's scratch buffer: no temporaries
        hu_h *= r
        hu_h += xh_t
        hh = activation(hu_h)
        h_new = h - hh
        h_new *= z
        h_new += hh
        h = h_new if m is None else np.where(m[t], h_new, h)
        outs.append(h)
    return rnn_outputs(outs, m, return_sequences, zero_masked), h


def gru_sigmoid_sequence(x, state, mask, step_kernel, input_h_kernel, input_h_bias, options):
    # GRU, reset_after=True, sigmoid gates, tanh candidate: the common case, in 9 NumPy calls per step.
    # Row t of `rows` is [x_t, h_t, 1.0] and step_kernel = [[-W_zr, 0], [-U_zr, U_h], [-b_zr, rb_h]], so
    # one product gives e = -(z, r pre-activations) and h U_h + rb_h; with e -> 1 + exp(e), z = 1/e_z and
    # r = 1/e_r, so r*a is a/e_r (exp overflowing to inf gives the exact limit 0). Each step writes its
    # state into the next row, which is also the stacked output. One sample runs on 1-D rows.
    if x.shape[0] > RNN_CHUNK_ROWS:
        return rnn_chunked(gru_sigmoid_sequence, (x, state, mask), (step_kernel, input_h_kernel, input_h_bias, options))
    go_backwards, return_sequences, zero_masked = options
    batch, steps, features = x.shape
    units = input_h_kernel.shape[1]
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    xh = np.dot(rows[:steps, ..., :features].reshape(-1, features), input_h_kernel)
    xh += input_h_bias
    xh = xh.reshape((steps,) + lead + (units,))
    hu = np.empty(lead + (3 * units,), dtype=np.float32)
    e, e_z, e_r, hh = hu[..., : 2 * units], hu[..., :units], hu[..., units : 2 * units], hu[..., 2 * units :]
    ones = np.ones(2 * units, dtype=np.float32)
    c = np.empty(lead + (units,), dtype=np.float32)
    d = np.empty(lead + (units,), dtype=np.float32)
    m = steps_mask(mask, go_backwards) if mask is not None else None
    skip = ~m if m is not None else None
    for t in range(steps):
        h = states[t]
        np.dot(rows[t], step_kernel, out=hu)
        np.exp(e, out=e)
        np.add(e, ones, out=e)
        np.divide(hh, e_r, out=c)  # r * (h U_h + rb_h)
        c += xh[t]
        np.tanh(c, out=c)
        np.subtract(h, c, out=d)  # h_new = z*h + (1-z)*c = c + z*(h - c)
        np.divide(d, e_z, out=d)
        np.add(c, d, out=states[t + 1])
        if skip is not None:  # masked samples carry the state forward
            np.copyto(states[t + 1], h, where=skip[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy()


def gru_reset_before_sequence(x, state, mask, kernel, bias, recurrent_kernel, activation, gate, options):
    # GRU, reset_after=False (Keras 2.2 default): hh = act(x W_h + b_h + (r*h) U_h).
    go_backwards, return_sequences, zero_masked = options
    units = recurrent_kernel.shape[0]
    xw = project_steps(x, kernel, bias, go_backwards)
    xzr, xh = xw[:, :, : 2 * units], xw[:, :, 2 * units :]
    u_zr, u_h = recurrent_kernel[:, : 2 * units], recurrent_kernel[:, 2 * units :]
    h = start_state(state, x.shape[0], units)
    g = np.empty((x.shape[0], 2 * units), dtype=np.float32)
    z, r = g[:, :units], g[:, units:]
    m = steps_mask(mask, go_backwards) if mask is not None else None
    outs = []
    for t, (xzr_t, xh_t) in enumerate(zip(xzr, xh)):
        np.dot(h, u_zr, out=g)
        g += xzr_t
        gate(g)
        hh = activation(xh_t + np.dot(r * h, u_h))
        h_new = h - hh
        h_new *= z
        h_new += hh
        h = h_new if m is None else np.where(m[t], h_new, h)
        outs.append(h)
    return rnn_outputs(outs, m, return_sequences, zero_masked), h


def gru_sigmoid_reset_before_sequence(
    x, state, mask, gates_kernel, recurrent_h_kernel, input_h_kernel, input_h_bias, options
):
    # GRU, reset_after=False, sigmoid gates, tanh candidate: hh = tanh(x W_h + b_h + (r*h) U_h), 10 calls
    # per step. Row t of `rows` is [x_t, h_t, 1.0] and gates_kernel = [[-W_zr], [-U_zr], [-b_zr]], so one
    # product gives e = -(z, r pre-activations). (Both kernels contiguous: np.dot copies strided views.)
    if x.shape[0] > RNN_CHUNK_ROWS:
        weights = (gates_kernel, recurrent_h_kernel, input_h_kernel, input_h_bias, options)
        return rnn_chunked(gru_sigmoid_reset_before_sequence, (x, state, mask), weights)
    go_backwards, return_sequences, zero_masked = options
    batch, steps, features = x.shape
    units = input_h_kernel.shape[1]
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    xh = np.dot(rows[:steps, ..., :features].reshape(-1, features), input_h_kernel)
    xh += input_h_bias
    xh = xh.reshape((steps,) + lead + (units,))
    e = np.empty(lead + (2 * units,), dtype=np.float32)
    e_z, e_r = e[..., :units], e[..., units:]
    ones = np.ones(2 * units, dtype=np.float32)
    c = np.empty(lead + (units,), dtype=np.float32)
    d = np.empty(lead + (units,), dtype=np.float32)
    m = steps_mask(mask, go_backwards) if mask is not None else None
    for t in range(steps):
        h = states[t]
        np.dot(rows[t], gates_kernel, out=e)
        np.exp(e, out=e)
        np.add(e, ones, out=e)
        np.divide(h, e_r, out=d)  # r*h
        np.dot(d, recurrent_h_kernel, out=c)
        c += xh[t]
        np.tanh(c, out=c)
        np.subtract(h, c, out=d)  # h_new = c + z*(h - c)
        np.divide(d, e_z, out=d)
        np.add(c, d, out=states[t + 1])
        if m is not None:  # masked samples carry the state forward
            np.copyto(states[t + 1], h, where=~m[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy()


def lstm_sequence(x, state, cell, mask, kernel, bias, recurrent_kernel, activation, gate, options):
    # LSTM with columns reordered at conversion to i, f, o, c (the three gates share one call):
    # c = f*c + i*act(x W_c + h U_c + b_c), h = o*act(c). (tanh with sigmoid gates: lstm_sigmoid_sequence.)
    go_backwards, return_sequences, zero_masked = options
    units = recurrent_kernel.shape[0]
    xw = project_steps(x, kernel, bias, go_backwards)
    h = start_state(state, x.shape[0], units)
    c = start_state(cell, x.shape[0], units)
    zb = np.empty((x.shape[0], 4 * units), dtype=np.float32)
    gates, cand = zb[:, : 3 * units], zb[:, 3 * units :]
    i, f, o = zb[:, :units], zb[:, units : 2 * units], zb[:, 2 * units : 3 * units]
    m = steps_mask(mask, go_backwards) if mask is not None else None
    outs = []
    for t, xw_t in enumerate(xw):
        np.dot(h, recurrent_kernel, out=zb)
        zb += xw_t
        gate(gates)
        c_new = f * c
        c_new += i * activation(cand)
        h_new = o * activation(c_new)
        if m is None:
            c, h = c_new, h_new
        else:
            c, h = np.where(m[t], c_new, c), np.where(m[t], h_new, h)
        outs.append(h)
    return rnn_outputs(outs, m, return_sequences, zero_masked), h, c


def lstm_sigmoid_sequence(x, state, cell, mask, step_kernel, options):
    # LSTM with sigmoid gates and tanh activations: the common case, in 9 NumPy calls per step.
    # Row t of `rows` is [x_t, h_t, 1.0]; step_kernel's columns are -i, -f, -o, c (gates negated at
    # conversion), so after e -> 1 + exp(e) a gate times a is a/e (inf gives the exact limit 0).
    if x.shape[0] > RNN_CHUNK_ROWS:
        return rnn_chunked(lstm_sigmoid_sequence, (x, state, cell, mask), (step_kernel, options))
    go_backwards, return_sequences, zero_masked = options
    batch, steps, features = x.shape
    units = step_kernel.shape[1] // 4
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    cells = np.empty((steps + 1,) + lead + (units,), dtype=np.float32)
    cells[0] = 0.0 if cell is None else np.reshape(cell, lead + (units,))
    zb = np.empty(lead + (4 * units,), dtype=np.float32)
    e, cand = zb[..., : 3 * units], zb[..., 3 * units :]
    e_i, e_f, e_o = zb[..., :units], zb[..., units : 2 * units], zb[..., 2 * units : 3 * units]
    ones = np.ones(3 * units, dtype=np.float32)
    d = np.empty(lead + (units,), dtype=np.float32)
    m = steps_mask(mask, go_backwards) if mask is not None else None
    skip = ~m if m is not None else None
    for t in range(steps):
        c = cells[t + 1]
        np.dot(rows[t], step_kernel, out=zb)
        np.exp(e, out=e)
        np.add(e, ones, out=e)
        np.tanh(cand, out=cand)
        np.divide(cells[t], e_f, out=c)  # c = f*c_old + i*tanh(...)
        np.divide(cand, e_i, out=cand)
        c += cand
        np.tanh(c, out=d)
        np.divide(d, e_o, out=states[t + 1])  # h = o*tanh(c)
        if skip is not None:  # masked samples carry both states forward
            np.copyto(c, cells[t], where=skip[t])
            np.copyto(states[t + 1], states[t], where=skip[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy(), cells[-1].reshape(batch, units).copy()


def rnn_initial_state(given, x, units):
    # Stateful layer: the state carried from the previous call, or zeros (first call, reset_states()).
    if given is None:
        return np.zeros((x.shape[0], units), dtype=np.float32)
    state = np.ascontiguousarray(given, dtype=np.float32)
    if state.shape != (x.shape[0], units):
        raise ValueError(f"a carried state has shape {state.shape}, this batch needs {(x.shape[0], units)}")
    return state


def reverse_time(x):
    return x[:, ::-1]


def merge_concat(a, b):
    return np.concatenate([a, b], axis=-1)


def merge_sum(a, b):
    return a + b


def merge_mul(a, b):
    return a * b


def merge_ave(a, b):
    return (a + b) * 0.5


def fold_time(x):
    # (batch, time, ...) -> (batch*time, ...): TimeDistributed's inner layer sees time steps as samples.
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unfold_time(y, x):
    return y.reshape(x.shape[:2] + y.shape[1:])


# ----------------------------------------------------------------------------- converters

RNN_CLASSES = (
    "SimpleRNN",
    "GRU",
    "LSTM",
    "CuDNNGRU",
    "CuDNNLSTM",
    "UnifiedGRU",
    "UnifiedLSTM",
    "GRUV2",
    "LSTMV2",
    "RNN",
)
CELLS = ("SimpleRNNCell", "GRUCell", "LSTMCell")
GATE_COUNT = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}
IN_PLACE_ACTIVATIONS = {activations.tanh: gate_tanh, activations.relu: gate_relu, linear_activation: gate_linear}
MERGES = {"concat": merge_concat, "sum": merge_sum, "mul": merge_mul, "ave": merge_ave}


def _kind(class_name: str) -> str:
    for kind in ("SimpleRNN", "GRU", "LSTM"):
        if kind in class_name:
            return kind
    raise BadModelFile(f"{class_name} is not a recurrent layer")


def _unwrap_cell(layer: Layer, class_name: str, config: dict) -> tuple[str, dict]:
    """RNN(LSTMCell(...)) and friends: the cell's config with the RNN's flags, as if it were LSTM(...)."""
    if class_name != "RNN":
        return class_name, config
    cell = config.get("cell")
    if isinstance(cell, list) or not isinstance(cell, dict):
        raise layer.unsupported("an RNN around several (stacked) cells")
    cls = cfgmod.class_of(cell)
    if cls not in CELLS:
        raise layer.unsupported(f"an RNN around {cls[:60]}")
    merged = dict(cfgmod.config_of(cell))
    merged.update((k, v) for k, v in config.items() if k != "cell")
    return cls[: -len("Cell")], merged


def _candidate_activation(layer: Layer, value: object):
    """The function for an RNN's `activation` (applied to fresh arrays, any keyword-free activation)."""
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


def _gate(layer: Layer, value: object) -> tuple:
    """(in-place gate function, scale, offset) for `recurrent_activation`; scale/offset go into the weights."""
    name = activations.activation_name(value, layer)
    if name == "sigmoid":
        return gate_sigmoid_halved, 0.5, 0.0
    if name == "hard_sigmoid":
        return gate_clip_unit, (0.2 if layer.keras_major < 3 else 1.0 / 6.0), 0.5
    table = {"tanh": gate_tanh, "relu": gate_relu, "linear": gate_linear}
    if name not in table:
        raise layer.unsupported(f"recurrent_activation {name[:40]!r}")
    return table[name], 1.0, 0.0


def _from_cudnn(weights: list, gates: int) -> list:
    """CuDNNGRU/CuDNNLSTM store each gate's kernels in cuDNN memory order (tf-keras _convert_rnn_weights)."""
    kernel, recurrent, bias = weights
    kernel = np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(kernel, gates)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, gates)])
    if gates == 4:
        bias = np.sum(np.split(bias, 2), axis=0)
    else:
        bias = bias.reshape(2, -1)
    return [kernel, recurrent, bias]


class RNNSpec:
    """A recurrent layer's config and weights, checked and prepared for the loop."""

    def __init__(self, layer: Layer, class_name: str, config: dict, weights: list, features: int) -> None:
        self.layer = layer
        class_name, config = _unwrap_cell(layer, class_name, config)
        self.kind = _kind(class_name)
        cudnn = class_name.startswith("CuDNN")
        get = config.get
        self.units = as_int(get("units"), f"{self.kind} units")
        if self.units <= 0:
            raise BadModelFile(f"{layer.describe()} has {self.units} units")
        if get("time_major"):
            raise layer.unsupported("time_major=True")
        self.return_sequences = bool(get("return_sequences", False))
        self.return_state = bool(get("return_state", False))
        self.go_backwards = bool(get("go_backwards", False))
        self.stateful = bool(get("stateful", False))
        self.zero_masked = bool(get("zero_output_for_mask", False))
        u, gates = self.units, GATE_COUNT[self.kind]
        activation = "tanh" if cudnn else get("activation", "tanh")
        self.activation = _candidate_activation(layer, activation)
        recurrent = "sigmoid" if cudnn else get("recurrent_activation", "sigmoid")
        use_bias = True if cudnn else bool(get("use_bias", True))
        if not use_bias and len(weights) != 2:
            raise BadModelFile(f"{layer.describe()} has {len(weights)} weight arrays, use_bias=False implies 2")
        if use_bias and len(weights) != 3:
            raise BadModelFile(f"{layer.describe()} has {len(weights)} weight arrays, its config implies 3")
        kernel, recurrent_kernel = weights[0], weights[1]
        bias = weights[2] if use_bias else None
        for name, array, shape in (
            ("kernel", kernel, (features, gates * u)),
            ("recurrent kernel", recurrent_kernel, (u, gates * u)),
        ):
            if tuple(array.shape) != shape:
                raise BadModelFile(f"{layer.describe()} {name} has shape {tuple(array.shape)}, expected {shape}")
        if cudnn:
            allowed = {(2 * gates * u,)}
        elif self.kind == "GRU":
            allowed = {(2, 3 * u), (3 * u,)}
        else:
            allowed = {(gates * u,)}
        if bias is not None and tuple(bias.shape) not in allowed:
            raise BadModelFile(f"{layer.describe()} bias has shape {tuple(bias.shape)}, unexpected for {u} units")
        if cudnn:
            kernel, recurrent_kernel, bias = _from_cudnn([kernel, recurrent_kernel, bias], gates)
        self.reset_after = self.kind == "GRU" and (
            bias.ndim == 2 if bias is not None else bool(get("reset_after", False))
        )
        if (
            self.kind == "GRU"
            and bias is not None
            and "reset_after" in config
            and get("reset_after") != (bias.ndim == 2)
        ):
            raise BadModelFile(f"{layer.describe()} bias shape {tuple(bias.shape)} contradicts reset_after")
        self._prepare(recurrent, kernel.astype(np.float64), recurrent_kernel.astype(np.float64), bias)

    def _prepare(self, recurrent: object, kernel, recurrent_kernel, bias) -> None:
        u = self.units
        # The common GRU/LSTM (sigmoid gates, tanh) take the [x, h, 1] row loops, the rest the generic ones.
        tanh_sigmoid = (
            self.activation is activations.tanh and activations.activation_name(recurrent, self.layer) == "sigmoid"
        )
        self.sigmoid_gru = self.kind == "GRU" and tanh_sigmoid
        self.sigmoid_lstm = self.kind == "LSTM" and tanh_sigmoid
        if self.sigmoid_gru or self.sigmoid_lstm:
            self.gate = None  # the exp-based sigmoid is written into the loop
            if self.sigmoid_gru:
                self._prepare_sigmoid_gru(kernel, recurrent_kernel, bias)
            else:
                self._prepare_sigmoid_lstm(kernel, recurrent_kernel, bias)
            return
        recurrent_bias = None
        if bias is not None:
            bias = bias.astype(np.float64)
            if self.kind == "GRU" and self.reset_after:
                bias, rb = bias[0].copy(), bias[1]
                bias[: 2 * u] += rb[: 2 * u]  # z and r recurrent biases only ever add: fold them
                recurrent_bias = rb[2 * u :]
        if self.kind == "SimpleRNN":
            self.gate = None
            b = np.zeros((1, u)) if bias is None else bias[None]
            self.step_kernel = np.vstack([kernel, recurrent_kernel, b]).astype(np.float32)
        else:
            self.gate, scale, offset = _gate(self.layer, recurrent)
            gate_cols = slice(0, 2 * u) if self.kind == "GRU" else slice(0, 3 * u)
            if self.kind == "LSTM":  # i, f, c, o -> i, f, o, c: the three gates side by side
                order = np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]
                kernel, recurrent_kernel = kernel[:, order], recurrent_kernel[:, order]
                bias = bias[order] if bias is not None else None
            if scale != 1.0 or offset != 0.0:
                kernel = kernel.copy()
                recurrent_kernel = recurrent_kernel.copy()
                bias = np.zeros(kernel.shape[1]) if bias is None else bias.copy()
                kernel[:, gate_cols] *= scale
                recurrent_kernel[:, gate_cols] *= scale
                bias[gate_cols] = bias[gate_cols] * scale + offset
        self.kernel = kernel.astype(np.float32)
        self.recurrent_kernel = recurrent_kernel.astype(np.float32)
        self.bias = None if bias is None else bias.astype(np.float32)
        if self.kind == "GRU" and self.reset_after:
            rb = recurrent_bias if recurrent_bias is not None else np.zeros(u)
            self.recurrent_bias = rb.astype(np.float32)

    def _prepare_sigmoid_gru(self, kernel, recurrent_kernel, bias) -> None:
        """Weights for the sigmoid GRU loops: one (features + units + 1, 3 units) step kernel (negation is exact).

        reset_after=False: one bias, all on the input side; the step kernel has the z and r columns only
        and U_h, which multiplies r*h, is a kernel of its own."""
        u, features = self.units, kernel.shape[0]
        if bias is None:
            bias = np.zeros((2, 3 * u))
        elif not self.reset_after:
            bias = np.vstack([bias.astype(np.float64), np.zeros(3 * u)])
        else:
            bias = bias.astype(np.float64)
        step = np.zeros((features + u + 1, 3 * u))
        step[:features, : 2 * u] = -kernel[:, : 2 * u]
        step[features:-1, : 2 * u] = -recurrent_kernel[:, : 2 * u]
        step[features:-1, 2 * u :] = recurrent_kernel[:, 2 * u :]
        step[-1, : 2 * u] = -(bias[0, : 2 * u] + bias[1, : 2 * u])
        step[-1, 2 * u :] = bias[1, 2 * u :]
        if self.reset_after:
            self.step_kernel = step.astype(np.float32)
        else:
            self.step_kernel = np.ascontiguousarray(step[:, : 2 * u], dtype=np.float32)
            self.recurrent_h_kernel = np.ascontiguousarray(recurrent_kernel[:, 2 * u :], dtype=np.float32)
        self.input_h_kernel = np.ascontiguousarray(kernel[:, 2 * u :], dtype=np.float32)
        self.input_h_bias = bias[0, 2 * u :].astype(np.float32)

    def _prepare_sigmoid_lstm(self, kernel, recurrent_kernel, bias) -> None:
        """Weights for lstm_sigmoid_sequence: [W; U; b] with columns -i, -f, -o, c (negation is exact)."""
        u = self.units
        bias = np.zeros(4 * u) if bias is None else bias.astype(np.float64)
        step = np.vstack([kernel, recurrent_kernel, bias[None]])
        step = step[:, np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]]  # i, f, c, o -> i, f, o, c
        step[:, : 3 * u] *= -1.0
        self.step_kernel = step.astype(np.float32)

    @property
    def state_count(self) -> int:
        return 2 if self.kind == "LSTM" else 1

    def run(self, x: Tensor, states: list, mask: Tensor | None, zero_masked: bool | None = None) -> tuple:
        """Record the loop; returns (output Tensor, [final state Tensors])."""
        layer = self.layer
        steps = x.shape[0]
        out_shape = (steps, self.units) if self.return_sequences else (self.units,)
        shapes = [out_shape] + [(self.units,)] * self.state_count
        zero = self.zero_masked if zero_masked is None else zero_masked
        options = (self.go_backwards, self.return_sequences, zero)
        inputs = [x] + [states[i] if i < len(states) else None for i in range(self.state_count)] + [mask]
        if self.kind == "SimpleRNN":
            in_place = IN_PLACE_ACTIVATIONS.get(self.activation)
            activation = in_place or self.activation
            fn, weights = simple_rnn_sequence, [self.step_kernel, activation]
            options = options + (in_place is not None,)
        elif self.sigmoid_gru:
            fn, weights = gru_sigmoid_sequence, [self.step_kernel, self.input_h_kernel, self.input_h_bias]
            if not self.reset_after:
                fn, weights = (
                    gru_sigmoid_reset_before_sequence,
                    [self.step_kernel, self.recurrent_h_kernel] + weights[1:],
                )
        elif self.kind == "GRU" and self.reset_after:
            fn = gru_sequence
            weights = [self.kernel, self.bias, self.recurrent_kernel, self.recurrent_bias, self.activation, self.gate]
        elif self.sigmoid_lstm:
            fn, weights = lstm_sigmoid_sequence, [self.step_kernel]
        elif self.kind == "GRU":
            fn = gru_reset_before_sequence
            weights = [self.kernel, self.bias, self.recurrent_kernel, self.activation, self.gate]
        else:
            fn, weights = lstm_sequence, [self.kernel, self.bias, self.recurrent_kernel, self.activation, self.gate]
        outs = layer.call_multi(fn, *inputs, *weights, options, shapes=shapes)
        return outs[0], outs[1:]


def _sequence_input(layer: Layer, x: Tensor) -> Tensor:
    if x.shape is None or len(x.shape) != 2 or x.shape[1] is None:
        raise layer.unsupported(f"a recurrent layer needs (batch, time, features) input, got {x.shape}")
    if x.dtype not in ("float32", "float16", "float64", "bfloat16"):
        raise layer.unsupported(f"a recurrent layer on {x.dtype} input")
    return x


def _call_inputs(layer: Layer) -> tuple[Tensor, list]:
    """The sequence and any initial states (Keras 2 lists them after the input, Keras 3 as a kwarg)."""
    tensors = layer.inputs
    if not tensors:
        raise layer.unsupported("called without an input tensor")
    x, states = tensors[0], tensors[1:]
    given = layer.kwargs.get("initial_state")
    if given is not None:
        extra = [given] if isinstance(given, Tensor) else list(given)
        if not all(isinstance(t, Tensor) for t in extra):
            raise layer.unsupported("an initial_state that is not a tensor")
        states = states + extra
    if any(isinstance(v, Tensor) for k, v in layer.kwargs.items() if k not in ("initial_state", "mask")):
        raise layer.unsupported(f"tensor call arguments {sorted(layer.kwargs)}")
    if isinstance(layer.kwargs.get("mask"), Tensor):
        raise layer.unsupported("an explicit mask= call argument")
    return _sequence_input(layer, x), states


def _stateful_states(layer: Layer, spec: RNNSpec, x: Tensor) -> tuple[list, list]:
    """Initial states of a stateful layer and their slots, which the generated predict() carries."""
    states, slots = [], []
    for _ in range(spec.state_count):
        slot = layer.state_input((spec.units,))
        slots.append(slot)
        states.append(layer.call(rnn_initial_state, slot, x, shape=(spec.units,), units=spec.units))
    return states, slots


def _check_mask(layer: Layer, x: Tensor) -> None:
    if x.mask is not None and x.mask.shape != x.shape[:1]:
        raise layer.unsupported(f"a mask of shape {x.mask.shape} for input {x.shape}")


def _check_states(layer: Layer, spec: RNNSpec, states: list) -> None:
    if len(states) != spec.state_count:
        raise layer.unsupported(f"{len(states)} initial states given, {spec.kind} has {spec.state_count}")
    for s in states:
        if s.shape != (spec.units,):
            raise layer.unsupported(f"an initial state of shape {s.shape}, expected {(spec.units,)}")


@converter(*RNN_CLASSES, mask="own")
def recurrent_layer(layer: Layer):
    x, states = _call_inputs(layer)
    _check_mask(layer, x)
    spec = RNNSpec(layer, layer.class_name, layer.config, layer.weights, x.shape[1])
    if spec.stateful:
        if states:
            raise layer.unsupported("stateful=True together with an initial_state")
        states, slots = _stateful_states(layer, spec, x)
    elif states:
        _check_states(layer, spec, states)
    y, finals = spec.run(x, states, x.mask)
    if spec.stateful:
        for slot, final in zip(slots, finals):
            layer.state_output(slot, final)
    if spec.return_sequences:
        y.mask = x.mask
    return [y] + finals if spec.return_state else y


def _wrapped(layer: Layer, key: str) -> tuple[str, dict]:
    entry = layer.get(key)
    if not isinstance(entry, dict):
        raise BadModelFile(f"{layer.describe()} has no {key!r} layer config")
    cls = cfgmod.class_of(entry)
    return cls, cfgmod.config_of(entry)


@converter("Bidirectional", mask="own")
def bidirectional_layer(layer: Layer):
    x, states = _call_inputs(layer)
    _check_mask(layer, x)
    fwd_cls, fwd_cfg = _wrapped(layer, "layer")
    if fwd_cls not in RNN_CLASSES:
        raise layer.unsupported(f"Bidirectional around {fwd_cls[:60]}")
    if isinstance(layer.get("backward_layer"), dict):
        bwd_cls, bwd_cfg = _wrapped(layer, "backward_layer")
        if bwd_cls not in RNN_CLASSES:
            raise layer.unsupported(f"Bidirectional with a backward {bwd_cls[:60]}")
    else:  # Keras builds the backward layer from the forward config with go_backwards flipped
        bwd_cls, bwd_cfg = fwd_cls, dict(fwd_cfg, go_backwards=not fwd_cfg.get("go_backwards", False))
    weights = list(layer.weights)
    n_fwd = _weight_count(fwd_cls, fwd_cfg)
    if len(weights) < n_fwd:
        raise BadModelFile(f"{layer.describe()} has {len(weights)} weight arrays, too few for both directions")
    features = x.shape[1]
    fwd = RNNSpec(layer, fwd_cls, fwd_cfg, weights[:n_fwd], features)
    bwd = RNNSpec(layer, bwd_cls, bwd_cfg, weights[n_fwd:], features)
    if fwd.stateful or bwd.stateful:
        if states:
            raise layer.unsupported("stateful=True together with an initial_state")
        (fwd_states, fwd_slots), (bwd_states, bwd_slots) = (
            _stateful_states(layer, fwd, x),
            _stateful_states(layer, bwd, x),
        )
        slots = fwd_slots + bwd_slots
    else:
        if states and len(states) != fwd.state_count + bwd.state_count:
            raise layer.unsupported(f"{len(states)} initial states for a Bidirectional layer")
        fwd_states, bwd_states = states[: fwd.state_count], states[fwd.state_count :]
        if states:
            _check_states(layer, fwd, fwd_states)
            _check_states(layer, bwd, bwd_states)
    if fwd.return_sequences != bwd.return_sequences:
        raise layer.unsupported("forward and backward layers disagree on return_sequences")
    sequences = fwd.return_sequences
    # Keras forces zero_output_for_mask = return_sequences on both directions.
    y_f, s_f = fwd.run(x, fwd_states, x.mask, zero_masked=sequences)
    y_b, s_b = bwd.run(x, bwd_states, x.mask, zero_masked=sequences)
    if fwd.stateful or bwd.stateful:
        for slot, final in zip(slots, s_f + s_b):
            layer.state_output(slot, final)
    if sequences:
        y_b = layer.call(reverse_time, y_b, shape=y_b.shape)
    mode = layer.get("merge_mode", "concat")
    if mode is None:
        outputs = [y_f, y_b]
    elif mode in MERGES:
        if mode == "concat":
            shape = y_f.shape[:-1] + (fwd.units + bwd.units,)
        elif fwd.units != bwd.units:
            raise BadModelFile(f"{layer.describe()} merges {fwd.units} and {bwd.units} units with {mode!r}")
        else:
            shape = y_f.shape
        outputs = [layer.call(MERGES[mode], y_f, y_b, shape=shape)]
    else:
        raise layer.unsupported(f"merge_mode {str(mode)[:40]!r}")
    if sequences:
        for out in outputs:
            out.mask = x.mask
    if fwd.return_state:
        outputs += s_f + s_b
    return outputs if len(outputs) > 1 else outputs[0]


def _weight_count(class_name: str, config: dict) -> int:
    if class_name == "RNN" and isinstance(config.get("cell"), dict):
        config = cfgmod.config_of(config["cell"])
    if class_name.startswith("CuDNN"):
        return 3
    return 3 if config.get("use_bias", True) else 2


@converter("TimeDistributed", mask="own")
def time_distributed_layer(layer: Layer) -> Tensor:
    x = layer.input
    if x.shape is None or len(x.shape) < 2:
        raise layer.unsupported(f"TimeDistributed needs (batch, time, ...) input, got {x.shape}")
    cls, cfg = _wrapped(layer, "layer")
    if cls not in CONVERTERS or cfgmod.is_model({"class_name": cls, "config": cfg}):
        raise layer.unsupported(f"TimeDistributed around {cls[:60]}, which is not supported")
    if x.mask is not None and MASK_POLICY.get(cls) not in ("pass", "drop"):
        raise layer.unsupported(f"a mask reaching TimeDistributed({cls[:60]}), which Keras hands to the inner layer")
    folded = layer.call(fold_time, x, shape=x.shape[1:], dtype=x.dtype)
    inner = layer.inner(str(cfg.get("name", cls)), cls, cfg, layer.weights, [folded])
    y = CONVERTERS[cls](inner)
    if not isinstance(y, Tensor) or y.shape is None:
        raise layer.unsupported(f"TimeDistributed around {cls[:60]} with several outputs")
    if y.mask is not None:
        raise layer.unsupported(f"TimeDistributed around {cls[:60]}, which makes its own mask")
    out = layer.call(unfold_time, y, x, shape=(x.shape[0],) + y.shape, dtype=y.dtype)
    out.mask = x.mask
    return out
