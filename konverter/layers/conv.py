"""Convolutions: Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, Conv1D/2D/3DTranspose.

Every convolution works on channels-last data (channels-first layers move the channel axis
around the call). A regular convolution is ONE matrix multiply: a strided view of the padded
input gives every window as (kernel taps..., channels), the same order as Keras's kernel, so
`reshape` to (windows, taps * channels) is one contiguous im2col copy. With few channels (short
contiguous runs) a rewrite uses one `np.take` of import-time patch indices instead (conv_gather).
Depthwise convolutions are one einsum over the same window view. Transposed convolutions
multiply once and scatter-add each kernel tap into the output.

Padding follows TensorFlow exactly: 'same' puts the odd extra row/column at the end,
'causal' pads on the left only. Keras computes cross-correlations (no kernel flip).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..errors import BadModelFile
from . import activations
from .activations import activation_name, apply_activation
from .base import Const, Derived, Layer, Op, Tensor, as_int, as_int_tuple, converter, kernel, tensors_in
from .merge import merge_add
from .normalization import scale_shift

# ----------------------------------------------------------------------------- geometry


def conv_padding(length, k, stride, dilation, padding):
    # (before, after) zero padding that TensorFlow applies along one spatial axis.
    span = (k - 1) * dilation + 1
    if padding == "same":
        total = max((-(-length // stride) - 1) * stride + span - length, 0)
        return total // 2, total - total // 2
    if padding == "causal":
        return span - 1, 0
    return 0, 0


def pad_spatial(x, pads, fill):
    # x channels-last; pads one (before, after) pair per spatial axis.
    if not any(lo or hi for lo, hi in pads):
        return x
    shape = (x.shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], pads)) + (x.shape[-1],)
    out = np.zeros(shape, dtype=x.dtype) if fill == 0 else np.full(shape, fill, dtype=x.dtype)  # zeros: 2x faster
    out[(slice(None),) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[1:-1], pads))] = x
    return out


def sliding_windows(x, kernel_size, strides, dilation, padding, fill, merge_taps=False):
    # A read-only view (N, *out, *kernel_size, C) of every window of the padded channels-last x.
    # merge_taps: when the last kernel axis is undilated, it and the channels are one contiguous
    # run in memory; viewing them as one axis (N, *out, *kernel_size[:-1], k * C) makes the
    # im2col copy about 1.6x faster (fewer, longer inner loops), in the same element order.
    if padding != "valid":
        pads = [conv_padding(n, k, s, d, padding) for n, k, s, d in zip(x.shape[1:-1], kernel_size, strides, dilation)]
        x = pad_spatial(x, pads, fill)
    shape, view_strides = window_layout(x.shape, x.strides, kernel_size, strides, dilation, merge_taps)
    if not x.flags.c_contiguous:
        return np.lib.stride_tricks.as_strided(x, shape, view_strides, writeable=False)
    view = np.ndarray(shape, x.dtype, x, 0, view_strides)  # 5x less overhead than as_strided
    view.flags.writeable = False
    return view


def window_layout(shape, step, kernel_size, strides, dilation, merge_taps):
    # (shape, strides) of sliding_windows' view of an array of this shape and these strides (bytes).
    out, out_strides, tap_strides = [], [], []
    for n, k, s, d, st in zip(shape[1:-1], kernel_size, strides, dilation, step[1:-1]):
        out.append((n - (k - 1) * d - 1) // s + 1)
        out_strides.append(st * s)
        tap_strides.append(st * d)
    channels = shape[-1]
    if merge_taps and tap_strides[-1] == step[-1] * channels:
        taps = list(kernel_size[:-1]) + [kernel_size[-1] * channels]
        return tuple([shape[0]] + out + taps), tuple([step[0]] + out_strides + tap_strides[:-1] + [step[-1]])
    return (
        tuple([shape[0]] + out + list(kernel_size) + [channels]),
        tuple([step[0]] + out_strides + tap_strides + [step[-1]]),
    )


def window_geometry(size, channels, kernel_size, strides, dilation, padding):
    # What conv's `window` argument holds for inputs of one known size: the padding, and the shape
    # and byte strides of one padded float32 sample's windows, as sliding_windows (merge_taps) views
    # them. Built once at import (plan_conv_windows): per call, conv then makes the view in one step
    # instead of recomputing the geometry (~3 us of Python, 15% of a small image's convolution).
    pads = tuple(conv_padding(n, k, s, d, padding) for n, k, s, d in zip(size, kernel_size, strides, dilation))
    padded = (1,) + tuple(n + lo + hi for n, (lo, hi) in zip(size, pads)) + (channels,)
    step = tuple(4 * math.prod(padded[i + 1 :]) for i in range(len(padded)))  # C order, 4-byte values
    shape, view_strides = window_layout(padded, step, kernel_size, strides, dilation, True)
    return pads if any(lo or hi for lo, hi in pads) else (), shape[1:], view_strides[1:]


def window_view(x, window):
    # The windows' view of channels-last x (float32 or another 4-byte type) from its window_geometry:
    # what sliding_windows(x, ..., merge_taps=True) returns, in one step. Only conv reads it (it is
    # copied into the im2col matrix at once), so it is not made read-only: 0.2 us less per call.
    pads, shape, strides = window
    if pads:
        x = pad_spatial(x, pads, 0.0)
    elif not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return np.ndarray((len(x),) + shape, x.dtype, x, 0, (x.strides[0],) + strides)


def conv_transpose_geometry(length, k, stride, dilation, padding, output_padding):
    # (output length, cropped at the start) of a TF/Keras transposed convolution along one axis.
    span = (k - 1) * dilation + 1
    if output_padding is None:
        out = length * stride + max(span - stride, 0) if padding == "valid" else length * stride
    else:
        out = (length - 1) * stride + span - 2 * (span // 2 if padding == "same" else 0) + output_padding
    start = max((length - 1) * stride + span - out, 0) // 2 if padding == "same" else 0
    return out, start


# ----------------------------------------------------------------------------- NumPy functions


def finish_conv(y, bias, relu, channels_first, activation=None, residual=None):
    # y is a fresh channels-last array, so bias, residual and activation go in place (no full-size
    # temporaries). bias: (F,), or repeated over an output row or map (bias_tile): rows of W * F values
    # add 2x faster. residual: a tensor of the layer's output shape added before the activation
    # (fuse_residual_into_conv). ReLU as the clip method: np.maximum against a scalar 0.0 takes 3x
    # longer on NumPy 2 (not vectorized), np.clip's wrapper adds ~1 us a call.
    if bias is not None:
        y += bias
    if residual is not None:
        y += np.moveaxis(residual, 1, -1) if channels_first else residual
    if relu is True:
        y.clip(0.0, np.inf, out=y)
    elif relu is not False and relu is not None:  # zeros of an output row or map (zeros_tile): 2x faster
        np.maximum(y, relu, out=y)
    if activation is not None:
        activate_inplace(y, activation)
    return np.moveaxis(y, -1, 1) if channels_first else y


def activate_inplace(y, activation):
    # The activations a convolution's fresh output takes in place (fuse_activation_into_conv).
    # sigmoid is 1 / (1 + exp(-y)): exp overflowing to inf gives exactly 0, like Keras.
    if activation == "relu":
        y.clip(0.0, np.inf, out=y)
    elif activation == "relu6":
        y.clip(0.0, 6.0, out=y)
    elif activation == "sigmoid":
        np.negative(y, out=y)
        np.exp(y, out=y)
        y += 1.0
        np.reciprocal(y, out=y)
    elif activation == "swish":
        e = np.negative(y)
        np.exp(e, out=e)
        e += 1.0
        y /= e
    elif activation == "swish_halved":
        # y holds x / 2 (the layer's kernel and bias were halved at conversion, exactly): x * sigmoid(x)
        # is y + y * tanh(y), one pass less than the exp form, and tanh is faster than exp (23% in all).
        t = np.tanh(y)
        t *= y
        y += t
    elif activation == "hard_silu":
        e = y / 6.0
        e += 0.5
        e.clip(0.0, 1.0, out=e)
        y *= e
    return y


@kernel(row_wise=True)
def conv(
    x,
    kernel,
    bias,
    kernel_size,
    strides,
    dilation,
    padding,
    channels_first,
    relu=False,
    activation=None,
    residual=None,
    window=None,
):
    # kernel: (taps * C, F) = Keras's (*kernel_size, C, F) reshaped, so one matmul does the layer.
    # window: the windows' geometry for x's known size (window_geometry), or None.
    if channels_first:
        x = np.moveaxis(x, 1, -1)
        residual = None if residual is None else np.moveaxis(residual, 1, -1)
    if window is not None and x.itemsize == 4:
        source = window_view(x, window)
        lead = source.shape[: x.ndim - 1]
    elif kernel.shape[0] == x.shape[-1] and max(strides) == 1:  # one tap (1x1), unit strides: no windows needed
        source, lead = x, x.shape[:-1]
    else:
        source = sliding_windows(x, kernel_size, strides, dilation, padding, 0.0, True)
        lead = source.shape[: x.ndim - 1]
    depth, filters = kernel.shape
    if len(source) > 1:
        patches = math.prod(source.shape[1:]) if source is not x else 0
        step = batch_step(len(source), patches, math.prod(lead[1:]) * filters, activation)
    else:
        step = 1
    if step >= len(source):
        y = (source.reshape(-1, depth) @ kernel).reshape(lead + (filters,))
        y = finish_conv(y, bias, relu, False, activation, residual)
    else:
        y = np.empty(lead + (filters,), dtype=np.result_type(x, kernel))
        for i in range(0, len(source), step):
            part = y[i : i + step]
            np.matmul(source[i : i + step].reshape(-1, depth), kernel, out=part.reshape(-1, filters))
            finish_conv(part, bias, relu, False, activation, None if residual is None else residual[i : i + step])
    return np.moveaxis(y, -1, 1) if channels_first else y


def batch_step(n, patches, outputs, activation):
    # Images per product for a batch of n: all of them, or a few at a time when the whole batch would
    # copy tens of MB of im2col patches (`patches` values per image), or run a multi-pass activation
    # over outputs far larger than the cache (`outputs` values per image): per chunk, the patches,
    # the product and every pass over it stay in cache (measured 1.8x faster on 16 images of 24x24x64
    # patches, 1.9x on a 1x1 convolution + swish of 16 images of 48x48x96).
    step = n
    if n > 1 and n * patches > PATCH_CHUNK:
        step = max(1, PATCH_CHUNK // patches)
    if n > 1 and activation in ("swish", "swish_halved", "sigmoid", "hard_silu") and n * outputs > ACTIVATION_CHUNK:
        step = min(step, max(1, ACTIVATION_CHUNK // outputs))
    return step


@kernel(row_wise=True)
def conv_gather(x, kernel, bias, index, pads, out_size, relu=False, activation=None, residual=None):
    # Channels-last x; index: (windows, taps * C) flat positions in one padded sample (gather_index,
    # see gather_narrow_convs). One gather plus one product: where a window's
    # contiguous runs are short (few channels), this is ~2x faster than the strided im2col copy.
    if pads:
        x = pad_spatial(x, pads, 0.0)
    n = x.shape[0]
    flat = x.reshape(n, -1) if n else x.reshape(0, math.prod(x.shape[1:]))  # -1 needs a sample to infer from
    # The index is in range by construction, so mode="wrap" changes nothing but skips the bounds
    # check; the method skips np.take's wrapper: 1.6x faster on a small image.
    y = (flat.take(index, axis=1, mode="wrap") @ kernel).reshape((n,) + out_size + (kernel.shape[1],))
    if bias is None and relu is False and activation is None and residual is None:
        return y
    return finish_conv(y, bias, relu, False, activation, residual)


@kernel(row_wise=True)
def conv_grouped(x, kernel, bias, kernel_size, strides, dilation, padding, channels_first, relu=False, activation=None):
    # kernel: (groups, taps * C/groups, F/groups); group g reads channels and writes filters of block g.
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    groups, depth, per_group = kernel.shape
    windows = sliding_windows(x, kernel_size, strides, dilation, padding, 0.0, True)
    lead = windows.shape[: x.ndim - 1]
    taps = depth // (x.shape[-1] // groups)
    cols = windows.reshape(-1, taps, groups, x.shape[-1] // groups).transpose(2, 0, 1, 3)
    cols = cols.reshape(groups, math.prod(lead), depth)  # not -1: NumPy cannot infer it for an empty batch
    y = np.matmul(cols, kernel).transpose(1, 0, 2).reshape(lead + (groups * per_group,))
    return finish_conv(y, bias, relu, channels_first, activation)


def depthwise_tiles(kernel, out_width):
    # Keras's depthwise kernel, (k, C, m) or (kh, kw, C, m), repeated along one output row as
    # (kh, kw, out_width * C * m): with it, each tap's product runs over a whole contiguous row instead
    # of C values at a time. Pure layout of the kernel, built at import where the width is known.
    kernel = kernel.reshape((1,) * (4 - kernel.ndim) + kernel.shape[:-2] + (-1,))
    tiles = np.repeat(kernel[:, :, None, :], out_width, axis=2).reshape(kernel.shape[0], kernel.shape[1], -1)
    tiles.flags.writeable = False
    return tiles


def depthwise_rows(x, tiles, kernel_size, strides, dilation, pads, out=None):
    # Channels-last (N, H, W, C) x, unit column stride, (before, after) pads per spatial axis; tiles
    # from depthwise_tiles. The padded input is viewed as (N, out rows, kh, kw, out_width * C) and ONE
    # einsum multiplies and sums every tap over contiguous rows: no window copy, no temporary per tap.
    # Measured 1.2-4x faster than the einsum over (..., C) windows (the gain grows with the row
    # length), but slower for strided columns.
    x = pad_spatial(x, pads, 0.0)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    (kh, kw), (dh, dw), (n, hp, wp, c) = kernel_size, dilation, x.shape
    ho, wo = (hp - (kh - 1) * dh - 1) // strides[0] + 1, wp - (kw - 1) * dw
    row, item = x.strides[1], x.itemsize
    steps = (x.strides[0], strides[0] * row, dh * row, dw * c * item, item)
    view = np.ndarray((n, ho, kh, kw, wo * c), x.dtype, x, 0, steps)
    if out is None:
        return np.einsum("nhijk,ijk->nhk", view, tiles).reshape(n, ho, wo, c)
    np.einsum("nhijk,ijk->nhk", view, tiles, out=out.reshape(n, ho, wo * c))
    return out


@kernel(row_wise=True)
def depthwise_conv(
    x, kernel, bias, kernel_size, strides, dilation, padding, channels_first, relu=False, activation=None, tiles=None
):
    # kernel: Keras's (*kernel_size, C, multiplier); output channel c * multiplier + m, like TensorFlow.
    # 1-D runs as 2-D of height 1; a multiplier > 1 repeats each input channel that many times.
    # Unit column stride: depthwise_rows (tiles: depthwise_tiles, built at import when the size is known).
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    one_d = len(kernel_size) == 1
    if one_d:
        x, kernel = x[:, None], kernel[None]
        kernel_size, strides, dilation = (1, *kernel_size), (1, *strides), (1, *dilation)
    if kernel.shape[-1] > 1:
        x = np.repeat(x, kernel.shape[-1], axis=-1)
    if strides[1] == 1:
        pads = [conv_padding(n, k, s, d, padding) for n, k, s, d in zip(x.shape[1:3], kernel_size, strides, dilation)]
        height, width = (
            n + lo + hi - (k - 1) * d for n, (lo, hi), k, d in zip(x.shape[1:3], pads, kernel_size, dilation)
        )
        if tiles is None:
            tiles = depthwise_tiles(kernel, width)
        out_shape = (len(x), (height - 1) // strides[0] + 1, width, x.shape[3])
        step = batch_step(len(x), 0, math.prod(out_shape[1:]), activation)
        if step >= len(x):
            y = finish_conv(
                depthwise_rows(x, tiles, kernel_size, strides, dilation, pads), bias, relu, False, activation
            )
        else:  # a few images at a time: the padded copy, the sums and the activation stay in cache
            y = np.empty(out_shape, dtype=np.result_type(x, tiles))
            for i in range(0, len(x), step):
                part = depthwise_rows(x[i : i + step], tiles, kernel_size, strides, dilation, pads, y[i : i + step])
                finish_conv(part, bias, relu, False, activation)
    else:  # strided columns: one einsum over (..., C) windows
        windows = sliding_windows(x, kernel_size, strides, dilation, padding, 0.0)
        y = np.einsum("nhwijc,ijc->nhwc", windows, kernel.reshape(kernel.shape[:2] + (-1,)))
        y = finish_conv(y, bias, relu, False, activation)
    y = y[:, 0] if one_d else y
    return np.moveaxis(y, -1, 1) if channels_first else y


@kernel(row_wise=True)
def separable_conv(
    x, depthwise, pointwise, bias, kernel_size, strides, dilation, padding, channels_first, relu=False, activation=None
):
    # Depthwise (no bias) then a 1x1 convolution; pointwise: (C * multiplier, F).
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    y = depthwise_conv(x, depthwise, None, kernel_size, strides, dilation, padding, False, False)
    y = (y.reshape(-1, y.shape[-1]) @ pointwise).reshape(y.shape[:-1] + (pointwise.shape[1],))
    return finish_conv(y, bias, relu, channels_first, activation)


@kernel(row_wise=True)
def conv_transpose(
    x,
    kernel,
    bias,
    kernel_size,
    strides,
    dilation,
    padding,
    output_padding,
    channels_first,
    relu=False,
    activation=None,
):
    # kernel: (C, taps * F). One matmul gives every tap's contribution; each tap is then added
    # into the output at its strided offset (TensorFlow's gradient-of-convolution layout, cropped).
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    nd = len(kernel_size)
    size = x.shape[1:-1]
    filters = kernel.shape[1] // int(np.prod(kernel_size))
    z = (x.reshape(-1, x.shape[-1]) @ kernel).reshape(x.shape[:-1] + tuple(kernel_size) + (filters,))
    geometry = [
        conv_transpose_geometry(
            size[i],
            kernel_size[i],
            strides[i],
            dilation[i],
            padding,
            None if output_padding is None else output_padding[i],
        )
        for i in range(nd)
    ]
    y = np.zeros((x.shape[0],) + tuple(g[0] for g in geometry) + (filters,), dtype=z.dtype)
    for tap in np.ndindex(*kernel_size):
        src, dst = [], []
        for i in range(nd):
            out, crop = geometry[i]
            offset = tap[i] * dilation[i] - crop  # output index of input 0 for this tap
            first = max(0, -(offset // strides[i]))
            stop = min(size[i], -(-(out - offset) // strides[i]))
            if first >= stop:
                break
            src.append(slice(first, stop))
            dst.append(slice(offset + first * strides[i], offset + (stop - 1) * strides[i] + 1, strides[i]))
        else:  # every axis has at least one input landing inside the cropped output
            y[(slice(None),) + tuple(dst)] += z[(slice(None),) + tuple(src) + tap]
    return finish_conv(y, bias, relu, channels_first, activation)


# ----------------------------------------------------------------------------- converters

_CONV_RANK = {
    "Conv1D": 1,
    "Conv2D": 2,
    "Conv3D": 3,
    "DepthwiseConv1D": 1,
    "DepthwiseConv2D": 2,
    "SeparableConv1D": 1,
    "SeparableConv2D": 2,
    "Conv1DTranspose": 1,
    "Conv2DTranspose": 2,
    "Conv3DTranspose": 3,
}
# Keras 2 flipped these kernels when loading a Theano-written file (convert_kernel); Theano
# files with other convolution classes are refused rather than guessed.
_THEANO_FLIPPED = ("Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose")


def spatial_options(layer: Layer, transpose: bool = False) -> dict:
    """kernel_size, strides, dilation, padding, channels_first of a convolution layer, validated."""
    nd = _CONV_RANK[layer.class_name]
    x = layer.input
    if x.shape is None or len(x.shape) != nd + 1:
        raise layer.unsupported(f"expects a rank-{nd + 2} input, got shape {x.shape}")

    def ints(key: str, default: int) -> tuple:
        value = as_int_tuple(layer.get(key, default), f"{layer.class_name} {key}")
        value = value * nd if len(value) == 1 else value
        if len(value) != nd or any(v < 1 for v in value):
            raise BadModelFile(f"{layer.describe()} has an invalid {key} {value}")
        return value

    padding = layer.get("padding", "valid")
    allowed = ("valid", "same", "causal") if nd == 1 and not transpose else ("valid", "same")
    if padding not in allowed:
        raise layer.unsupported(f"padding {str(padding)[:40]!r}")
    data_format = layer.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise layer.unsupported(f"data_format {str(data_format)[:40]!r}")
    options = {
        "kernel_size": ints("kernel_size", 1),
        "strides": ints("strides", 1),
        "dilation": ints("dilation_rate", 1),
        "padding": padding,
        "channels_first": data_format == "channels_first",
    }
    if layer.backend == "theano" and layer.keras_major == 2:
        if layer.class_name not in _THEANO_FLIPPED:
            raise layer.unsupported("a Theano-backend kernel for this layer class")
    if layer.get("lora_rank"):
        raise layer.unsupported("LoRA weights (merge them into the kernel before saving)")
    return options


def _channels(layer: Layer, options: dict) -> int:
    x = layer.input
    channels = x.shape[0] if options["channels_first"] else x.shape[-1]
    if channels is None:
        raise layer.unsupported("an input with an unknown number of channels")
    return channels


def _out_shape(layer: Layer, options: dict, filters: int) -> tuple:
    x = layer.input
    spatial = x.shape[1:] if options["channels_first"] else x.shape[:-1]
    out = []
    for n, k, s, d in zip(spatial, options["kernel_size"], options["strides"], options["dilation"]):
        if n is None:
            out.append(None)
            continue
        lo, hi = conv_padding(n, k, s, d, options["padding"])
        size = (n + lo + hi - (k - 1) * d - 1) // s + 1
        if size < 1:
            raise BadModelFile(f"{layer.describe()} has a kernel larger than its input {x.shape}")
        out.append(size)
    return (filters, *out) if options["channels_first"] else (*out, filters)


def _flip(layer: Layer, kernel: np.ndarray, nd: int) -> np.ndarray:
    if layer.backend == "theano" and layer.keras_major == 2:
        return np.ascontiguousarray(kernel[(slice(None, None, -1),) * nd])
    return kernel


def activate(layer: Layer, fn, *args, shape: tuple, **kwargs) -> Tensor:
    """Record a convolution and its activation; ReLU is fused into the call (in place, one pass less)."""
    value = layer.get("activation")
    if activation_name(value, layer) == "relu":
        return layer.call(fn, *args, shape=shape, relu=True, **kwargs)
    return apply_activation(layer, layer.call(fn, *args, shape=shape, **kwargs), value)


def _positive(layer: Layer, key: str, default: int | None = None) -> int:
    value = as_int(layer.get(key, default), f"{layer.class_name} {key}")
    if value < 1:
        raise BadModelFile(f"{layer.describe()} has {key} {value}")
    return value


@converter("Conv1D", "Conv2D", "Conv3D", mask="drop")
def conv_layer(layer: Layer) -> Tensor:
    options = spatial_options(layer)
    nd = len(options["kernel_size"])
    channels = _channels(layer, options)
    filters = _positive(layer, "filters")
    groups = _positive(layer, "groups", 1)
    if channels % groups or filters % groups:
        raise BadModelFile(f"{layer.describe()} has groups={groups} for {channels} channels and {filters} filters")
    kshape = options["kernel_size"] + (channels // groups, filters)
    if layer.get("use_bias", True):
        kernel, bias = layer.expect_weights(kshape, (filters,))
    else:
        (kernel,), bias = layer.expect_weights(kshape), None
    kernel = _flip(layer, kernel, nd)
    shape = _out_shape(layer, options, filters)
    if groups == 1:
        kernel = kernel.reshape(-1, filters)
        return activate(layer, conv, layer.input, kernel, bias, shape=shape, **options)
    else:
        taps = int(np.prod(options["kernel_size"]))
        per_group = filters // groups
        kernel = kernel.reshape(taps * (channels // groups), groups, per_group).transpose(1, 0, 2)
        kernel = np.ascontiguousarray(kernel)
        return activate(layer, conv_grouped, layer.input, kernel, bias, shape=shape, **options)


def _depthwise_kernel(layer: Layer, options: dict, channels: int, multiplier: int, index: int) -> np.ndarray:
    kernel = layer.weights[index]
    want = options["kernel_size"] + (channels, multiplier)
    if tuple(kernel.shape) != want:
        raise BadModelFile(f"{layer.describe()} depthwise kernel has shape {kernel.shape}, its config implies {want}")
    return kernel


@converter("DepthwiseConv1D", "DepthwiseConv2D", mask="drop")
def depthwise_conv_layer(layer: Layer) -> Tensor:
    options = spatial_options(layer)
    channels = _channels(layer, options)
    multiplier = _positive(layer, "depth_multiplier", 1)
    use_bias = bool(layer.get("use_bias", True))
    layer.expect_weights(None, *([(channels * multiplier,)] if use_bias else []))
    kernel = _depthwise_kernel(layer, options, channels, multiplier, 0)
    bias = layer.weights[1] if use_bias else None
    shape = _out_shape(layer, options, channels * multiplier)
    return activate(layer, depthwise_conv, layer.input, kernel, bias, shape=shape, **options)


@converter("SeparableConv1D", "SeparableConv2D", mask="drop")
def separable_conv_layer(layer: Layer) -> Tensor:
    options = spatial_options(layer)
    channels = _channels(layer, options)
    multiplier = _positive(layer, "depth_multiplier", 1)
    filters = _positive(layer, "filters")
    use_bias = bool(layer.get("use_bias", True))
    pointwise_shape = (1,) * len(options["kernel_size"]) + (channels * multiplier, filters)
    layer.expect_weights(None, pointwise_shape, *([(filters,)] if use_bias else []))
    depthwise = _depthwise_kernel(layer, options, channels, multiplier, 0)
    pointwise = layer.weights[1].reshape(channels * multiplier, filters)
    bias = layer.weights[2] if use_bias else None
    shape = _out_shape(layer, options, filters)
    return activate(layer, separable_conv, layer.input, depthwise, pointwise, bias, shape=shape, **options)


@converter("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", mask="drop")
def conv_transpose_layer(layer: Layer) -> Tensor:
    options = spatial_options(layer, transpose=True)
    nd = len(options["kernel_size"])
    channels = _channels(layer, options)
    filters = _positive(layer, "filters")
    if layer.get("groups", 1) not in (1, None):
        raise layer.unsupported("grouped transposed convolution")
    output_padding = layer.get("output_padding")
    if output_padding is not None:
        output_padding = as_int_tuple(output_padding, "output_padding")
        output_padding = output_padding * nd if len(output_padding) == 1 else output_padding
        if len(output_padding) != nd or any(
            not 0 <= p < max(s, d) for p, s, d in zip(output_padding, options["strides"], options["dilation"])
        ):
            raise BadModelFile(f"{layer.describe()} has an invalid output_padding {output_padding}")
    kshape = options["kernel_size"] + (filters, channels)
    if layer.get("use_bias", True):
        kernel, bias = layer.expect_weights(kshape, (filters,))
    else:
        (kernel,), bias = layer.expect_weights(kshape), None
    kernel = _flip(layer, kernel, nd)
    # (*k, F, C) -> (C, *k, F) -> (C, taps * F): the matmul yields every tap's output at once.
    kernel = np.ascontiguousarray(np.moveaxis(kernel, -1, 0).reshape(channels, -1))
    x = layer.input
    spatial = x.shape[1:] if options["channels_first"] else x.shape[:-1]
    out = []
    for i, n in enumerate(spatial):
        if n is None:
            out.append(None)
            continue
        size, _ = conv_transpose_geometry(
            n,
            options["kernel_size"][i],
            options["strides"][i],
            options["dilation"][i],
            options["padding"],
            None if output_padding is None else output_padding[i],
        )
        out.append(size)
    shape = (filters, *out) if options["channels_first"] else (*out, filters)
    return activate(layer, conv_transpose, x, kernel, bias, shape=shape, output_padding=output_padding, **options)


# ----------------------------------------------------------------------------- program passes

# Position of the bias among each convolution function's positional arguments.
CONV_BIAS_ARG = {conv: 2, conv_grouped: 2, depthwise_conv: 2, conv_transpose: 2, separable_conv: 3}


def private_conv_inputs(ops: list, outputs: list, fn) -> list:
    """(op, source) pairs: `op` calls `fn` on the output of convolution `source`, its only reader."""
    uses = Counter(id(t) for op in ops for t in tensors_in([op.args, op.kwargs]))
    uses.update(id(t) for t in tensors_in(list(outputs)))
    producer: dict[int, Op] = {id(t): op for op in ops for t in op.outputs}
    found = []
    for op in ops:
        if op.fn is not fn or not op.args or not isinstance(op.args[0], Tensor) or uses.get(id(op.args[0])) != 1:
            continue
        source = producer.get(id(op.args[0]))
        if source is not None and source.fn in CONV_BIAS_ARG and len(source.args) > CONV_BIAS_ARG[source.fn]:
            found.append((op, source))
    return found


def _absorb(ops: list, source: Op, op: Op) -> None:
    """`source` now computes what `op` did: it takes over op's outputs and op leaves the program."""
    source.outputs = op.outputs
    if op.layer != source.layer:  # a layer's own activation was recorded as a separate op
        source.layer = f"{source.layer} + {op.layer}"
    ops.remove(op)


