"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector."""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_int, as_int_tuple, converter, kernel


@kernel(row_wise=True)
def flatten(x):
    # NumPy cannot infer -1 from an empty batch: then the sample size is spelled out.
    return x.reshape(x.shape[0], -1) if len(x) else x.reshape(0, math.prod(x.shape[1:]))


@kernel(row_wise=True)
def flatten_channels_first(x):
    # Keras moves channels last before flattening, so the next Dense sees channels-last order.
    return flatten(np.moveaxis(x, 1, -1))


@kernel(row_wise=True)
def reshape(x, target):
    return x.reshape((x.shape[0],) + target)


def reshape_inferred(x, target):
    # A target with -1 over an input of unknown size; NumPy cannot infer -1 from an empty batch.
    if not len(x):
        known = math.prod(d for d in target if d != -1)
        target = tuple(math.prod(x.shape[1:]) // known if d == -1 else d for d in target)
    return x.reshape((x.shape[0],) + target)


def permute(x, axes):
    return np.transpose(x, axes)


def repeat_vector(x, n):
    return np.repeat(x[:, None, :], n, axis=1)


def _size(shape: tuple) -> int | None:
    if any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


@converter("Flatten", mask="drop")
def flatten_layer(layer: Layer) -> Tensor:
    x = layer.input
    size = _size(x.shape)
    if layer.get("data_format") == "channels_first" and x.rank > 2:
        return layer.call(flatten_channels_first, x, shape=(size,))
    return layer.call(flatten, x, shape=(size,))


@converter("Reshape", mask="drop")
def reshape_layer(layer: Layer) -> Tensor:
    x = layer.input
    target = as_int_tuple(layer.get("target_shape"), "Reshape target_shape")
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise BadModelFile(f"{layer.describe()} has an invalid target_shape {target}")
    size, known = _size(x.shape), _size(tuple(d for d in target if d != -1))
    shape = target
    if -1 in target:
        shape = tuple((size // known if size is not None and known else None) if d == -1 else d for d in target)
    elif size is not None and known != size:
        raise BadModelFile(f"{layer.describe()} cannot reshape {x.shape} into {target}")
    if None in shape:  # -1 stays for NumPy to infer
        return layer.call(reshape_inferred, x, shape=shape, target=target)
    return layer.call(reshape, x, shape=shape, target=shape)


@converter("Permute", mask="drop")
def permute_layer(layer: Layer) -> Tensor:
    x = layer.input
    dims = as_int_tuple(layer.get("dims"), "Permute dims")
    if sorted(dims) != list(range(1, x.rank)):
        raise BadModelFile(f"{layer.describe()} has dims {dims}, not a permutation of 1..{x.rank - 1}")
    return layer.call(permute, x, shape=tuple(x.shape[d - 1] for d in dims), axes=(0,) + dims)


@converter("RepeatVector", mask="drop")
def repeat_vector_layer(layer: Layer) -> Tensor:
    x = layer.input
    n = as_int(layer.get("n"), "RepeatVector n")
    if x.rank != 2:
        raise layer.unsupported(f"RepeatVector needs a 2-D input, got rank {x.rank}")
    return layer.call(repeat_vector, x, shape=(n,) + x.shape, n=n)


# ----------------------------------------------------------------------------- padding, cropping, upsampling
# Spatial layers work on channels-last data; channels-first layers move the channel axis around the call.


@kernel(row_wise=True)
def zero_pad(x, pads, channels_first):
    # pads: one (before, after) pair per spatial axis.
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    shape = (x.shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], pads)) + (x.shape[-1],)
    y = np.zeros(shape, dtype=x.dtype)
    y[(slice(None),) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[1:-1], pads))] = x
    return np.moveaxis(y, -1, 1) if channels_first else y


@kernel(row_wise=True)
def crop(x, crops, channels_first):
    # crops: one (before, after) pair per spatial axis; a view, no copy.
    first = 2 if channels_first else 1
    index = [slice(None)] * x.ndim
    for i, (lo, hi) in enumerate(crops):
        index[first + i] = slice(lo, x.shape[first + i] - hi)
    return x[tuple(index)]


@kernel(row_wise=True)
def upsample_nearest(x, factors, channels_first):
    # Each cell repeated factors[i] times along spatial axis i: one broadcast copy.
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    nd = len(factors)
    spread = (x.shape[0],) + tuple(v for n, f in zip(x.shape[1:-1], factors) for v in (n, f)) + (x.shape[-1],)
    index = (slice(None),) + (slice(None), None) * nd + (slice(None),)
    y = np.broadcast_to(x[index], spread).reshape(
        (x.shape[0],) + tuple(n * f for n, f in zip(x.shape[1:-1], factors)) + (x.shape[-1],)
    )
    return np.moveaxis(y, -1, 1) if channels_first else y


