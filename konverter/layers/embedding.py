"""Embedding and Masking: the layers that start a Keras mask (see `Tensor.mask`)."""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from .base import Layer, Tensor, as_float, as_int, converter


def embedding_lookup(x, table):
    # Keras casts non-integer inputs to int32 (truncating); indices outside [0, rows) are errors there too.
    idx = x if x.dtype.kind in "iu" else x.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        raise ValueError(f"embedding indices must lie in [0, {table.shape[0]}), got {idx.min()}..{idx.max()}")
    return table[idx]


def nonzero_mask(x):
    return x != 0


def masking(x, mask_value):
    # A step is masked when all its features equal mask_value; masked steps become zeros.
    keep = np.any(x != mask_value, axis=-1)
    return np.where(keep[..., None], x, 0.0).astype(x.dtype, copy=False), keep


@converter("Embedding", mask="own")
def embedding_layer(layer: Layer) -> Tensor:
    x = layer.input
    rows = as_int(layer.get("input_dim"), "Embedding input_dim")
    width = as_int(layer.get("output_dim"), "Embedding output_dim")
    if layer.get("lora_rank"):
        raise layer.unsupported("LoRA-enabled Embedding")
    if x.shape is None:
        raise layer.unsupported("Embedding on an input of unknown rank")
    from .quantized import quantization, quantized_embedding_layer  # here: quantized.py imports this module

    if quantization(layer) is not None:
        out = quantized_embedding_layer(layer, x, rows, width)
    else:
        (table,) = layer.expect_weights((rows, width))
        out = layer.call(embedding_lookup, x, table.astype(np.float32), shape=x.shape + (width,))
    if layer.get("mask_zero", False):
        out.mask = layer.call(nonzero_mask, x, shape=x.shape, dtype="bool")
    return out


@converter("Masking", mask="own")
def masking_layer(layer: Layer) -> Tensor:
    x = layer.input
    if x.shape is None or len(x.shape) < 2:
        raise layer.unsupported(f"Masking needs (batch, time, features) input, got {x.shape}")
    layer.expect_weights()
    value = layer.get("mask_value", 0.0)
    if value is None:
        raise BadModelFile(f"{layer.describe()} has no mask_value")
    out, keep = layer.call_multi(masking, x, shapes=[x.shape, x.shape[:-1]], mask_value=as_float(value, "mask_value"))
    out.dtype, keep.dtype = x.dtype, "bool"
    out.mask = keep
    return out