def _channel_vector(const: object, shape: tuple, channels_first: bool) -> np.ndarray | None:
    """A per-channel BatchNormalization constant as a flat vector, or None if it is anything else."""
    if not isinstance(const, Const) or shape is None or not shape or None in (shape[0], shape[-1]):
        return None
    channels = shape[0] if channels_first else shape[-1]
    ones = (1,) * (len(shape) - 1)
    want = (channels,) + ones if channels_first else ones + (channels,)
    return const.array.reshape(-1).astype(np.float64) if tuple(const.array.shape) == want else None


def fold_batchnorm_into_conv(ops: list, outputs: list) -> None:
    """conv -> BatchNormalization becomes one convolution with scaled kernel and shifted bias.

    BatchNormalization is already a per-channel y = x * a + b; folding it saves two full passes
    over the activation. Results change by float32 rounding only (~1e-7 relative).
    """
    for op, source in private_conv_inputs(ops, outputs, scale_shift):
        if source.kwargs.get("relu") or source.kwargs.get("activation") or len(op.args) != 3:
            continue
        if "channels_first" not in source.kwargs or "residual" in source.kwargs:
            continue
        shape = source.outputs[0].shape
        channels_first = bool(source.kwargs.get("channels_first"))
        scale = _channel_vector(op.args[1], shape, channels_first)
        shift = _channel_vector(op.args[2], shape, channels_first)
        if scale is None or shift is None:
            continue
        index = CONV_BIAS_ARG[source.fn]
        kernel_index = index - 1  # the kernel (pointwise kernel for separable) comes just before the bias
        kernel = source.args[kernel_index].array.astype(np.float64)
        if source.fn is conv_grouped:
            kernel = kernel * scale.reshape(kernel.shape[0], 1, kernel.shape[2])
        elif source.fn is depthwise_conv:
            kernel = kernel * scale.reshape(kernel.shape[-2:])
        elif source.fn is conv_transpose:
            kernel = (kernel.reshape(kernel.shape[0], -1, scale.size) * scale).reshape(kernel.shape)
        else:
            kernel = kernel * scale
        bias = source.args[index]
        bias = shift if bias is None else bias.array.astype(np.float64) * scale + shift
        args = list(source.args)
        args[kernel_index] = Const(kernel.astype(np.float32))
        args[index] = Const(bias.astype(np.float32))
        source.args = tuple(args)
        _absorb(ops, source, op)


