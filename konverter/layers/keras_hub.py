"""keras_hub building blocks used as layers of a Functional model: TransformerEncoder,
TransformerDecoder, PositionEmbedding, TokenAndPositionEmbedding, SinePositionEncoding,
RotaryEmbedding (keras_hub's ReversibleEmbedding is Keras's, see embedding.py).

The transformer blocks are MultiHeadAttention, LayerNormalization and Dense sublayers joined by
residual additions: each sublayer is converted by its own Keras converter (`Layer.inner`), fed
the arrays that its name picks out of the block's weights (.keras files order them by attribute
name, .h5 files by creation, so position alone cannot tell the two layer norms apart). Call-time
masks, caches and `positions` are refused; dropout is the identity at inference.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadModelFile
from ..h5reader.text import shown
from .base import CONVERTERS, Derived, Layer, Tensor, as_float, as_int, converter
from .embedding import embedding_lookup, nonzero_mask
from .ops import op_add


def position_embedding(x, table, start):
    # The learned positions start..start+T-1, one row per step, repeated over every leading axis.
    positions = table[start : start + x.shape[-2]]
    return np.array(np.broadcast_to(positions, x.shape))  # a new array, never a view of the table


def add_positions(x, table, start):
    return x + table[start : start + x.shape[-2]]


def sine_position_encoding(x, max_wavelength, start):
    # keras_hub: sin on even features, cos on odd ones, timescale (1/max_wavelength)^(2*(j//2)/H).
    length, hidden = x.shape[-2], x.shape[-1]
    positions = np.arange(length, dtype=np.float32) + np.float32(start)
    exponent = (2 * (np.arange(hidden) // 2)).astype(np.float32) / np.float32(hidden)
    timescales = np.power(np.float32(1.0 / max_wavelength), exponent)
    angles = positions[:, None] * timescales[None, :]
    odd = (np.arange(hidden) % 2).astype(np.float32)
    encoding = np.sin(angles) * (1.0 - odd) + np.cos(angles) * odd
    return np.array(np.broadcast_to(encoding, x.shape))


def rotary_inverse_freq(rotary_dim, denominator, max_wavelength, scaling):
    # Computed once at import: max_wavelength^(-2i/denominator) / scaling, in float32 like Keras.
    index = np.arange(0, rotary_dim, 2, dtype=np.float32)
    inverse = np.power(np.float32(max_wavelength), -(index / np.float32(denominator)))
    return (inverse / np.float32(scaling)).astype(np.float32)


def rotary_embedding(x, inverse_freq, start, sequence_axis, feature_axis):
    # RoPE: features split in halves (x1, x2) rotate by position * frequency: x*cos + (-x2, x1)*sin.
    x = np.moveaxis(x, (feature_axis, sequence_axis), (-1, 1))
    positions = np.arange(x.shape[1], dtype=np.float32) + np.float32(start)
    freq = positions[:, None] * inverse_freq[None, :]
    angles = np.concatenate([freq, freq], axis=-1).reshape((1, x.shape[1]) + (1,) * (x.ndim - 3) + (x.shape[-1],))
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    y = x * np.cos(angles) + rotated * np.sin(angles)
    return np.moveaxis(y, (-1, 1), (feature_axis, sequence_axis))


# ----------------------------------------------------------------------------- converters
def hub_names(name: str) -> tuple:
    """A keras_hub class's names in configs: bare in .h5, "keras_hub>Name" in .keras (keras_nlp before)."""
    return (name, f"keras_hub>{name}", f"keras_nlp>{name}")


def sublayer_weights(layer: Layer, parts: dict) -> dict:
    """Each sublayer's arrays, in stored order: a weight belongs to the part one of whose aliases (the
    attribute name in .keras, the sublayer's own name in .h5) is a component of its name."""
    names = layer.weight_names
    if len(names) != len(layer.weights):
        raise BadModelFile(f"{layer.describe()} has {len(layer.weights)} weights but {len(names)} weight names")
    found: dict = {part: [] for part in parts}
    for name, array in zip(names, layer.weights):
        components = set(str(name).split("/")[1:])  # the first is the layer's own (free) name
        hits = [part for part, aliases in parts.items() if components & set(aliases)]
        if len(hits) != 1:
            raise layer.unsupported(f"weight {shown(str(name), 80)} belongs to no known sublayer")
        found[hits[0]].append(array)
    return found


