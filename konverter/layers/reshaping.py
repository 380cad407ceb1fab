"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector."""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_int, as_int_tuple, converter


def flatten(x):
    return x.reshape(x.shape[0], -1)


def flatten_channels_first(x):
    # Keras moves channels last before flattening, so the next Dense sees channels-last order.
    return np.moveaxis(x, 1, -1).reshape(x.shape[0], -1)


def reshape(x, target):
    return x.reshape((x.shape[0],) + target)


def permute(x, axes):
    return np.transpose(x, axes)


def repeat_vector(x, n):
    return np.repeat(x[:, None, :], n, axis=1)


def _size(shape: tuple) -> int | None:
    if any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


@converter("Flatten")
def flatten_layer(layer: Layer) -> Tensor:
    x = layer.input
    size = _size(x.shape)
    if layer.get("data_format") == "channels_first" and x.rank > 2:
        return layer.call(flatten_channels_first, x, shape=(size,))
    return layer.call(flatten, x, shape=(size,))


@converter("Reshape")
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
    return layer.call(reshape, x, shape=shape, target=target)


@converter("Permute")
def permute_layer(layer: Layer) -> Tensor:
    x = layer.input
    dims = as_int_tuple(layer.get("dims"), "Permute dims")
    if sorted(dims) != list(range(1, x.rank)):
        raise BadModelFile(f"{layer.describe()} has dims {dims}, not a permutation of 1..{x.rank - 1}")
    return layer.call(permute, x, shape=tuple(x.shape[d - 1] for d in dims), axes=(0,) + dims)


@converter("RepeatVector")
def repeat_vector_layer(layer: Layer) -> Tensor:
    x = layer.input
    n = as_int(layer.get("n"), "RepeatVector n")
    if x.rank != 2:
        raise layer.unsupported(f"RepeatVector needs a 2-D input, got rank {x.rank}")
    return layer.call(repeat_vector, x, shape=(n,) + x.shape, n=n)