# Activations a convolution runs on its own fresh output, in place (activate_inplace); ReLU keeps
# its `relu` flag, which the max-pooling rewrite knows how to move.
FUSED_ACTIVATIONS = {
    activations.relu6: "relu6",
    activations.sigmoid: "sigmoid",
    activations.swish: "swish",
    activations.hard_silu: "hard_silu",
}


def fuse_activation_into_conv(ops: list, outputs: list) -> None:
    """An activation that alone reads a convolution's output runs inside it, in place.

    ReLU and ReLU6 are bit-identical; sigmoid is 1 / (1 + exp(-x)) instead of the two-branch
    stable form, swish x / 2 * (1 + tanh(x / 2)) with x / 2 computed by the convolution itself
    (kernel and bias halved, exact): the same float32 values up to rounding, ~1e-7 relative.
    """
    for fn in (activations.relu, *FUSED_ACTIVATIONS):
        for op, source in private_conv_inputs(ops, outputs, fn):
            if source.kwargs.get("relu") or source.kwargs.get("activation") or len(op.args) != 1 or op.kwargs:
                continue
            if fn is activations.relu:
                source.kwargs = {**source.kwargs, "relu": True}
            elif fn is activations.swish and "residual" not in source.kwargs and _halve_output(source):
                source.kwargs = {**source.kwargs, "activation": "swish_halved"}
            else:
                source.kwargs = {**source.kwargs, "activation": FUSED_ACTIVATIONS[fn]}
            _absorb(ops, source, op)


