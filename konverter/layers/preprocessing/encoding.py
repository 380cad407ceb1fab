"""Categorical encoding: CategoryEncoding and Discretization (whose codes it encodes the same way).

Keras encodes a batch of integer codes in ways that depend on the input's rank and on the Keras
version (read from keras/src/utils/numerical_utils.py and tf-keras's preprocessing utils, and
checked against both):

- one_hot: a row per code, the codes' trailing axis of size 1 dropped. Codes outside
  [0, depth) give a zero row in Keras 3 and an error in tf-keras (rank 2 at most there).
- multi_hot / count: over axis 1 (for rank 2, the one axis after the batch). Keras 3 raises for
  negative codes and skips codes >= depth at rank 2 (TensorFlow's bincount), skips both at
  rank 3 and more; tf-keras raises for both and stops at rank 2.
- An input of rank 1 (one code per sample) is counted over the whole batch by multi_hot and
  count: no per-sample result exists, so that is refused.
"""

from __future__ import annotations

import numpy as np

from ...errors import BadModelFile
from ...h5reader.text import shown
from ..base import Layer, Tensor, as_int, converter
from .resizing import as_dtype

# Output dtypes Konverter writes for the encoded values (Keras's layer dtype).
OUTPUT_DTYPES = ("float32", "float64", "float16", "int32", "int64", "bool", "uint8", "int8", "int16")


def one_hot(x, depth, squeeze, check, to):
    # One-hot rows of integer codes (floats truncated toward zero, as Keras casts them), a trailing
    # axis of size 1 dropped first when `squeeze`; codes outside [0, depth) give zero rows, or
    # raise when `check` (tf-keras validates them).
    codes = (x[..., 0] if squeeze else x).astype(np.int64)
    if check and ((codes < 0) | (codes >= depth)).any():
        raise ValueError(f"CategoryEncoding: every value must be in [0, {depth}), got {codes.min()}..{codes.max()}")
    return (codes[..., None] == np.arange(depth)).astype(to)


def bin_count(x, weights, depth, binary, check, to):
    # Count (or, `binary`, mark) each code 0..depth-1 over axis 1 of x, per sample and per position
    # after axis 1; `weights` (or None) are added instead of ones. check: "negative" raises for
    # negative codes (ignoring codes >= depth), "range" for any code outside [0, depth), "" ignores both.
    codes = np.moveaxis(x, 1, -1).astype(np.int64)
    rows = codes.reshape(-1, codes.shape[-1])
    valid = (rows >= 0) & (rows < depth)
    if (check == "negative" and (rows < 0).any()) or (check == "range" and not valid.all()):
        raise ValueError(f"CategoryEncoding: every value must be in [0, {depth}), got {rows.min()}..{rows.max()}")
    cells = (rows + depth * np.arange(len(rows))[:, None])[valid]
    if weights is not None:
        weights = np.moveaxis(weights, 1, -1).reshape(rows.shape)[valid]
    counts = np.bincount(cells, weights=weights, minlength=len(rows) * depth)
    counts = counts.reshape(codes.shape[:-1] + (depth,))
    return (counts > 0).astype(to) if binary else counts.astype(to)


def bucketize(x, boundaries):
    # TensorFlow's Bucketize: the number of boundaries <= x, compared in float32 (NaN goes last).
    return np.searchsorted(boundaries, x.astype(np.float32), side="right")


def layer_dtype(layer: Layer, default: str = "float32") -> str:
    """The layer's own dtype (its variable dtype for a mixed policy), which Keras gives its output."""
    value = layer.get("dtype")
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name")
    if value is None:
        return default
    if isinstance(value, str) and value.startswith("mixed_"):
        return "float32"
    if value not in OUTPUT_DTYPES:
        raise layer.unsupported(f"dtype {shown(value, 30)}")
    return value