def _start_index(layer: Layer) -> int:
    for key in layer.kwargs:
        if key not in ("start_index", "positions", "training"):
            raise layer.unsupported(f"called with {shown(key, 30)}")
    if layer.kwargs.get("positions") is not None:
        raise layer.unsupported("called with explicit positions")
    start = layer.kwargs.get("start_index", 0)
    if isinstance(start, Tensor):
        raise layer.unsupported("a start_index computed at run time")
    start = as_int(start, "start_index")
    if start < 0:
        raise BadModelFile(f"{layer.describe()} has a negative start_index")
    return start


def _positions_fit(layer: Layer, x: Tensor, rows: int, start: int) -> None:
    if x.shape is None or len(x.shape) < 2 or x.shape[-1] is None:
        raise layer.unsupported(f"an input of shape {x.shape} (needs (..., sequence, features))")
    if x.shape[-2] is not None and start + x.shape[-2] > rows:
        raise BadModelFile(f"{layer.describe()} has {rows} positions, the input needs {start + x.shape[-2]}")


@converter(*hub_names("PositionEmbedding"), mask="drop")
def position_embedding_layer(layer: Layer) -> Tensor:
    x = layer.input
    rows = as_int(layer.get("sequence_length"), "sequence_length")
    start = _start_index(layer)
    _positions_fit(layer, x, rows, start)
    (table,) = layer.expect_weights((rows, x.shape[-1]))
    return layer.call(position_embedding, x, table, shape=x.shape, start=start)


@converter(*hub_names("TokenAndPositionEmbedding"), mask="own")
def token_and_position_embedding_layer(layer: Layer) -> Tensor:
    x = layer.input
    vocabulary = as_int(layer.get("vocabulary_size"), "vocabulary_size")
    rows = as_int(layer.get("sequence_length"), "sequence_length")
    width = as_int(layer.get("embedding_dim"), "embedding_dim")
    start = _start_index(layer)
    if x.shape is None or not x.shape:
        raise layer.unsupported(f"an input of shape {x.shape} (needs (..., sequence))")
    parts = sublayer_weights(layer, {"token": ("token_embedding",), "position": ("position_embedding",)})
    tied = bool(layer.get("tie_weights", True))
    want = [(vocabulary, width)] + ([] if tied else [(width, vocabulary)])
    table = layer.inner("token_embedding", "ReversibleEmbedding", {}, parts["token"], []).expect_weights(*want)[0]
    position = layer.inner("position_embedding", "PositionEmbedding", {}, parts["position"], [])
    (positions,) = position.expect_weights((rows, width))
    if x.shape[-1] is not None and start + x.shape[-1] > rows:
        raise BadModelFile(f"{layer.describe()} has {rows} positions, the input needs {start + x.shape[-1]}")
    embedded = layer.call(embedding_lookup, x, np.asarray(table, dtype=np.float32), shape=x.shape + (width,))
    out = layer.call(add_positions, embedded, positions, shape=embedded.shape, start=start)
    if layer.get("mask_zero", False):
        out.mask = layer.call(nonzero_mask, x, shape=x.shape, dtype="bool")
    return out


@converter(*hub_names("SinePositionEncoding"), mask="drop")
def sine_position_encoding_layer(layer: Layer) -> Tensor:
    x = layer.input
    layer.expect_weights()
    start = _start_index(layer)
    _positions_fit(layer, x, 1 << 62, start)
    wavelength = as_float(layer.get("max_wavelength", 10000), "max_wavelength")
    if wavelength <= 0.0:
        raise BadModelFile(f"{layer.describe()} has max_wavelength {wavelength}")
    return layer.call(sine_position_encoding, x, shape=x.shape, max_wavelength=wavelength, start=start)