def _halve_output(op: Op) -> bool:
    """Make a convolution compute half its output, exactly: its last kernel and its bias times 0.5."""
    index = CONV_BIAS_ARG[op.fn]
    kernel, bias = op.args[index - 1], op.args[index]
    if not isinstance(kernel, Const) or not (bias is None or isinstance(bias, Const)):
        return False
    args = list(op.args)
    args[index - 1] = Const(kernel.array * np.float32(0.5))
    args[index] = None if bias is None else Const(bias.array * np.float32(0.5))
    op.args = tuple(args)
    return True


def fuse_residual_into_conv(ops: list, outputs: list) -> None:
    """Add(shortcut, conv(...)) becomes one convolution that adds the shortcut to its fresh output in
    place: no new array, and an activation after the Add can then run inside the convolution too.

    The convolution moves to where the Add was (its inputs are ready there as well), so the shortcut
    is computed before it. Same float32 sums as the Add (one addition, the same operands).
    """
    uses = Counter(id(t) for op in ops for t in tensors_in([op.args, op.kwargs]))
    uses.update(id(t) for t in tensors_in(list(outputs)))
    for op in list(ops):
        if op.fn is not merge_add or op.kwargs or len(op.args) != 1 or len(op.args[0]) != 2:
            continue
        producer = {id(t): candidate for candidate in ops for t in candidate.outputs}
        found = None
        for conv_out, shortcut in (op.args[0], op.args[0][::-1]):
            source = producer.get(id(conv_out))
            if (
                source is None
                or source.fn not in (conv, conv_gather)
                or uses.get(id(conv_out)) != 1
                or not isinstance(shortcut, Tensor)
                or shortcut.shape != conv_out.shape
                or shortcut.shape is None
                or None in shortcut.shape
                or shortcut.dtype != conv_out.dtype
                or any(source.kwargs.get(k) for k in ("relu", "activation", "residual"))
            ):
                continue
            if found is None or ops.index(source) > ops.index(found[0]):  # the later one: its shortcut is ready
                found = (source, shortcut)
        if found is None:
            continue
        source, shortcut = found
        source.kwargs = {**source.kwargs, "residual": shortcut}
        source.outputs = op.outputs
        source.layer = f"{source.layer} + {op.layer}"
        ops.remove(source)
        ops[ops.index(op)] = source


