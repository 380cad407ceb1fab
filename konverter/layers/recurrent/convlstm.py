"""ConvLSTM1D, ConvLSTM2D, ConvLSTM3D: an LSTM whose input and recurrent products are convolutions.

Keras (ConvLSTMCell, both versions): with columns i, f, c, o of the kernels,
    z = conv(x_t, W; strides, padding, dilation) + b + conv(h, U; stride 1, "same", no dilation)
    c = f*c + i*act(z_c),  h = o*act(c),  gates = recurrent_activation(z_i, z_f, z_o).
The convolutions are conv.py's own `conv` (one im2col product). The input convolution of every time
step is one call (time steps as samples); each step then makes one recurrent convolution. Gate
columns are folded like the LSTM's (cells.gate_fold) and the math of a step is cells.py's.
The loop works channels-last; channels_first moves the channel axis once on the way in and out.
"""

from __future__ import annotations

import numpy as np

from ...errors import BadModelFile
from ..base import Layer, as_int, as_int_tuple, converter
from ..conv import conv, conv_padding
from . import cells
from .cells import activate_into, gate_product, gates_in_place
from .rnn import call_inputs, stateful_states

CONV_LSTM_RANK = {"ConvLSTM1D": 1, "ConvLSTM2D": 2, "ConvLSTM3D": 3}


def conv_lstm_sequence(
    x,
    state,
    cell,
    kernel,
    recurrent_kernel,
    bias,
    *,
    gate,
    activation,
    kernel_size,
    strides,
    dilation,
    padding,
    channels_first,
    go_backwards,
    return_sequences,
):
    # x (batch, time, *spatial, channels) or channels_first (batch, time, channels, *spatial); kernels
    # (taps * channels, 4 * filters) and (taps * filters, 4 * filters), columns i, f, o, c (gates folded).
    if channels_first:
        x = np.moveaxis(x, 2, -1)
        state = None if state is None else np.moveaxis(state, 1, -1)
        cell = None if cell is None else np.moveaxis(cell, 1, -1)
    batch, steps = x.shape[0], x.shape[1]
    filters = recurrent_kernel.shape[1] // 4
    if go_backwards:
        x = x[:, ::-1]
    xw = conv(x.reshape((batch * steps,) + x.shape[2:]), kernel, bias, kernel_size, strides, dilation, padding, False)
    xw = xw.reshape((batch, steps) + xw.shape[1:])
    shape = (batch,) + xw.shape[2:-1] + (filters,)
    h = np.zeros(shape, dtype=np.float32) if state is None else np.array(state, dtype=np.float32)
    c = np.zeros(shape, dtype=np.float32) if cell is None else np.array(cell, dtype=np.float32)
    one = (1,) * (x.ndim - 3)
    ones = np.ones(3 * filters, dtype=np.float32)
    times = gate_product(gate)
    d = np.empty(shape, dtype=np.float32)
    outs = []
    for t in range(steps):
        z = conv(h, recurrent_kernel, None, kernel_size, one, one, "same", False)
        z += xw[:, t]
        g, cand = z[..., : 3 * filters], z[..., 3 * filters :]
        gates_in_place(g, gate, ones)
        activate_into(cand, activation, cand)
        c = times(c, g[..., filters : 2 * filters])  # a new array: the previous c stays intact
        c += times(cand, g[..., :filters])
        activate_into(c, activation, d)
        h = times(d, g[..., 2 * filters :])
        outs.append(h)
    y = np.stack(outs, axis=1) if return_sequences else h.copy()
    if channels_first:
        return np.moveaxis(y, -1, 2 if return_sequences else 1), np.moveaxis(h, -1, 1), np.moveaxis(c, -1, 1)
    return y, h, c


def _geometry(layer: Layer, nd: int) -> dict:
    """kernel_size, strides, dilation, padding, channels_first of a ConvLSTM layer, validated."""

    def ints(key: str) -> tuple:
        value = as_int_tuple(layer.get(key, 1), f"{layer.class_name} {key}")
        value = value * nd if len(value) == 1 else value
        if len(value) != nd or any(v < 1 for v in value):
            raise BadModelFile(f"{layer.describe()} has an invalid {key} {value}")
        return value

    padding = layer.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise layer.unsupported(f"padding {str(padding)[:40]!r}")
    data_format = layer.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise layer.unsupported(f"data_format {str(data_format)[:40]!r}")
    return {
        "kernel_size": ints("kernel_size"),
        "strides": ints("strides"),
        "dilation": ints("dilation_rate"),
        "padding": padding,
        "channels_first": data_format == "channels_first",
    }


