"""The time loops of SimpleRNN, GRU and LSTM: one function call per layer in the generated file.

Batch axis 0, time axis 1. Per-sample latency is dominated by NumPy's fixed cost per call (~0.4 us),
so each step makes as few calls as possible: the loops work on a (time + 1, [batch,] features + units
+ 1) array whose row t is [x_t, h_t, 1.0]; one product with the step kernel (cells.py) gives every
pre-activation of the step, and each step writes its state into the next row, which is also the
stacked output. A batch of one (without a mask) runs on 1-D rows, np.dot's fastest case; large
batches run in chunks that stay in cache. Every buffer is allocated per call (never shared between
calls or threads), `out=` everywhere. With sigmoid gates and tanh: SimpleRNN 2 calls per step, LSTM 9,
GRU 9 (reset_after=False: 10).

Masks (from Masking or Embedding(mask_zero=True)) follow Keras: a masked step carries the state
forward and outputs the previous output, or zeros inside Bidirectional (zero_masked).
"""

from __future__ import annotations

import numpy as np

from ..activations import tanh
from .cells import activate_into, gate_product, gates_in_place

# Floats in one chunk of a large batch's [x, h, 1] rows (~0.9 MB, 255 samples of the benchmark GRU, measured
# best): a chunk stays in cache (10,000 samples of that GRU: 95 ms at once, 59 ms in chunks), and small
# layers keep whole batches (fewer calls per step).
RNN_CHUNK_FLOATS = 220_000