def tile_depthwise_rows(ops: list, outputs: list) -> None:
    """Depthwise convolutions with unit column stride and a known width get their row tiles
    (depthwise_tiles) built once at import instead of on every call."""
    for op in ops:
        if op.fn is not depthwise_conv or "tiles" in op.kwargs or not isinstance(op.args[1], Const):
            continue
        shape, kwargs = op.args[0].shape, op.kwargs
        width = None if shape is None else shape[-1] if kwargs["channels_first"] else shape[-2]
        if width is None or kwargs["strides"][-1] != 1:
            continue
        k, d = kwargs["kernel_size"][-1], kwargs["dilation"][-1]
        lo, hi = conv_padding(width, k, 1, d, kwargs["padding"])
        op.kwargs = {**kwargs, "tiles": Derived(depthwise_tiles, (op.args[1], width + lo + hi - (k - 1) * d))}


def zeros_tile(shape, channels):
    # Zeros of one output row or map, (*shape, channels), for ReLU as np.maximum(y, zeros) in finish_conv.
    zeros = np.zeros(tuple(shape) + (channels,), dtype=np.float32)
    zeros.flags.writeable = False
    return zeros


def bias_tile(bias, shape):
    # A convolution's (F,) bias repeated over one output row or map, (*shape, F): see finish_conv.
    tile = np.tile(bias, tuple(shape) + (1,))
    tile.flags.writeable = False
    return tile


