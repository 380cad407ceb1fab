"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Keras's elementwise merges broadcast per sample: inputs of lower rank are first expanded at
axis 1 (right after the batch axis) until all ranks agree, then NumPy broadcasting applies.

Masks (each input's mask covers its positions, its shape without the feature axis): tf-keras keeps
the positions that every masked input keeps (AND; an unmasked input does not count); Keras 3 keeps
the positions that any input keeps (OR) when every input is masked, else none, and its Multiply,
Maximum and Minimum also let a masked position take no part in the result. Concatenate along the
features combines the masks the same way (an unmasked input counting as all True); along another
axis it concatenates them. Dot drops them.
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


def masks_and(masks):
    # tf-keras: a position stays unmasked where every masked input keeps it.
    keep = masks[0]
    for m in masks[1:]:
        keep = keep & m
    return keep


def masks_or(masks):
    # Keras 3: a position stays unmasked where any input keeps it.
    keep = masks[0]
    for m in masks[1:]:
        keep = keep | m
    return keep


def concatenate_masks(xs, masks, axis):
    # Concatenate along an axis other than the features: the masks side by side, all True for an
    # unmasked input (a mask has the shape of its input without the feature axis).
    return np.concatenate([np.ones(x.shape[:-1], dtype=bool) if m is None else m for x, m in zip(xs, masks)], axis)


def merge_multiply_masked(xs, masks):
    # Keras 3's Multiply: a masked position of an input counts as 1; when every input is masked,
    # the positions that all of them mask are 0.
    y = None
    for x, m in zip(xs, masks):
        if m is not None:
            x = np.where(m[..., None], x, 1.0)
        y = x if y is None else y * x
    if all(m is not None for m in masks):
        y = np.where(masks_or(masks)[..., None], y, 0.0)
    return y


def merge_extremum_masked(xs, masks, largest):
    # Keras 3's Maximum and Minimum: where one side is masked it takes the other side's value
    # (while the running result is masked, i.e. its inputs so far all masked the position).
    y, keep = xs[0], masks[0]
    for x, m in zip(xs[1:], masks[1:]):
        if m is not None:
            x = np.where(m[..., None], x, y)
        if keep is not None:
            y = np.where(keep[..., None], y, x)
        keep = keep | m if keep is not None and m is not None else None
        y = np.maximum(y, x) if largest else np.minimum(y, x)
    return y


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


def _merge_inputs(layer: Layer, exactly: int | None = None) -> tuple[list, tuple, list]:
    """The inputs expanded to one rank, the output's shape, and the inputs' masks."""
    xs = layer.inputs
    if len(xs) < 1 or (exactly is not None and len(xs) != exactly):
        want = f"exactly {exactly}" if exactly else "at least 1"
        raise BadModelFile(f"{layer.describe()} needs {want} input tensors, got {len(xs)}")
    layer.expect_weights()
    shape = broadcast_shapes(layer, [x.shape for x in xs])
    rank = len(shape) + 1
    masks = _input_masks(layer, xs)
    if any(m is not None for m in masks) and any(x.rank != rank for x in xs):
        raise layer.unsupported("masked inputs of different ranks (Keras reshapes them and loses the masks)")
    xs = [
        x if x.rank == rank else layer.call(expand_rank, x, rank=rank, shape=(1,) * (rank - x.rank) + x.shape)
        for x in xs
    ]
    return xs, shape, masks


def _input_masks(layer: Layer, xs: list) -> list:
    """Each input's Keras mask (None where unmasked), checked to cover its positions."""
    masks = [x.mask for x in xs]
    shapes = {m.shape for m in masks if m is not None}
    for x, m in zip(xs, masks):
        if m is not None and (m.shape != x.shape[:-1] or m.dtype != "bool"):
            raise layer.unsupported(f"a mask of shape {m.shape} ({m.dtype}) for an input of shape {x.shape}")
    if len(shapes) > 1:
        raise layer.unsupported(f"inputs whose masks have different shapes {sorted(shapes, key=str)}")
    return masks


def _combined_mask(layer: Layer, masks: list) -> Tensor | None:
    """The output's mask, by the writer's Keras: AND of the masked inputs' (tf-keras), OR of all
    inputs' when every input is masked, else none (Keras 3)."""
    present = [m for m in masks if m is not None]
    if not present or (layer.keras_major >= 3 and len(present) < len(masks)):
        return None
    if len(present) == 1:
        return present[0]
    fn = masks_or if layer.keras_major >= 3 else masks_and
    return layer.call(fn, present, shape=present[0].shape, dtype="bool")


MERGES = {
    "Add": merge_add,
    "Multiply": merge_multiply,
    "Average": merge_average,
    "Maximum": merge_maximum,
    "Minimum": merge_minimum,
}


@converter(*MERGES, mask="own")
def merge_layer(layer: Layer) -> Tensor:
    xs, shape, masks = _merge_inputs(layer)
    masked = any(m is not None for m in masks)
    if masked and layer.keras_major >= 3 and layer.class_name == "Multiply":
        y = layer.call(merge_multiply_masked, xs, masks, shape=shape)
    elif masked and layer.keras_major >= 3 and layer.class_name in ("Maximum", "Minimum"):
        largest = layer.class_name == "Maximum"
        y = layer.call(merge_extremum_masked, xs, masks, shape=shape, largest=largest)
    elif len(xs) == 1:  # Keras's result and mask are the input's
        return xs[0]
    else:
        y = layer.call(MERGES[layer.class_name], xs, shape=shape)
    y.mask = _combined_mask(layer, masks)
    return y


@converter("Subtract", mask="own")
def subtract_layer(layer: Layer) -> Tensor:
    (a, b), shape, masks = _merge_inputs(layer, exactly=2)
    y = layer.call(merge_subtract, a, b, shape=shape)
    y.mask = _combined_mask(layer, masks)
    return y


@converter("Concatenate", mask="own")
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
    masks = _input_masks(layer, xs)
    if len(xs) == 1:  # Keras's result and mask are the input's
        return xs[0]
    y = layer.call(concatenate, xs, shape=tuple(shape), axis=axis)
    if all(m is None for m in masks):
        return y
    if axis == rank - 1:  # along the features: one mask per position, combined as for Add
        y.mask = _combined_mask(layer, masks)
    else:
        y.mask = layer.call(concatenate_masks, xs, masks, shape=tuple(shape[:-1]), dtype="bool", axis=axis)
    return y


@converter("Dot", mask="drop")
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