@converter(*hub_names("RotaryEmbedding"), mask="drop")
def rotary_embedding_layer(layer: Layer) -> Tensor:
    x = layer.input
    layer.expect_weights()
    start = _start_index(layer)
    rope = layer.get("rope_type", "linear")
    if rope not in ("linear", "dynamic"):
        raise layer.unsupported(f"rope_type {shown(str(rope), 20)}")
    seq_axis = layer.axis(as_int(layer.get("sequence_axis", 1), "sequence_axis"), x.rank)
    feature_axis = layer.axis(as_int(layer.get("feature_axis", -1), "feature_axis"), x.rank)
    if 0 in (seq_axis, feature_axis) or seq_axis == feature_axis:
        raise layer.unsupported(f"sequence_axis {seq_axis} and feature_axis {feature_axis}")
    dim = x.shape[feature_axis - 1]
    if dim is None or dim % 2:
        raise layer.unsupported(f"rotary embedding over {dim} features (needs a known, even number)")
    denominator = layer.get("denominator_dim")
    denominator = dim if denominator is None else as_int(denominator, "denominator_dim")
    wavelength = as_float(layer.get("max_wavelength", 10000), "max_wavelength")
    scaling = as_float(layer.get("scaling_factor", 1.0), "scaling_factor")
    if scaling <= 0.0 or wavelength <= 0.0 or denominator <= 0:
        raise BadModelFile(f"{layer.describe()} has non-positive frequency settings")
    if rope == "dynamic":  # keras_hub: the scaling raised to dim / max(1, dim - 2)
        scaling = scaling ** (dim / max(1, dim - 2))
    inverse = Derived(rotary_inverse_freq, (dim, denominator, wavelength, scaling))
    return layer.call(
        rotary_embedding, x, inverse, shape=x.shape, start=start, sequence_axis=seq_axis, feature_axis=feature_axis
    )


# ----------------------------------------------------------------------------- transformer blocks
_ENCODER_PARTS = {
    "attention": ("_self_attention_layer", "self_attention_layer", "self_attention"),
    "attention_norm": ("_self_attention_layer_norm", "self_attention_layer_norm"),
    "cross": ("_cross_attention_layer", "cross_attention_layer", "cross_attention"),
    "cross_norm": ("_cross_attention_layer_norm", "cross_attention_layer_norm"),
    "intermediate": ("_feedforward_intermediate_dense", "feedforward_intermediate_dense"),
    "output": ("_feedforward_output_dense", "feedforward_output_dense"),
    "feedforward_norm": ("_feedforward_layer_norm", "feedforward_layer_norm"),
}
_BLOCK_CALL = {"training", "use_causal_mask", "return_attention_scores"}
_BLOCK_MASKS = {"padding_mask", "attention_mask", "decoder_padding_mask", "decoder_attention_mask"}
_BLOCK_MASKS |= {"encoder_padding_mask", "encoder_attention_mask", "self_attention_cache", "cross_attention_cache"}
_BLOCK_MASKS |= {"self_attention_cache_update_index", "cross_attention_cache_update_index"}