def bilinear_axis(x, axis, factor):
    # tf.image.resize(method="bilinear") along one axis: half-pixel centers, edges clamped.
    n = x.shape[axis]
    source = (np.arange(n * factor, dtype=np.float32) + np.float32(0.5)) / np.float32(factor) - np.float32(0.5)
    floor = np.floor(source)
    weight = (source - floor).astype(np.float32)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(source), n - 1).astype(np.intp)
    shape = [1] * x.ndim
    shape[axis] = -1
    a = np.take(x, lower, axis=axis)
    b = np.take(x, upper, axis=axis)
    return a + (b - a) * weight.reshape(shape)


@kernel(row_wise=True)
def upsample_bilinear(x, factors, channels_first):
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    y = bilinear_axis(bilinear_axis(x, 2, factors[1]), 1, factors[0])
    return np.moveaxis(y, -1, 1) if channels_first else y


_SPATIAL_RANK = {
    "ZeroPadding1D": 1,
    "ZeroPadding2D": 2,
    "ZeroPadding3D": 3,
    "Cropping1D": 1,
    "Cropping2D": 2,
    "Cropping3D": 3,
    "UpSampling1D": 1,
    "UpSampling2D": 2,
    "UpSampling3D": 3,
}


def _spatial_layer(layer: Layer) -> tuple[int, bool, tuple]:
    """(spatial rank, channels_first, spatial shape) of a padding/cropping/upsampling layer's input."""
    nd = _SPATIAL_RANK[layer.class_name]
    x = layer.input
    if x.shape is None or len(x.shape) != nd + 1:
        raise layer.unsupported(f"expects a rank-{nd + 2} input, got shape {x.shape}")
    data_format = layer.get("data_format") or "channels_last"
    if nd == 1:
        data_format = "channels_last"  # the 1-D layers have no data_format
    if data_format not in ("channels_last", "channels_first"):
        raise layer.unsupported(f"data_format {str(data_format)[:40]!r}")
    channels_first = data_format == "channels_first"
    layer.expect_weights()
    return nd, channels_first, (x.shape[1:] if channels_first else x.shape[:-1])


def _pairs(layer: Layer, key: str, nd: int) -> tuple:
    """Keras's int / (a, b) / ((a, b), ...) padding or cropping spec as nd (before, after) pairs."""
    value = layer.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        pairs = ((value, value),) * nd
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in value):
        pairs = tuple(as_int_tuple(v, f"{layer.class_name} {key}") for v in value)
    else:
        flat = as_int_tuple(value, f"{layer.class_name} {key}")
        # 1-D layers: (before, after); 2-D/3-D: one symmetric amount per axis.
        pairs = (flat,) if nd == 1 and len(flat) == 2 else tuple((v, v) for v in flat)
    if len(pairs) != nd or any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise BadModelFile(f"{layer.describe()} has an invalid {key} {str(value)[:60]}")
    return pairs


def _with_channels(layer: Layer, spatial: list, channels_first: bool) -> tuple:
    channels = layer.input.shape[0] if channels_first else layer.input.shape[-1]
    return (channels, *spatial) if channels_first else (*spatial, channels)


@converter("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", mask="drop")
def zero_padding_layer(layer: Layer) -> Tensor:
    nd, channels_first, spatial = _spatial_layer(layer)
    pads = _pairs(layer, "padding", nd)
    out = [None if n is None else n + lo + hi for n, (lo, hi) in zip(spatial, pads)]
    shape = _with_channels(layer, out, channels_first)
    return layer.call(zero_pad, layer.input, shape=shape, pads=pads, channels_first=channels_first)


@converter("Cropping1D", "Cropping2D", "Cropping3D", mask="drop")
def cropping_layer(layer: Layer) -> Tensor:
    nd, channels_first, spatial = _spatial_layer(layer)
    crops = _pairs(layer, "cropping", nd)
    out = []
    for n, (lo, hi) in zip(spatial, crops):
        if n is not None and lo + hi >= n:
            raise BadModelFile(f"{layer.describe()} crops {lo + hi} of {n} cells")
        out.append(None if n is None else n - lo - hi)
    shape = _with_channels(layer, out, channels_first)
    return layer.call(crop, layer.input, shape=shape, crops=crops, channels_first=channels_first)


@converter("UpSampling1D", "UpSampling2D", "UpSampling3D", mask="drop")
def upsampling_layer(layer: Layer) -> Tensor:
    nd, channels_first, spatial = _spatial_layer(layer)
    factors = as_int_tuple(layer.get("size", 2), f"{layer.class_name} size")
    factors = factors * nd if len(factors) == 1 else factors
    if len(factors) != nd or min(factors) < 1:
        raise BadModelFile(f"{layer.describe()} has an invalid size {factors}")
    interpolation = layer.get("interpolation", "nearest") if nd == 2 else "nearest"
    if interpolation not in ("nearest", "bilinear"):
        raise layer.unsupported(f"interpolation {str(interpolation)[:40]!r} (nearest and bilinear are supported)")
    out = [None if n is None else n * f for n, f in zip(spatial, factors)]
    shape = _with_channels(layer, out, channels_first)
    fn = upsample_bilinear if interpolation == "bilinear" else upsample_nearest
    return layer.call(fn, layer.input, shape=shape, factors=factors, channels_first=channels_first)
