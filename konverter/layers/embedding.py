"""Embedding, ReversibleEmbedding and Masking: the layers that start a Keras mask (see `Tensor.mask`)."""

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


def reverse_embedding(x, table, reverse_kernel, soft_cap):
    # ReversibleEmbedding(reverse=True): logits over the vocabulary, x @ table.T with tied weights
    # (the lookup table itself, stored once) or x @ reverse_kernel; then Keras's optional soft cap.
    logits = x @ (table.T if reverse_kernel is None else reverse_kernel)
    if soft_cap is not None:
        logits = np.tanh(logits / soft_cap) * soft_cap
    return logits


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


# keras_hub's ReversibleEmbedding is this class, registered under its own name.
@converter("ReversibleEmbedding", "keras_hub>ReversibleEmbedding", "keras_nlp>ReversibleEmbedding", mask="own")
def reversible_embedding_layer(layer: Layer) -> Tensor:
    """Keras 3.15's (and keras_hub's) ReversibleEmbedding: a lookup, or with `reverse=True` the
    projection back onto the vocabulary. A mask reaching the reverse call ends there, as in Keras."""
    x = layer.input
    rows = as_int(layer.get("input_dim"), "ReversibleEmbedding input_dim")
    width = as_int(layer.get("output_dim"), "ReversibleEmbedding output_dim")
    if layer.get("lora_rank"):
        raise layer.unsupported("LoRA-enabled ReversibleEmbedding")
    tied = bool(layer.get("tie_weights", True))
    weights = layer.expect_weights((rows, width), *([] if tied else [(width, rows)]))
    table = np.asarray(weights[0], dtype=np.float32)  # no copy: both calls of the layer share one constant
    unknown = {k for k in layer.kwargs if k not in ("reverse", "training")}
    if unknown:
        raise layer.unsupported(f"called with {sorted(unknown)[0][:30]!r}")
    if not layer.kwargs.get("reverse", False):
        if x.shape is None:
            raise layer.unsupported("ReversibleEmbedding on an input of unknown rank")
        out = layer.call(embedding_lookup, x, table, shape=x.shape + (width,))
        if layer.get("mask_zero", False):
            out.mask = layer.call(nonzero_mask, x, shape=x.shape, dtype="bool")
        return out
    if layer.get("reverse_dtype") not in (None, "float32"):
        raise layer.unsupported(f"reverse_dtype {str(layer.get('reverse_dtype'))[:20]!r} (only float32)")
    if x.shape is None or not x.shape or x.shape[-1] != width:
        raise BadModelFile(f"{layer.describe()} reverses a tensor of shape {x.shape}, expected (..., {width})")
    cap = layer.get("logit_soft_cap")
    cap = None if cap is None else as_float(cap, "ReversibleEmbedding logit_soft_cap")
    if cap == 0.0:
        raise BadModelFile(f"{layer.describe()} has logit_soft_cap 0")
    kernel = None if tied else np.asarray(weights[1], dtype=np.float32)
    return layer.call(reverse_embedding, x, table, kernel, cap, shape=x.shape[:-1] + (rows,))
