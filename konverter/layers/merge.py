"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Keras's elementwise merges broadcast per sample: inputs of lower rank are first expanded at
axis 1 (right after the batch axis) until all ranks agree, then NumPy broadcasting applies.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, converter

# Dot(normalize=True) divides by sqrt(max(sum of squares, EPS)): tf.linalg.l2_normalize uses
# 1e-12; Keras 3's ops.normalize clamps 1/norm at 1/1e-7, i.e. the sum of squares at 1e-14.
L2_EPS_KERAS2 = 1e-12
L2_EPS_KERAS3 = 1e-14


def expand_rank(x, rank):
    # Insert axes after the batch axis until x has `rank` axes (Keras's merge broadcasting).
    return x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:])


def merge_add(xs):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def merge_subtract(a, b):
    return a - b


def merge_multiply(xs):
    y = xs[0]
    for x in xs[1:]:
        y = y * x
    return y


def merge_average(xs):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y / len(xs)


def merge_maximum(xs):
    y = xs[0]
    for x in xs[1:]:
        y = np.maximum(y, x)
    return y


def merge_minimum(xs):
    y = xs[0]
    for x in xs[1:]:
        y = np.minimum(y, x)
    return y


def concatenate(xs, axis):
    return np.concatenate(xs, axis=axis)


def l2_normalize(x, axis, eps):
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), eps))


def batch_dot(x, y, x_axis, y_axis):
    # Keras's batch_dot: contract x's x_axis with y's y_axis per sample; the result has x's
    # other axes, then y's other axes (a single (batch, 1) column when both are vectors).
    x = np.moveaxis(x, x_axis, -1)
    y = np.moveaxis(y, y_axis, 1)
    n, k = x.shape[0], x.shape[-1]
    out = np.matmul(x.reshape(n, math.prod(x.shape[1:-1]), k), y.reshape(n, k, math.prod(y.shape[2:])))
    shape = x.shape[1:-1] + y.shape[2:]
    return out.reshape((n,) + (shape if shape else (1,)))


def broadcast_shapes(layer: Layer, shapes: list) -> tuple:
    """Keras's merge output shape: right-aligned broadcasting, 1 stretches, None stays unknown."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise BadModelFile(f"{layer.describe()} merges incompatible shapes {shapes}")
        if any(d is None for d in dims):
            out.append(known.pop() if known else None)
        else:
            out.append(known.pop() if known else 1)
    return tuple(out)


def _merge_inputs(layer: Layer, exactly: int | None = None) -> tuple[list, tuple]:
    xs = layer.inputs
    if len(xs) < 1 or (exactly is not None and len(xs) != exactly):
        want = f"exactly {exactly}" if exactly else "at least 1"
        raise BadModelFile(f"{layer.describe()} needs {want} input tensors, got {len(xs)}")
    layer.expect_weights()
    shape = broadcast_shapes(layer, [x.shape for x in xs])
    rank = len(shape) + 1
    xs = [
        x if x.rank == rank else layer.call(expand_rank, x, rank=rank, shape=(1,) * (rank - x.rank) + x.shape)
        for x in xs
    ]
    return xs, shape


MERGES = {
    "Add": merge_add,
    "Multiply": merge_multiply,
    "Average": merge_average,
    "Maximum": merge_maximum,
    "Minimum": merge_minimum,
}


@converter(*MERGES)
def merge_layer(layer: Layer) -> Tensor:
    xs, shape = _merge_inputs(layer)
    if len(xs) == 1:
        return xs[0]
    return layer.call(MERGES[layer.class_name], xs, shape=shape)


@converter("Subtract")
def subtract_layer(layer: Layer) -> Tensor:
    (a, b), shape = _merge_inputs(layer, exactly=2)
    return layer.call(merge_subtract, a, b, shape=shape)


@converter("Concatenate")
def concatenate_layer(layer: Layer) -> Tensor:
    xs = layer.inputs
    layer.expect_weights()
    if not xs:
        raise BadModelFile(f"{layer.describe()} has no input tensors")
    rank = xs[0].rank
    if any(x.rank != rank for x in xs):
        raise BadModelFile(f"{layer.describe()} concatenates tensors of different ranks")
    axis = layer.axis(layer.get("axis", -1), rank)
    if axis == 0:
        raise layer.unsupported("concatenation along the batch axis")
    shape = list(xs[0].shape)
    for x in xs[1:]:
        for i, (a, b) in enumerate(zip(shape, x.shape)):
            if i != axis - 1 and a is not None and b is not None and a != b:
                raise BadModelFile(f"{layer.describe()} concatenates mismatched shapes")
            if i != axis - 1 and a is None:
                shape[i] = b
    sizes = [x.shape[axis - 1] for x in xs]
    shape[axis - 1] = None if None in sizes else sum(sizes)
    if len(xs) == 1:
        return xs[0]
    return layer.call(concatenate, xs, shape=tuple(shape), axis=axis)


@converter("Dot")
def dot_layer(layer: Layer) -> Tensor:
    xs = layer.inputs
    if len(xs) != 2:
        raise BadModelFile(f"{layer.describe()} needs exactly 2 input tensors, got {len(xs)}")
    layer.expect_weights()
    x, y = xs
    axes = layer.get("axes", -1)
    if isinstance(axes, int) and not isinstance(axes, bool):
        axes = [axes, axes]
    if not isinstance(axes, list) or len(axes) != 2:
        raise BadModelFile(f"{layer.describe()} has invalid axes {str(axes)[:40]}")
    ax, ay = layer.axis(axes[0], x.rank), layer.axis(axes[1], y.rank)
    if ax == 0 or ay == 0:
        raise BadModelFile(f"{layer.describe()} contracts the batch axis")
    dx, dy = x.shape[ax - 1], y.shape[ay - 1]
    if dx is not None and dy is not None and dx != dy:
        raise BadModelFile(f"{layer.describe()} contracts axes of sizes {dx} and {dy}")
    if layer.get("normalize", False):
        eps = L2_EPS_KERAS3 if layer.keras_major >= 3 else L2_EPS_KERAS2
        x = layer.call(l2_normalize, x, shape=x.shape, axis=ax, eps=eps)
        y = layer.call(l2_normalize, y, shape=y.shape, axis=ay, eps=eps)
    shape = tuple(d for i, d in enumerate(x.shape) if i != ax - 1) + tuple(
        d for i, d in enumerate(y.shape) if i != ay - 1
    )
    return layer.call(batch_dot, x, y, shape=shape or (1,), x_axis=ax, y_axis=ay)