def _folded_weights(layer: Layer, gate: str, filters: int, channels: int, kernel_size: tuple) -> tuple:
    """(kernel, recurrent kernel, bias or None) as conv_lstm_sequence takes them: (taps * in, 4 filters)
    matrices, columns reordered from Keras's i, f, c, o to i, f, o, c, gate columns folded (float64 math)."""
    f = filters
    shapes = [kernel_size + (channels, 4 * f), kernel_size + (f, 4 * f)]
    use_bias = bool(layer.get("use_bias", True))
    weights = layer.expect_weights(*shapes, *([(4 * f,)] if use_bias else []))
    order = np.r_[0 : 2 * f, 3 * f : 4 * f, 2 * f : 3 * f]
    kernel, recurrent = (w.astype(np.float64).reshape(-1, 4 * f)[:, order] for w in weights[:2])
    bias = weights[2].astype(np.float64)[order] if use_bias else np.zeros(4 * f)
    scale, offset = cells.gate_fold(layer, gate)
    for array in (kernel, recurrent, bias):
        array[..., : 3 * f] *= scale
    bias[: 3 * f] += offset
    keep_bias = use_bias or offset != 0.0
    return kernel.astype(np.float32), recurrent.astype(np.float32), bias.astype(np.float32) if keep_bias else None


@converter("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", mask="own")
def conv_lstm_layer(layer: Layer):
    nd = CONV_LSTM_RANK[layer.class_name]
    x, states = call_inputs(layer, spatial_rank=nd)
    if layer.kwargs.get("mask") is not None or x.mask is not None:
        raise layer.unsupported("a mask (Keras's Masking gives a ConvLSTM input a mask per position, not per step)")
    geometry = _geometry(layer, nd)
    channels_first = geometry["channels_first"]
    if layer.backend == "theano":
        raise layer.unsupported("a Theano-backend ConvLSTM kernel")
    filters = as_int(layer.get("filters"), f"{layer.class_name} filters")
    if filters < 1:
        raise BadModelFile(f"{layer.describe()} has {filters} filters")
    activation = cells.candidate_activation(layer, layer.get("activation", "tanh"))
    gate = cells.gate_name(layer, layer.get("recurrent_activation", "sigmoid"))
    channels = x.shape[1] if channels_first else x.shape[-1]
    spatial = x.shape[2:] if channels_first else x.shape[1:-1]
    kernel, recurrent, bias = _folded_weights(layer, gate, filters, channels, geometry["kernel_size"])
    size = []
    for n, k, s, d in zip(spatial, geometry["kernel_size"], geometry["strides"], geometry["dilation"]):
        lo, hi = conv_padding(n, k, s, d, geometry["padding"])
        size.append((n + lo + hi - (k - 1) * d - 1) // s + 1)
        if size[-1] < 1:
            raise BadModelFile(f"{layer.describe()} has a kernel larger than its input {x.shape}")
    state_shape = (filters, *size) if channels_first else (*size, filters)
    if layer.get("stateful"):
        if states:
            raise layer.unsupported("stateful=True together with an initial_state")
        states, slots = stateful_states(layer, x, [state_shape, state_shape])
    elif states and (len(states) != 2 or any(s.shape != state_shape for s in states)):
        shown = [s.shape for s in states]
        raise layer.unsupported(f"initial states of shapes {shown}, expected two of {state_shape}")
    sequences = bool(layer.get("return_sequences", False))
    out_shape = (x.shape[0], *state_shape) if sequences else state_shape
    options = dict(gate=gate, activation=activation, go_backwards=bool(layer.get("go_backwards", False)))
    y, h, c = layer.call_multi(
        conv_lstm_sequence,
        x,
        *(states or [None, None]),
        kernel,
        recurrent,
        bias,
        shapes=[out_shape, state_shape, state_shape],
        **geometry,
        **options,
        return_sequences=sequences,
    )
    if layer.get("stateful"):
        for slot, final in zip(slots, (h, c)):
            layer.state_output(slot, final)
    return [y, h, c] if layer.get("return_state") else y