def chunk_rows(x, units):
    # Samples per chunk of the row loops for x (batch, time, features).
    return max(1, RNN_CHUNK_FLOATS // ((x.shape[1] + 1) * (x.shape[2] + units + 1)))


def steps_mask(mask, go_backwards):
    # (batch, time) booleans -> (time, batch, 1) in processing order.
    m = np.swapaxes(mask, 0, 1)[:, :, None]
    return m[::-1] if go_backwards else m


def rnn_outputs(outs, mask, return_sequences, zero_masked):
    # The (time, batch, units) per-step outputs as (batch, time, units), or the last processed step.
    if not return_sequences:
        if zero_masked and mask is not None:
            return np.where(mask[-1], outs[-1], 0.0)
        return outs[-1].copy()  # outs[-1] is also the final state: keep the two outputs independent
    seq = outs.swapaxes(0, 1).copy()
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


def rnn_chunked(fn, rows, batch_args, weights, options):
    # fn on chunks of `rows` samples (batch_args have the batch first), results concatenated.
    n = batch_args[0].shape[0]
    parts = [
        fn(*[None if a is None else a[i : i + rows] for a in batch_args], *weights, **options)
        for i in range(0, n, rows)
    ]
    return tuple(np.concatenate(p, axis=0) for p in zip(*parts))


def simple_rnn_sequence(x, state, mask, step_kernel, *, activation, go_backwards, return_sequences, zero_masked):
    # h = activation([x, h, 1] [W; U; b]): each step's product lands in the next row's state, then
    # the activation runs there in place (tanh, relu) or is copied back: 2 NumPy calls per step.
    batch, steps, features = x.shape
    units = step_kernel.shape[1]
    if batch > chunk_rows(x, units):
        options = dict(
            activation=activation, go_backwards=go_backwards, return_sequences=return_sequences, zero_masked=zero_masked
        )
        return rnn_chunked(simple_rnn_sequence, chunk_rows(x, units), (x, state, mask), (step_kernel,), options)
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    product = np.matmul if lead else np.dot  # np.dot is the faster 1-D product but needs contiguous out
    m = steps_mask(mask, go_backwards) if mask is not None else None
    tanh_activation = activation is tanh  # the default, written out in the loop
    for t in range(steps):
        h = states[t + 1]
        product(rows[t], step_kernel, out=h)
        if tanh_activation:
            np.tanh(h, out=h)
        else:
            activate_into(h, activation, h)
        if m is not None:  # masked samples carry the state forward
            np.copyto(h, states[t], where=~m[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy()


def gru_sequence(
    x,
    state,
    mask,
    step_kernel,
    input_h_kernel,
    input_h_bias,
    *,
    gate,
    activation,
    go_backwards,
    return_sequences,
    zero_masked,
    recurrent_h_kernel=None,
):
    # Keras's GRU, columns z, r, h: h_new = z*h + (1-z)*hh, computed as hh + z*(h - hh), with
    #   reset_after=True:  hh = act(x W_h + b_h + r * (h U_h + rb_h))  (both parts in one step product)
    #   reset_after=False: hh = act(x W_h + b_h + (r*h) U_h)            (recurrent_h_kernel = U_h)
    # The step product gives the folded z, r pre-activations (cells.gru_kernels); x W_h + b_h is one
    # product for all steps before the loop.
    batch, steps, features = x.shape
    units = input_h_kernel.shape[1]
    if batch > chunk_rows(x, units):
        options = dict(gate=gate, activation=activation, go_backwards=go_backwards)
        options.update(return_sequences=return_sequences, zero_masked=zero_masked)
        options["recurrent_h_kernel"] = recurrent_h_kernel
        weights = (step_kernel, input_h_kernel, input_h_bias)
        return rnn_chunked(gru_sequence, chunk_rows(x, units), (x, state, mask), weights, options)
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    xh = np.dot(rows[:steps, ..., :features].reshape(-1, features), input_h_kernel)
    xh += input_h_bias
    xh = xh.reshape((steps,) + lead + (units,))
    hu = np.empty(lead + (step_kernel.shape[1],), dtype=np.float32)
    g, g_z, g_r, hh = hu[..., : 2 * units], hu[..., :units], hu[..., units : 2 * units], hu[..., 2 * units :]
    ones = np.ones(2 * units, dtype=np.float32)
    times = gate_product(gate)
    sigmoid_tanh = gate == "sigmoid" and activation is tanh  # the common case, written out in the loop
    c = np.empty(lead + (units,), dtype=np.float32)
    d = np.empty(lead + (units,), dtype=np.float32)
    m = steps_mask(mask, go_backwards) if mask is not None else None
    skip = ~m if m is not None else None
    for t in range(steps):
        h = states[t]
        np.dot(rows[t], step_kernel, out=hu)
        if sigmoid_tanh:  # gates_in_place and activate_into, without the calls
            np.exp(g, out=g)
            np.add(g, ones, out=g)
        else:
            gates_in_place(g, gate, ones)
        if recurrent_h_kernel is None:
            times(hh, g_r, out=c)  # r * (h U_h + rb_h)
        else:
            times(h, g_r, out=d)  # (r*h) U_h
            np.dot(d, recurrent_h_kernel, out=c)
        c += xh[t]
        if sigmoid_tanh:
            np.tanh(c, out=c)
        else:
            activate_into(c, activation, c)
        np.subtract(h, c, out=d)
        times(d, g_z, out=d)
        np.add(c, d, out=states[t + 1])
        if skip is not None:  # masked samples carry the state forward
            np.copyto(states[t + 1], h, where=skip[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy()


def lstm_sequence(x, state, cell, mask, step_kernel, *, gate, activation, go_backwards, return_sequences, zero_masked):
    # Keras's LSTM with columns i, f, o, c (cells.lstm_kernel): c = f*c + i*act(x W_c + h U_c + b_c),
    # h = o*act(c). One step product gives the folded gate pre-activations and the candidate's.
    batch, steps, features = x.shape
    units = step_kernel.shape[1] // 4
    if batch > chunk_rows(x, units):
        options = dict(gate=gate, activation=activation, go_backwards=go_backwards)
        options.update(return_sequences=return_sequences, zero_masked=zero_masked)
        return rnn_chunked(lstm_sequence, chunk_rows(x, units), (x, state, cell, mask), (step_kernel,), options)
    lead = () if batch == 1 and mask is None else (batch,)
    rows, states = step_rows(x, state, units, go_backwards, lead)
    cells = np.empty((steps + 1,) + lead + (units,), dtype=np.float32)
    cells[0] = 0.0 if cell is None else np.reshape(cell, lead + (units,))
    zb = np.empty(lead + (4 * units,), dtype=np.float32)
    g, cand = zb[..., : 3 * units], zb[..., 3 * units :]
    g_i, g_f, g_o = zb[..., :units], zb[..., units : 2 * units], zb[..., 2 * units : 3 * units]
    ones = np.ones(3 * units, dtype=np.float32)
    times = gate_product(gate)
    sigmoid_tanh = gate == "sigmoid" and activation is tanh  # the common case, written out in the loop
    d = np.empty(lead + (units,), dtype=np.float32)
    m = steps_mask(mask, go_backwards) if mask is not None else None
    skip = ~m if m is not None else None
    for t in range(steps):
        c = cells[t + 1]
        np.dot(rows[t], step_kernel, out=zb)
        if sigmoid_tanh:  # gates_in_place and activate_into, without the calls
            np.exp(g, out=g)
            np.add(g, ones, out=g)
            np.tanh(cand, out=cand)
        else:
            gates_in_place(g, gate, ones)
            activate_into(cand, activation, cand)
        times(cells[t], g_f, out=c)  # c = f*c_old + i*act(candidate)
        times(cand, g_i, out=cand)
        c += cand
        if sigmoid_tanh:
            np.tanh(c, out=d)
        else:
            activate_into(c, activation, d)
        times(d, g_o, out=states[t + 1])  # h = o*act(c)
        if skip is not None:  # masked samples carry both states forward
            np.copyto(c, cells[t], where=skip[t])
            np.copyto(states[t + 1], states[t], where=skip[t])
    outs = states[1:].reshape(steps, batch, units)
    return rnn_outputs(outs, m, return_sequences, zero_masked), outs[-1].copy(), cells[-1].reshape(batch, units).copy()


def rnn_initial_state(given, x, state_shape):
    # Stateful layer: the state carried from the previous call, or zeros (first call, reset_states()).
    want = (x.shape[0],) + tuple(state_shape)
    if given is None:
        return np.zeros(want, dtype=np.float32)
    state = np.ascontiguousarray(given, dtype=np.float32)
    if state.shape != want:
        raise ValueError(f"a carried state has shape {state.shape}, this batch needs {want}")
    return state


def reverse_time(x):
    return x[:, ::-1]
