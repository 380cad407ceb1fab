"""Normalization layers: BatchNormalization (folded), LayerNormalization, RMSNormalization,
UnitNormalization, GroupNormalization, Normalization (preprocessing), Rescaling."""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_float, as_int, converter, kernel


@kernel(fresh=True, row_wise=True)
def scale_shift(x, scale, shift):
    return x * scale + shift


@kernel(fresh=True, row_wise=True)
def scale_only(x, scale):
    return x * scale


@converter("BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2", "SyncBatchNormalization", mask="pass")
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


@converter("Rescaling", mask="pass", mask_keras2="drop")
def rescaling_layer(layer: Layer) -> Tensor:
    x = layer.input
    scale, offset = layer.get("scale", 1.0), layer.get("offset", 0.0)
    try:
        with np.errstate(over="ignore"):  # Keras computes with the float32 value: 1e40 is inf there too
            scale_arr = np.asarray(scale, dtype=np.float32)
            offset_arr = np.asarray(offset, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadModelFile(f"{layer.describe()} has a non-numeric scale or offset") from None
    if scale_arr.ndim == 0 and offset_arr.ndim == 0:
        as_float(scale, "scale"), as_float(offset, "offset")  # plain numbers, not lists of one
        s, o = float(scale_arr), float(offset_arr)
        if o == 0.0:
            return layer.call(scale_only, x, shape=x.shape, scale=s)
        return layer.call(scale_shift, x, shape=x.shape, scale=s, shift=o)
    return layer.call(scale_shift, x, scale_arr, offset_arr, shape=x.shape)


# ----------------------------------------------------------------------------- per-sample normalizations
# Keras 2 and 3 both compute these in float32 as x * inv + (beta - mean * inv) with
# inv = gamma / sqrt(var + eps); the variance is the mean squared deviation.
UNIT_NORM_EPS_KERAS2 = 1e-12  # tf.linalg.l2_normalize clamps the sum of squares at 1e-12
UNIT_NORM_EPS_KERAS3 = 1e-24  # ops.normalize(epsilon=1e-12) clamps 1/norm at 1e12
NORMALIZATION_EPS = 1e-7  # Normalization divides by max(sqrt(variance), backend.epsilon())


def layer_norm(x, gamma, beta, axes, eps):
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv
    if beta is not None:
        shift = shift + beta
    return x * inv + shift


def layer_norm_rms_scaling(x, gamma, axes, eps):
    # Keras 3's deprecated rms_scaling=True: divides by the standard deviation, never centers.
    var = np.var(x, axis=axes, keepdims=True)
    return x / np.sqrt(var + eps) * gamma


def rms_norm(x, scale, axes, eps):
    return x / np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True) + eps) * scale


def unit_norm(x, axes, eps):
    return x / np.sqrt(np.maximum(np.sum(np.square(x), axis=axes, keepdims=True), eps))