def _transformer_block(layer: Layer, x: Tensor, memory: Tensor | None, causal: bool) -> Tensor:
    """keras_hub's transformer block: [self attention, (cross attention,) feed-forward], each a
    residual around its sublayer with a LayerNormalization before (normalize_first) or after."""
    for key, value in layer.kwargs.items():
        if key in _BLOCK_MASKS and value is not None:
            raise layer.unsupported(f"called with {key} (masks and caches at call time are not supported)")
        if key not in _BLOCK_MASKS | _BLOCK_CALL | {"encoder_sequence", "decoder_sequence", "inputs"}:
            raise layer.unsupported(f"called with {shown(key, 30)}")
    if layer.kwargs.get("return_attention_scores"):
        raise layer.unsupported("return_attention_scores=True")
    if x.shape is None or len(x.shape) != 2 or x.shape[-1] is None:
        raise layer.unsupported(f"an input of shape {x.shape} (needs (batch, sequence, features))")
    hidden = x.shape[-1]
    heads = as_int(layer.get("num_heads"), "num_heads")
    inner = as_int(layer.get("intermediate_dim"), "intermediate_dim")
    if heads <= 0 or hidden // heads == 0:
        raise BadModelFile(f"{layer.describe()} has {heads} heads for {hidden} features")
    eps = as_float(layer.get("layer_norm_epsilon", 1e-5), "layer_norm_epsilon")
    first = bool(layer.get("normalize_first", False))
    parts = sublayer_weights(layer, _ENCODER_PARTS)
    if bool(parts["cross"]) != (memory is not None):
        raise BadModelFile(f"{layer.describe()}: cross-attention weights and encoder_sequence do not match")

    def norm(part: str, t: Tensor) -> Tensor:
        cfg = {"axis": -1, "epsilon": eps, "center": True, "scale": True}
        return CONVERTERS["LayerNormalization"](layer.inner(part, "LayerNormalization", cfg, parts[part], [t]))

    def residual(part: str, t: Tensor, run) -> Tensor:
        h = norm(f"{part}_norm", t) if first else t
        h = layer.call(op_add, run(h), t, shape=t.shape)
        return h if first else norm(f"{part}_norm", h)

    def attention(part: str, source: Tensor | None, is_causal: bool):
        cfg = {"num_heads": heads, "key_dim": hidden // heads, "use_bias": True}
        if part == "cross":
            cfg["value_dim"] = hidden // heads

        def run(h: Tensor) -> Tensor:
            sub = layer.inner(part, "MultiHeadAttention", cfg, parts[part], [h, h if source is None else source])
            sub.kwargs = {"use_causal_mask": is_causal}
            return CONVERTERS["MultiHeadAttention"](sub)

        return run

    def feedforward(h: Tensor) -> Tensor:
        dense = {"units": inner, "activation": layer.get("activation", "relu"), "use_bias": True}
        h = CONVERTERS["Dense"](layer.inner("intermediate", "Dense", dense, parts["intermediate"], [h]))
        out = {"units": hidden, "activation": None, "use_bias": True}
        return CONVERTERS["Dense"](layer.inner("output", "Dense", out, parts["output"], [h]))

    y = residual("attention", x, attention("attention", None, causal))
    if memory is not None:
        y = residual("cross", y, attention("cross", memory, False))
    return residual("feedforward", y, feedforward)


@converter(*hub_names("TransformerEncoder"))
def transformer_encoder_layer(layer: Layer) -> Tensor:
    return _transformer_block(layer, layer.input, None, causal=False)


@converter(*hub_names("TransformerDecoder"))
def transformer_decoder_layer(layer: Layer) -> Tensor:
    named = {k: layer.kwargs.get(k) for k in ("decoder_sequence", "encoder_sequence")}
    args = list(layer.args) + [None] * 2
    x = named["decoder_sequence"] if named["decoder_sequence"] is not None else args[0]
    memory = named["encoder_sequence"] if named["encoder_sequence"] is not None else args[1]
    if not isinstance(x, Tensor) or not (memory is None or isinstance(memory, Tensor)):
        raise BadModelFile(f"{layer.describe()} is not called on a decoder sequence tensor")
    return _transformer_block(layer, x, memory, causal=bool(layer.kwargs.get("use_causal_mask", True)))


def _from_keras_hub(entry: dict) -> str | None:
    """Config-level check (graph.unsupported_layers): these names are keras_hub's (keras_nlp's before);
    a same-named class registered by another package is somebody else's code."""
    registered = entry.get("registered_name")
    if isinstance(registered, str) and ">" in registered and registered.split(">")[0] not in ("keras_hub", "keras_nlp"):
        return "custom object; its code is not in the file"
    return None


for _fn in (
    position_embedding_layer,
    token_and_position_embedding_layer,
    sine_position_encoding_layer,
    rotary_embedding_layer,
    transformer_encoder_layer,
    transformer_decoder_layer,
):
    _fn.refuses = _from_keras_hub  # read by graph.unsupported_layers