# Output maps of up to this many values take their bias and ReLU zeros as a whole map (32 KB at
# most), larger ones as one row: an operand of y's own shape spares NumPy's broadcasting iterator,
# 0.3-0.4 us of the 1.2-1.6 us of a pass over a 13x13x16 map.
WHOLE_MAP_VALUES = 1 << 13


# Patch values (4 MB of float32) above which a batch's im2col runs a few images per product, and
# output values (1 MB) above which a batch's multi-pass activation does (batch_step).
PATCH_CHUNK = 1 << 20
ACTIVATION_CHUNK = 1 << 18

# The gather index lives in memory (8 bytes per entry, built at import): convolutions whose index
# would be larger keep the strided im2col, and so do those past GATHER_TOTAL_ENTRIES for the whole
# file (import memory stays bounded however many layers a file declares). Windows whose contiguous
# runs (last kernel axis * channels) reach GATHER_RUN values copy as fast through the strided view
# (measured: runs of 3 gather 1.4-2.3x faster, runs of 9-15 break even, runs of 24-48 copy 1.2-1.8x faster).
GATHER_MAX_ENTRIES = 1 << 20
GATHER_TOTAL_ENTRIES = 1 << 22
GATHER_RUN = 9


def gather_index(size, channels, kernel_size, strides, dilation):
    # Flat positions, in one (*size, channels) sample, of every window's (taps..., channels) values,
    # in the kernel's row order. Pure geometry, built once at import: window start + tap offset +
    # channel, broadcast over (*out, *kernel_size, channels), so it takes the index's memory, not a sample's.
    nd = len(size)
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, s, d in zip(size, kernel_size, strides, dilation)]
    index = np.arange(channels, dtype=np.intp)
    step = channels  # flat distance between neighbours along spatial axis i
    for i in reversed(range(nd)):
        axes = [1] * (2 * nd + 1)
        axes[i] = out[i]
        index = index + (np.arange(out[i], dtype=np.intp) * (strides[i] * step)).reshape(axes)
        axes[i], axes[nd + i] = 1, kernel_size[i]
        index = index + (np.arange(kernel_size[i], dtype=np.intp) * (dilation[i] * step)).reshape(axes)
        step *= size[i]
    index = index.reshape(math.prod(out), math.prod(kernel_size) * channels)
    index.flags.writeable = False
    return index


