"""Adaptive pooling (Keras 3.15): AdaptiveAveragePooling1D/2D/3D and AdaptiveMaxPooling1D/2D/3D.

Keras splits each spatial axis of size n into `out` cells; cell i pools the input cells
floor(i*n/out) .. ceil((i+1)*n/out) - 1 (neighbouring cells may overlap by one when n is not a
multiple of out, and repeat cells when n < out). Every backend computes exactly these windows
(the TensorFlow and NumPy backends through a "two-pool gather" of sliding windows of the two
sizes that occur), one spatial axis after the other. The windows depend only on the shapes, so
Konverter computes them at conversion and the generated code pools one window at a time.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_int_tuple, converter


def adaptive_windows(size: int, out: int) -> tuple:
    """(start, end) of each of the `out` cells that Keras pools an axis of `size` cells into."""
    return tuple((i * size // out, -(-(i + 1) * size // out)) for i in range(out))


def adaptive_pool(x, windows, reduce_max, channels_first):
    # windows: per spatial axis, the (start, end) of every output cell; axes are pooled in turn.
    first = 2 if channels_first else 1
    y = x
    for i, cells in enumerate(windows):
        axis = first + i
        index = [slice(None)] * y.ndim
        parts = []
        for start, end in cells:
            index[axis] = slice(start, end)
            window = y[tuple(index)]
            parts.append(window.max(axis=axis, keepdims=True) if reduce_max else window.mean(axis=axis, keepdims=True))
        y = np.concatenate(parts, axis=axis)  # a new array, never a view of the caller's
    return y


# Windows are literals of the generated code: an absurd output_size from the file must not make it huge.
MAX_CELLS = 1 << 16
_RANK = {
    "AdaptiveAveragePooling1D": 1,
    "AdaptiveAveragePooling2D": 2,
    "AdaptiveAveragePooling3D": 3,
    "AdaptiveMaxPooling1D": 1,
    "AdaptiveMaxPooling2D": 2,
    "AdaptiveMaxPooling3D": 3,
}


@converter(*_RANK, mask="drop")
def adaptive_pooling_layer(layer: Layer) -> Tensor:
    nd = _RANK[layer.class_name]
    x = layer.input
    if x.shape is None or len(x.shape) != nd + 1:
        raise layer.unsupported(f"expects a rank-{nd + 2} input, got shape {x.shape}")
    layer.expect_weights()
    data_format = layer.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise layer.unsupported(f"data_format {str(data_format)[:40]!r}")
    channels_first = data_format == "channels_first"
    out = as_int_tuple(layer.get("output_size"), f"{layer.describe()} output_size")
    out = out * nd if len(out) == 1 else out
    if len(out) != nd or any(o < 1 for o in out):
        raise BadModelFile(f"{layer.describe()} has an invalid output_size {out}")
    if any(o > MAX_CELLS for o in out):
        raise layer.unsupported(f"output_size {out} (more than {MAX_CELLS} cells on an axis)")
    spatial = x.shape[1:] if channels_first else x.shape[:-1]
    if None in spatial:
        raise layer.unsupported("adaptive pooling over an axis of unknown size (Keras needs it known too)")
    windows = tuple(adaptive_windows(n, o) for n, o in zip(spatial, out))
    channels = x.shape[0] if channels_first else x.shape[-1]
    shape = (channels, *out) if channels_first else (*out, channels)
    return layer.call(
        adaptive_pool,
        x,
        shape=shape,
        windows=windows,
        reduce_max="Max" in layer.class_name,
        channels_first=channels_first,
    )
