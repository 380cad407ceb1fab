"""TimeDistributed: the wrapped layer applied to every time step, as if the steps were samples."""

from __future__ import annotations

from ...h5reader import config as cfgmod
from ..base import CONVERTERS, Layer, Tensor, converter, mask_policy
from .rnn import sequence_mask, wrapped_config


def fold_time(x):
    # (batch, time, ...) -> (batch*time, ...): TimeDistributed's inner layer sees time steps as samples.
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unfold_time(y, x):
    return y.reshape(x.shape[:2] + y.shape[1:])


@converter("TimeDistributed", mask="own", wraps=("layer",))
def time_distributed_layer(layer: Layer) -> Tensor:
    x = layer.input
    if x.shape is None or len(x.shape) < 2:
        raise layer.unsupported(f"TimeDistributed needs (batch, time, ...) input, got {x.shape}")
    cls, cfg = wrapped_config(layer, "layer")
    if cls not in CONVERTERS or cfgmod.is_model({"class_name": cls, "config": cfg}):
        raise layer.unsupported(f"TimeDistributed around {cls[:60]}, which is not supported")
    mask = sequence_mask(layer, x) if layer.kwargs.get("mask") is not None else x.mask
    if mask is not None and mask_policy(cls, layer.keras_major) not in ("pass", "drop"):
        raise layer.unsupported(f"a mask reaching TimeDistributed({cls[:60]}), which Keras hands to the inner layer")
    folded = layer.call(fold_time, x, shape=x.shape[1:], dtype=x.dtype)
    inner = layer.inner(str(cfg.get("name", cls)), cls, cfg, layer.weights, [folded])
    y = CONVERTERS[cls](inner)
    if not isinstance(y, Tensor) or y.shape is None:
        raise layer.unsupported(f"TimeDistributed around {cls[:60]} with several outputs")
    if y.mask is not None:
        raise layer.unsupported(f"TimeDistributed around {cls[:60]}, which makes its own mask")
    out = layer.call(unfold_time, y, x, shape=(x.shape[0],) + y.shape, dtype=y.dtype)
    out.mask = mask
    return out