def gather_narrow_convs(ops: list, outputs: list) -> None:
    """Convolutions with few channels per window row become one gather of precomputed indices."""
    indexed: set = set()  # geometries given an index so far (the generated file builds each once)
    total = 0
    for i, op in enumerate(ops):
        if op.fn is not conv or len(op.args) != 3 or op.kwargs.get("channels_first") is not False:
            continue
        x, kwargs = op.args[0], dict(op.kwargs)
        size, ks, st, dil = x.shape, kwargs["kernel_size"], kwargs["strides"], kwargs["dilation"]
        if size is None or None in size or (all(k == 1 for k in ks) and all(s == 1 for s in st)):
            continue
        channels = size[-1]
        run = ks[-1] * channels if dil[-1] == 1 else channels
        pads = tuple(conv_padding(n, k, s, d, kwargs["padding"]) for n, k, s, d in zip(size[:-1], ks, st, dil))
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(size[:-1], pads))
        out_size = tuple((n - (k - 1) * d - 1) // s + 1 for n, k, s, d in zip(padded, ks, st, dil))
        entries = math.prod(out_size) * math.prod(ks) * channels  # exact: declared sizes may be huge
        geometry = (padded, channels, ks, st, dil)
        fits = entries <= GATHER_MAX_ENTRIES and (geometry in indexed or total + entries <= GATHER_TOTAL_ENTRIES)
        if run >= GATHER_RUN or not fits or math.prod(padded) * channels >= 2**31:
            continue
        total += 0 if geometry in indexed else entries
        indexed.add(geometry)
        pads = pads if any(lo or hi for lo, hi in pads) else ()
        ops[i] = Op(
            conv_gather,
            (x, op.args[1], op.args[2], Derived(gather_index, geometry), pads, out_size),
            {k: v for k, v in kwargs.items() if k in ("relu", "activation", "residual")},
            op.outputs,
            op.layer,
            op.keras,
        )


def plan_conv_windows(ops: list, outputs: list) -> None:
    """Convolutions whose channels-last input has a known size get their windows' geometry built
    once at import (window_geometry) instead of on every call. Proves equal, bit for bit: the view
    is the one sliding_windows makes (its own code computes the geometry), so the same values are
    copied into the same im2col matrix."""
    for op in ops:
        if op.fn is not conv or op.kwargs.get("channels_first") is not False or "window" in op.kwargs:
            continue
        size, kwargs = op.args[0].shape, op.kwargs
        ks, st = kwargs["kernel_size"], kwargs["strides"]
        if size is None or None in size or (all(k == 1 for k in ks) and all(s == 1 for s in st)):
            continue
        geometry = (size[:-1], size[-1], ks, st, kwargs["dilation"], kwargs["padding"])
        op.kwargs = {**kwargs, "window": Derived(window_geometry, geometry)}
