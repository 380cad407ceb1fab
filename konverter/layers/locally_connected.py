"""LocallyConnected1D and LocallyConnected2D (Keras 2 / tf-keras only; Keras 3 has no such layer).

A locally-connected layer is a convolution whose weights differ at every output position. tf-keras
stores them in one of three layouts, chosen by the config's `implementation`:

    1  (positions, taps * C, F): one small kernel per output position, 'valid' padding only;
       the taps-and-channels axis is (*kernel_size, C) channels_last, (C, *kernel_size) channels_first
    2  a dense (inputs, outputs) matrix: (*in, C, *out, F) channels_last, (C, *in, F, *out)
       channels_first, of which tf-keras uses only the entries its connectivity mask keeps
    3  a flat vector of the connected entries only, in the order of the sorted (output index,
       input index) pairs of that sparse matrix (the indices are not saved: they follow from the config)

The converter turns all three into implementation 1's channels-last layout (zeros where a window
reaches past the input), so one function computes every layer: the windows of the (padded) input
as a strided view, then one batched matrix product over the output positions.

Geometry (tf-keras `conv_utils.conv_connected_inputs`): output position p along an axis reads the
inputs [p*s - b, p*s - b + k) that lie inside the input, with b = 0 for 'valid' and b = k // 2 for
'same' (NOT TensorFlow's convolution padding, which puts the odd extra zero at the end).
Bias (`backend.bias_add` with a bias of the output's rank): channels_last adds it as stored,
(*out, F); channels_first REINTERPRETS that memory as (F, *out) (a reshape, not a transpose).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_int, as_int_tuple, converter, kernel
from .conv import activate, finish_conv, pad_spatial, sliding_windows

# ----------------------------------------------------------------------------- NumPy function


@kernel(row_wise=True)
def locally_connected(x, kernel, bias, kernel_size, strides, pads, channels_first, relu=False):
    # kernel: (positions, taps * C, F) with taps-then-channels rows, one matrix per output position;
    # bias: (*out, F) or None. The windows are gathered position-major, (positions, N, taps * C),
    # in one copy, so one batched matmul computes the layer (a per-sample einsum is ~10x slower).
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    x = pad_spatial(x, pads, 0.0)
    windows = sliding_windows(x, kernel_size, strides, (1,) * len(kernel_size), "valid", 0.0, True)
    nd = len(kernel_size)
    out = windows.shape[1 : 1 + nd]
    positions, depth, filters = kernel.shape
    cols = np.moveaxis(windows, 0, nd).reshape(positions, x.shape[0], depth)
    y = np.matmul(cols, kernel)
    y = np.moveaxis(y, 0, 1).reshape((x.shape[0],) + out + (filters,))
    return finish_conv(y, bias, relu, channels_first)


# ----------------------------------------------------------------------------- geometry


def window_geometry(length: int, size: int, stride: int, padding: str) -> tuple:
    """(output length, window size, zeros before, zeros after) along one axis.

    With 'same' and a kernel longer than the input, most taps of tf-keras's window never touch
    the input: the window is cut to at most 2 * length - 1 taps that still reach the same inputs
    (so the canonical kernel stays within twice what the file stores along each axis).
    """
    if padding == "valid":
        out = (length - size) // stride + 1
        return out, size, 0, 0
    out = -(-length // stride)
    before = min(size // 2, (out - 1) * stride)
    window = before + min(size - size // 2, length)
    after = max(0, (out - 1) * stride - before + window - length)
    return out, window, before, after


def connectivity(out: tuple, window: tuple, strides: tuple, before: tuple, size: tuple) -> tuple:
    """Per output position and window tap (grid (*out, *window)): the input index along each axis
    (clipped into range) and whether that tap reads the input (False: a padding zero)."""
    nd = len(out)
    index, inside = [], np.ones((1,) * 2 * nd, dtype=bool)
    for d in range(nd):
        shape = [1] * 2 * nd
        shape[d], shape[nd + d] = out[d], window[d]
        at = (np.arange(out[d])[:, None] * strides[d] - before[d] + np.arange(window[d])[None, :]).reshape(shape)
        inside = inside & (at >= 0) & (at < size[d])
        index.append(np.clip(at, 0, size[d] - 1))
    return index, np.broadcast_to(inside, tuple(out) + tuple(window))


# ----------------------------------------------------------------------------- converter

_RANK = {"LocallyConnected1D": 1, "LocallyConnected2D": 2}


def _ints(layer: Layer, key: str, nd: int) -> tuple:
    value = as_int_tuple(layer.get(key, 1), f"{layer.class_name} {key}")
    value = value * nd if len(value) == 1 else value
    if len(value) != nd or any(v < 1 for v in value):
        raise BadModelFile(f"{layer.describe()} has an invalid {key} {value}")
    return value


def _canonical_kernel(weight: np.ndarray, geometry: dict) -> np.ndarray:
    """The stored kernel of any implementation as (positions, window taps * C, F), channels-last rows."""
    out, window, size = geometry["out"], geometry["window"], geometry["size"]
    channels, filters, channels_first = geometry["channels"], geometry["filters"], geometry["channels_first"]
    nd, positions, taps = len(out), math.prod(out), math.prod(window)
    implementation = geometry["implementation"]
    if implementation == 1:  # 'valid' only: the window is the kernel, every tap reads the input
        if channels_first:
            weight = weight.reshape(positions, channels, taps, filters).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(weight).reshape(positions, taps * channels, filters)
    index, inside = connectivity(out, window, geometry["strides"], geometry["before"], size)
    if implementation == 2:
        if channels_first:  # (C, *in, F, *out) -> (*in, C, *out, F)
            order = list(range(1, nd + 1)) + [0] + list(range(nd + 2, 2 * nd + 2)) + [nd + 1]
            weight = weight.transpose(order)
        at_output = [np.arange(o).reshape([o if i == d else 1 for i in range(2 * nd)]) for d, o in enumerate(out)]
        # Index arrays split by a slice: the (*out, *window) grid comes first -> (*out, *window, C, F).
        picked = weight[tuple(index) + (slice(None),) + tuple(at_output)]
        picked = np.where(inside[..., None, None], picked, 0).astype(weight.dtype, copy=False)
        return picked.reshape(positions, taps * channels, filters)
    # implementation 3: the connected entries in sorted (output index, input index) order; an index
    # is the flat position in (*out, F) / (*in, C) channels_last, (F, *out) / (C, *in) channels_first.
    inside = inside.reshape(positions, taps)
    if channels_first:
        full = np.zeros((filters, positions, channels, taps), dtype=weight.dtype)
        full[np.broadcast_to(inside[None, :, None, :], full.shape)] = weight
        full = full.transpose(1, 3, 2, 0)
    else:
        full = np.zeros((positions, filters, taps, channels), dtype=weight.dtype)
        full[np.broadcast_to(inside[:, None, :, None], full.shape)] = weight
        full = full.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(full).reshape(positions, taps * channels, filters)


def _kernel_shape(layer: Layer, geometry: dict) -> tuple:
    """The stored kernel's shape for this config (implementation 3: after a size check)."""
    out, size, kernel_size = geometry["out"], geometry["size"], geometry["kernel_size"]
    channels, filters, channels_first = geometry["channels"], geometry["filters"], geometry["channels_first"]
    implementation = geometry["implementation"]
    if implementation == 1:
        return (math.prod(out), math.prod(kernel_size) * channels, filters)
    if implementation == 2:
        return (channels, *size, filters, *out) if channels_first else (*size, channels, *out, filters)
    stored = layer.weights[0].shape if layer.weights else ()
    # Every output reads at least one input: more outputs than stored entries is a lying file, and
    # checking that first keeps the count below (and the canonical kernel) bounded by the file.
    if len(stored) != 1 or math.prod(out) * channels * filters > stored[0]:
        raise BadModelFile(f"{layer.describe()} kernel has shape {tuple(stored)}, too small for its config")
    connected = 1
    for n, w, s, b, o in zip(size, geometry["window"], geometry["strides"], geometry["before"], out):
        starts = np.arange(o) * s - b
        connected *= int((np.minimum(starts + w, n) - np.maximum(starts, 0)).sum())
    return (connected * channels * filters,)