def encode(
    layer: Layer, codes: Tensor, mode: str, depth: int, dtype: str, weights: Tensor | None = None, bounded: bool = False
) -> Tensor:
    """Record Keras's encoding of integer `codes` (see the module docstring).

    bounded: every code is known to be in [0, depth) (Discretization), so nothing is checked.
    """
    keras3 = layer.keras_major >= 3
    shape, rank = codes.shape, codes.rank
    if mode == "one_hot":
        squeezed = rank > 1 and shape[-1] == 1
        if not keras3 and rank - squeezed > 1:
            raise layer.unsupported("one_hot of more than one code per sample (tf-keras cannot compute it either)")
        check = not keras3 and not bounded
        out_shape = (shape[:-1] if squeezed else shape) + (depth,)
        return layer.call(
            one_hot, codes, shape=out_shape, dtype=dtype, depth=depth, squeeze=squeezed, check=check, to=dtype
        )
    if mode not in ("multi_hot", "count"):
        raise layer.unsupported(f"output_mode {shown(mode, 20)}")
    if rank == 1:
        raise layer.unsupported(f"output_mode {mode!r} of one code per sample (Keras counts over the whole batch)")
    if rank > 2 and not keras3:
        raise layer.unsupported(f"output_mode {mode!r} of rank {rank} inputs (tf-keras cannot compute it either)")
    check = "" if bounded or rank > 2 else ("negative" if keras3 else "range")
    out_shape = shape[1:] + (depth,)
    return layer.call(
        bin_count,
        codes,
        weights,
        shape=out_shape,
        dtype=dtype,
        depth=depth,
        binary=mode == "multi_hot",
        check=check,
        to=dtype,
    )


def _sparse(layer: Layer) -> None:
    if layer.get("sparse"):
        raise layer.unsupported("sparse=True (sparse tensor outputs)")


def output_mode(layer: Layer, default: str) -> str:
    mode = layer.get("output_mode", default)
    return {"binary": "multi_hot", "tf-idf": "tf_idf"}.get(mode, mode) if isinstance(mode, str) else mode


@converter("CategoryEncoding", mask="drop")
def category_encoding_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    _sparse(layer)
    x = layer.input
    depth = as_int(layer.get("num_tokens"), "num_tokens")
    if depth < 1:
        raise BadModelFile(f"{layer.describe()} has num_tokens {depth}")
    mode = output_mode(layer, "multi_hot")
    weights = layer.kwargs.get("count_weights")
    if weights is not None and not (isinstance(weights, Tensor) and mode == "count" and weights.shape == x.shape):
        raise layer.unsupported("count_weights other than a tensor of the input's shape in 'count' mode")
    return encode(layer, x, mode, depth, layer_dtype(layer), weights)


def _compress_summary(summary: np.ndarray, epsilon: float) -> np.ndarray:
    """tf-keras's Discretization summary compression (NumPy, float32 result), as its adapt() ran it."""
    if summary.shape[1] * epsilon < 1:
        return summary
    percents = epsilon + np.arange(0.0, 1.0, epsilon)
    cum_weights = summary[1].cumsum()
    cum_weight_percents = cum_weights / cum_weights[-1]
    new_bins = np.interp(percents, cum_weight_percents, summary[0])
    cum_weights = np.interp(percents, cum_weight_percents, cum_weights)
    new_weights = cum_weights - np.concatenate((np.array([0]), cum_weights[:-1]))
    return np.stack((new_bins, new_weights)).astype(np.float32)


def _boundaries(layer: Layer) -> np.ndarray:
    """bin_boundaries from the config (set, or adapted in Keras 3) or from tf-keras's adapted summary."""
    bounds = layer.get("bin_boundaries")
    if bounds is None:
        num_bins = as_int(layer.get("num_bins"), "num_bins")
        if layer.keras_major >= 3 or len(layer.weights) != 1 or num_bins < 1:
            raise layer.unsupported("no bin_boundaries in the file (never adapted?)")
        summary = np.asarray(layer.weights[0], dtype=np.float32)
        if summary.ndim != 2 or summary.shape[0] != 2 or summary.shape[1] == 0:
            raise layer.unsupported("no bin boundaries: the adapted summary is empty (never adapted?)")
        return _compress_summary(summary, 1.0 / num_bins)[0, :-1]
    if not isinstance(bounds, list) or any(isinstance(b, bool) or not isinstance(b, (int, float)) for b in bounds):
        raise BadModelFile(f"{layer.describe()} has invalid bin_boundaries")
    return np.array(bounds, dtype=np.float32)


@converter("Discretization", mask="drop")
def discretization_layer(layer: Layer) -> Tensor:
    _sparse(layer)
    x = layer.input
    bounds = _boundaries(layer)
    if np.isnan(bounds).any() or (np.diff(bounds) < 0).any():
        raise layer.unsupported("bin_boundaries not in increasing order")
    mode = output_mode(layer, "int")
    if mode == "int":
        # Keras 3 returns int32 codes, tf-keras int64 (its layer dtype).
        dtype = "int32" if layer.keras_major >= 3 else "int64"
        codes = layer.call(bucketize, x, bounds, shape=x.shape, dtype="int64")
        return layer.call(as_dtype, codes, shape=x.shape, dtype=dtype, to=dtype)
    codes = layer.call(bucketize, x, bounds, shape=x.shape, dtype="int64")
    return encode(layer, codes, mode, len(bounds) + 1, layer_dtype(layer), bounded=True)
