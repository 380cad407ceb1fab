"""Normalization layers: BatchNormalization (folded to one multiply-add), Rescaling."""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_float, converter


def scale_shift(x, scale, shift):
    return x * scale + shift


def scale_only(x, scale):
    return x * scale


@converter("BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2", "SyncBatchNormalization")
def batch_normalization_layer(layer: Layer) -> Tensor:
    x = layer.input
    rank = x.rank
    axis = layer.get("axis", -1)
    axes = sorted({layer.axis(a, rank) for a in (axis if isinstance(axis, list) else [axis])})
    if 0 in axes or any(x.shape[a - 1] is None for a in axes):
        raise layer.unsupported(f"normalization over axis {axis!r} of input shape {x.shape}")
    if layer.get("renorm"):
        raise layer.unsupported("renorm=True")
    param_shape = tuple(x.shape[a - 1] for a in axes)
    center, scale = layer.get("center", True), layer.get("scale", True)
    shapes = ([param_shape] if scale else []) + ([param_shape] if center else []) + [param_shape, param_shape]
    weights = layer.expect_weights(*shapes)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    mean, var = weights
    eps = as_float(layer.get("epsilon", 1e-3), "epsilon")
    # Folded once at conversion time: y = x * a + b with a = gamma / sqrt(var + eps), b = beta - mean * a.
    a = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    if gamma is not None:
        a = a * gamma
    b = -mean * a
    if beta is not None:
        b = b + beta
    bshape = [1] * (rank - 1)
    for i, ax in enumerate(axes):
        bshape[ax - 1] = param_shape[i]
    a = a.astype(np.float32).reshape(bshape)
    b = b.astype(np.float32).reshape(bshape)
    return layer.call(scale_shift, x, a, b, shape=x.shape)


@converter("Rescaling")
def rescaling_layer(layer: Layer) -> Tensor:
    x = layer.input
    scale, offset = layer.get("scale", 1.0), layer.get("offset", 0.0)
    try:
        scale_arr = np.asarray(scale, dtype=np.float32)
        offset_arr = np.asarray(offset, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadModelFile(f"{layer.describe()} has a non-numeric scale or offset") from None
    if scale_arr.ndim == 0 and offset_arr.ndim == 0:
        s, o = as_float(scale, "scale"), as_float(offset, "offset")
        if o == 0.0:
            return layer.call(scale_only, x, shape=x.shape, scale=s)
        return layer.call(scale_shift, x, shape=x.shape, scale=s, shift=o)
    return layer.call(scale_shift, x, scale_arr, offset_arr, shape=x.shape)