@converter("LocallyConnected1D", "LocallyConnected2D", mask="drop")
def locally_connected_layer(layer: Layer) -> Tensor:
    nd = _RANK[layer.class_name]
    x = layer.input
    if x.shape is None or len(x.shape) != nd + 1 or any(n is None for n in x.shape):
        raise layer.unsupported(f"expects a rank-{nd + 2} input of known size, got shape {x.shape}")
    data_format = layer.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise layer.unsupported(f"data_format {str(data_format)[:40]!r}")
    channels_first = data_format == "channels_first"
    padding = str(layer.get("padding", "valid")).lower()
    implementation = layer.get("implementation", 1)
    if implementation not in (1, 2, 3) or isinstance(implementation, bool):
        raise BadModelFile(f"{layer.describe()} has implementation {str(implementation)[:20]}, not 1, 2 or 3")
    if padding not in ("valid", "same") or (padding == "same" and implementation == 1):
        raise BadModelFile(f"{layer.describe()} has padding {padding[:40]!r} with implementation {implementation}")
    kernel_size, strides = _ints(layer, "kernel_size", nd), _ints(layer, "strides", nd)
    filters = as_int(layer.get("filters"), f"{layer.class_name} filters")
    if filters < 1:
        raise BadModelFile(f"{layer.describe()} has filters {filters}")
    channels, size = (x.shape[0], x.shape[1:]) if channels_first else (x.shape[-1], x.shape[:-1])
    axes = [window_geometry(n, k, s, padding) for n, k, s in zip(size, kernel_size, strides)]
    if any(a[0] < 1 for a in axes):
        raise BadModelFile(f"{layer.describe()} has a kernel larger than its input {x.shape}")
    out = tuple(a[0] for a in axes)
    geometry = {
        "out": out,
        "window": tuple(a[1] for a in axes),
        "before": tuple(a[2] for a in axes),
        "size": tuple(size),
        "kernel_size": kernel_size,
        "strides": strides,
        "channels": channels,
        "filters": filters,
        "channels_first": channels_first,
        "implementation": implementation,
    }
    shapes = [_kernel_shape(layer, geometry)] + ([out + (filters,)] if layer.get("use_bias", True) else [])
    weights = layer.expect_weights(*shapes)
    kernel = _canonical_kernel(weights[0], geometry)
    bias = None
    if len(weights) == 2:
        bias = weights[1]
        if channels_first:  # tf-keras reshapes the stored (*out, F) bias to (F, *out) without transposing
            bias = np.ascontiguousarray(np.moveaxis(bias.reshape((filters,) + out), 0, -1))
    pads = tuple(a[2:] for a in axes)
    shape = (filters, *out) if channels_first else (*out, filters)
    return activate(
        layer,
        locally_connected,
        x,
        kernel,
        bias,
        shape=shape,
        kernel_size=geometry["window"],
        strides=strides,
        pads=pads,
        channels_first=channels_first,
    )