def group_norm(x, gamma, beta, groups, axis, eps):
    # Split the channel axis into (groups, channels per group); normalize each group over
    # every axis but the batch and the group axis.
    g = x.reshape(x.shape[:axis] + (groups, x.shape[axis] // groups) + x.shape[axis + 1 :])
    axes = tuple(i for i in range(1, g.ndim) if i != axis)
    mean = np.mean(g, axis=axes, keepdims=True)
    var = np.mean(np.square(g - mean), axis=axes, keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def standardize(x, mean, std):
    return (x - mean) / std


def destandardize(x, mean, std):
    return mean + x * std


def _axes(layer: Layer, x: Tensor, value: object) -> list:
    """Sorted absolute axes (batch = 0) from an int or list config value; the batch axis refused."""
    axes = sorted({layer.axis(a, x.rank) for a in (value if isinstance(value, (list, tuple)) else [value])})
    if not axes:
        raise BadModelFile(f"{layer.describe()} has an empty axis list")
    if 0 in axes or any(x.shape[a - 1] is None for a in axes):
        raise layer.unsupported(f"normalization over axis {value!r} of input shape {x.shape}")
    return axes


def _broadcastable(array: np.ndarray, x: Tensor, axes: list) -> np.ndarray:
    """A parameter over `axes` reshaped to broadcast against a batch of x."""
    shape = [1] * (x.rank - 1)
    for a in axes:
        shape[a - 1] = x.shape[a - 1]
    return np.asarray(array, dtype=np.float32).reshape(shape)


@converter("LayerNormalization", mask="pass")
def layer_normalization_layer(layer: Layer) -> Tensor:
    x = layer.input
    axes = _axes(layer, x, layer.get("axis", -1))
    param = tuple(x.shape[a - 1] for a in axes)
    eps = as_float(layer.get("epsilon", 1e-3), "epsilon")
    rms = bool(layer.get("rms_scaling", False))
    scale = bool(layer.get("scale", True)) or rms
    center = bool(layer.get("center", True)) and not rms
    weights = layer.expect_weights(*([param] * (scale + center)))
    gamma = _broadcastable(weights.pop(0), x, axes) if scale else None
    beta = _broadcastable(weights.pop(0), x, axes) if center else None
    if rms:
        return layer.call(layer_norm_rms_scaling, x, gamma, shape=x.shape, axes=tuple(axes), eps=eps)
    return layer.call(layer_norm, x, gamma, beta, shape=x.shape, axes=tuple(axes), eps=eps)


@converter("RMSNormalization", mask="drop")
def rms_normalization_layer(layer: Layer) -> Tensor:
    x = layer.input
    axes = _axes(layer, x, layer.get("axis", -1))
    if axes != list(range(x.rank - len(axes), x.rank)):
        raise layer.unsupported("RMSNormalization over axes that are not the last ones")
    (scale,) = layer.expect_weights(tuple(x.shape[a - 1] for a in axes))
    eps = as_float(layer.get("epsilon", 1e-6), "epsilon")
    return layer.call(rms_norm, x, _broadcastable(scale, x, axes), shape=x.shape, axes=tuple(axes), eps=eps)


@converter("UnitNormalization", mask="pass")
def unit_normalization_layer(layer: Layer) -> Tensor:
    x = layer.input
    layer.expect_weights()
    axes = _axes(layer, x, layer.get("axis", -1))
    eps = UNIT_NORM_EPS_KERAS3 if layer.keras_major >= 3 else UNIT_NORM_EPS_KERAS2
    return layer.call(unit_norm, x, shape=x.shape, axes=tuple(axes), eps=eps)


# tf-keras's GroupNormalization weighs its statistics by the mask: refused there (see below).
@converter("GroupNormalization", mask="pass", mask_keras2="own")
def group_normalization_layer(layer: Layer) -> Tensor:
    x = layer.input
    if layer.keras_major < 3 and layer.call_mask(x) is not None:
        raise layer.unsupported("a mask in a tf-keras file (its statistics are weighted by the mask)")
    (axis,) = _axes(layer, x, layer.get("axis", -1))
    channels = x.shape[axis - 1]
    groups = as_int(layer.get("groups", 32), "GroupNormalization groups")
    groups = channels if groups == -1 else groups
    if groups <= 0 or channels % groups:
        raise BadModelFile(f"{layer.describe()}: {groups} groups do not divide {channels} channels")
    if any(d is None for d in x.shape):
        raise layer.unsupported("GroupNormalization on an input with unknown dimensions")
    scale, center = bool(layer.get("scale", True)), bool(layer.get("center", True))
    weights = layer.expect_weights(*([(channels,)] * (scale + center)))
    gamma = _broadcastable(weights.pop(0), x, [axis]) if scale else None
    beta = _broadcastable(weights.pop(0), x, [axis]) if center else None
    eps = as_float(layer.get("epsilon", 1e-3), "epsilon")
    return layer.call(group_norm, x, gamma, beta, shape=x.shape, groups=groups, axis=axis, eps=eps)


def _config_statistic(layer: Layer, value: object, keep: tuple, what: str) -> np.ndarray:
    """A mean/variance given in the config: a scalar, or values for the kept axes (right-aligned)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadModelFile(f"{layer.describe()} has a non-numeric {what}") from None
    if array.ndim == 0:
        return np.broadcast_to(array, keep)
    if array.size == int(np.prod(keep, dtype=np.int64)):
        return array.reshape(keep)
    try:
        return np.broadcast_to(array, keep)
    except ValueError:
        raise BadModelFile(f"{layer.describe()}: {what} of shape {array.shape} does not fit axes {keep}") from None


@converter("Normalization", mask="pass", mask_keras2="drop")
def normalization_layer(layer: Layer) -> Tensor:
    x = layer.input
    value = layer.get("axis", -1)
    if value is None or value == []:
        axes = []
    else:
        axes = _axes(layer, x, value)
    keep = tuple(x.shape[a - 1] for a in axes)
    if layer.get("mean") is not None:
        layer.expect_weights()
        mean = _config_statistic(layer, layer.get("mean"), keep, "mean")
        var = _config_statistic(layer, layer.get("variance"), keep, "variance")
    else:
        mean, var, _count = layer.expect_weights(keep, keep, None)
    std = np.maximum(np.sqrt(np.asarray(var, dtype=np.float64)), NORMALIZATION_EPS)
    mean_b, std_b = _broadcastable(mean, x, axes), _broadcastable(std, x, axes)
    fn = destandardize if layer.get("invert", False) else standardize
    return layer.call(fn, x, mean_b, std_b, shape=x.shape)
