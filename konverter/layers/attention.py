"""Attention layers: MultiHeadAttention, GroupQueryAttention, Attention, AdditiveAttention, and EinsumDense.

Dropout is the identity at inference. Masks follow Keras's `_compute_attention_mask`: the query's
mask hides rows, the value's (and key's) columns, an `attention_mask` given at call time and the
causal mask whatever else; Attention and AdditiveAttention zero the masked query steps instead.
The output keeps the query's mask. The einsum equations written into generated files are rebuilt
by Konverter from validated letters, never copied from the model file.
"""

from __future__ import annotations

import math
import string
from typing import Any

import numpy as np

from ..errors import BadModelFile
from .activations import MASK_PENALTY, apply_activation, hide_masked, softmax, softmax_mask_rule
from .base import Layer, Tensor, as_float, as_int, as_int_tuple, converter
from .quantized import einsum_kernel_sizes, quantization, quantized_einsum_layer

CAUSAL_PENALTY = 1e9  # Keras subtracts 1e9 from masked-out scores before the softmax
# What Keras 3.7+'s fused attention kernel (ops.dot_product_attention, TensorFlow and JAX backends)
# puts in place of a masked score: a fully masked row becomes uniform, not zero.
KERNEL_PENALTY = -0.7 * 3.38953e38


def einsum_dense(x, kernel, bias, equation):
    y = np.einsum(equation, x, kernel, optimize=True)
    return y if bias is None else y + bias


def causal_scores(s):
    # Query i may only attend to keys j <= i (a lower-triangular mask over the last two axes).
    allowed = np.tril(np.ones(s.shape[-2:], dtype=bool))
    return np.where(allowed, s, s - CAUSAL_PENALTY)


def mha_project(x, kernel, bias, heads):
    # EinsumDense "...c,cnd->...nd": a Dense on the last axis, split into (heads, size).
    y = x @ kernel
    if bias is not None:
        y = y + bias
    return y.reshape(x.shape[:-1] + heads)


def mha_attend(q, k, v, axes, scale, causal):
    # q: (batch, *positions, heads, key_dim); attention runs over the position axes in `axes`,
    # every other position axis is attended independently (like the batch axis).
    r = q.ndim
    keep = [i for i in range(1, r - 2) if i not in axes]
    perm = [0] + keep + [r - 2] + list(axes) + [r - 1]
    q, k, v = q.transpose(perm), k.transpose(perm), v.transpose(perm)
    lead = len(keep) + 2
    q_positions = q.shape[lead:-1]
    qf = q.reshape(q.shape[:lead] + (math.prod(q_positions), q.shape[-1]))  # no -1: batches may be empty
    kf = k.reshape(k.shape[:lead] + (math.prod(k.shape[lead:-1]), k.shape[-1]))
    vf = v.reshape(v.shape[:lead] + (math.prod(v.shape[lead:-1]), v.shape[-1]))
    s = (qf * scale) @ np.swapaxes(kf, -1, -2)
    if causal:
        s = causal_scores(s)
    o = softmax(s, -1) @ vf
    o = o.reshape(o.shape[:lead] + q_positions + (o.shape[-1],))
    return o.transpose(np.argsort(perm))


def mha_output(o, kernel, bias, out_shape):
    # EinsumDense "...nd,nde->...e": contract heads and value_dim together.
    y = o.reshape(o.shape[:-2] + (o.shape[-2] * o.shape[-1],)) @ kernel
    if bias is not None:
        y = y + bias
    return y.reshape(o.shape[:-2] + out_shape)


def repeat_heads(x, repeats):
    # GroupQueryAttention: each key/value head serves `repeats` consecutive query heads.
    return np.repeat(x, repeats, axis=-2)


def dot_scores(q, k, scale):
    s = q @ np.swapaxes(k, -1, -2)
    return s if scale is None else s * scale


def concat_scores(q, k, scale, weight):
    # Attention(score_mode="concat"): weight * sum(tanh(scale * (q_i + k_j))) over features.
    t = q[..., :, None, :] + k[..., None, :, :]
    if scale is not None:
        t = scale * t
    return weight * np.sum(np.tanh(t), axis=-1)


def additive_scores(q, k, scale):
    # AdditiveAttention (Bahdanau): sum(scale * tanh(q_i + k_j)) over features.
    t = np.tanh(q[..., :, None, :] + k[..., None, :, :])
    if scale is not None:
        t = t * scale
    return np.sum(t, axis=-1)


def attend(s, v, causal):
    if causal:
        s = causal_scores(s)
    return softmax(s, -1) @ v


def attend_masked(s, v, value_mask, query_mask, causal):
    # Attention/AdditiveAttention with Keras masks: scores of masked value steps (and, causal, of
    # later steps) lose 1e9 (once); the outputs at masked query steps are zeros.
    keep = None if value_mask is None else value_mask[:, None, :]
    if causal:
        lower = np.tril(np.ones(s.shape[-2:], dtype=bool))
        keep = lower if keep is None else keep & lower
    if keep is not None:
        s = np.where(keep, s, s - CAUSAL_PENALTY)
    y = softmax(s, -1) @ v
    return y if query_mask is None else np.where(query_mask[..., None], y, 0.0)


def attention_keep(query_mask, value_mask, key_mask, attention_mask):
    # Keras's _compute_attention_mask: query steps (batch, T, 1) and value/key steps (batch, 1, S),
    # ANDed with the attention_mask given at call time (batch, T, S).
    keep = None if query_mask is None else query_mask[:, :, None]
    for m in (value_mask, key_mask):
        if m is not None:
            keep = m[:, None, :] if keep is None else keep & m[:, None, :]
    if attention_mask is not None:
        keep = attention_mask if keep is None else attention_mask & keep
    return keep


def mha_attend_masked(q, k, v, keep, scale, causal, penalty, additive, zero_masked):
    # Attention over axis 1 of (batch, steps, heads, size) tensors, the scores (batch, heads, T, S)
    # hidden where keep (batch, T or 1, S) is False, as the writer's Keras does (see hide_masked).
    q, k, v = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    s = (q * scale) @ np.swapaxes(k, -1, -2)
    keep = keep[:, None]
    if causal:
        keep = keep & np.tril(np.ones(s.shape[-2:], dtype=bool))
    p = softmax(hide_masked(s, keep, penalty, additive), -1)
    if zero_masked:
        p = np.where(keep, p, 0.0)
    return (p @ v).transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------- converters
def _refuse_scores(layer: Layer) -> None:
    if layer.kwargs.get("return_attention_scores"):
        raise layer.unsupported("return_attention_scores=True")


def _causal(layer: Layer) -> bool:
    value = layer.kwargs.get("use_causal_mask", layer.get("causal", False))
    return bool(value)


def _mha_inputs(layer: Layer) -> tuple[Tensor, Tensor, Tensor, bool]:
    """query, value, key of a MultiHeadAttention-like call, and whether the key was given."""
    _refuse_scores(layer)
    if layer.get("use_gate", False):
        raise layer.unsupported("use_gate=True")
    if layer.get("sliding_window") is not None:
        raise layer.unsupported("sliding_window")
    positional = list(layer.args)
    names = ("query", "value", "key")
    found: dict = {}
    for name, value in zip(names, positional):
        found[name] = value
    for name in names:
        if name in layer.kwargs:
            found[name] = layer.kwargs[name]
    q, v = found.get("query"), found.get("value")
    key_given = found.get("key") is not None
    k = found.get("key") if key_given else v
    if not all(isinstance(t, Tensor) for t in (q, v, k)):
        raise BadModelFile(f"{layer.describe()} is not called on query and value tensors")
    return q, v, k, key_given


def _mha_masks(layer: Layer, q: Tensor, v: Tensor, k: Tensor, key_given: bool) -> list:
    """[query, value, key, attention] masks Keras's _compute_attention_mask reads (None: none).

    tf-keras reads the masks the tensors carry; Keras 3 the query_mask=... call arguments (the file
    writes them, else the tensors' masks), except that MultiHeadAttention from 3.7 on reads the
    query tensor's own mask. A key that is not given has no mask of its own there."""
    given = layer.kwargs.get("attention_mask")
    if given is not None and not isinstance(given, Tensor):
        raise layer.unsupported(f"an attention_mask that is not one tensor: {str(given)[:40]}")
    if layer.keras_major < 3:
        return [q.mask, v.mask, k.mask, given]
    reads_query = layer.class_name == "MultiHeadAttention" and (layer.release() or (3, 7)) >= (3, 7)
    query = q.mask if reads_query else layer.call_mask(q, "query_mask")
    key = layer.call_mask(k, "key_mask") if key_given else layer.kwargs.get("key_mask")
    if key is not None and not isinstance(key, Tensor):
        raise layer.unsupported(f"a key_mask that is not one tensor: {str(key)[:40]}")
    return [query, layer.call_mask(v, "value_mask"), key, given]


def _masked_attention(layer: Layer, qp: Tensor, kp: Tensor, vp: Tensor, masks: list, scale: float) -> Tensor:
    """The attention of projected (batch, steps, heads, size) tensors under Keras masks."""
    q_mask, v_mask, k_mask, attention_mask = masks
    steps = (qp.shape[0],), (vp.shape[0],), (kp.shape[0],)
    for m, want, what in zip((q_mask, v_mask, k_mask), steps, ("query", "value", "key")):
        if m is not None and (m.shape != want or m.dtype != "bool"):
            raise layer.unsupported(f"a {what} mask of shape {m.shape} ({m.dtype}) for {want[0]} steps")
    if attention_mask is not None and (attention_mask.dtype != "bool" or len(attention_mask.shape) != 2):
        raise layer.unsupported(f"an attention_mask of shape {attention_mask.shape} ({attention_mask.dtype})")
    keep = layer.call(attention_keep, *masks, shape=(qp.shape[0], vp.shape[0]), dtype="bool")
    # Keras 3.7+ runs the fused kernel unless dropout is set; else (and in tf-keras) the Softmax layer.
    release = (2, 0) if layer.keras_major < 3 else layer.release()
    if release is None:
        raise layer.unsupported(f"masks, in a file of unknown Keras version {layer.keras_version[:20]!r}")
    dropout = as_float(layer.get("dropout", 0.0) or 0.0, "dropout")
    if release >= (3, 7) and dropout == 0.0:
        if layer.backend == "torch":
            raise layer.unsupported("masks in a torch-backend file (its attention kernel gives NaN rows)")
        penalty, additive, zero_masked = KERNEL_PENALTY, False, False
    else:
        penalty = MASK_PENALTY
        additive, zero_masked = softmax_mask_rule(layer, keep)
    return layer.call(
        mha_attend_masked,
        qp,
        kp,
        vp,
        keep,
        shape=qp.shape[:-1] + vp.shape[-1:],
        scale=scale,
        causal=_causal(layer),
        penalty=penalty,
        additive=additive,
        zero_masked=zero_masked,
    )


def _end_masks(layer: Layer, q: Tensor, v: Tensor, k: Tensor, out: Tensor, query_mask: Tensor | None) -> Tensor:
    """The output keeps the query's mask. Keras 3.7+'s MultiHeadAttention also deletes the masks of
    the tensors it was called on, for every layer that reads them after it (a residual Add...)."""
    out.mask = query_mask
    if layer.keras_major >= 3 and layer.class_name == "MultiHeadAttention" and (layer.release() or (3, 7)) >= (3, 7):
        layer.ends_masks = [t for t in dict.fromkeys((q, v, k)) if t.mask is not None]
    return out


@converter("MultiHeadAttention", mask="own")
def multi_head_attention_layer(layer: Layer) -> Tensor:
    q, v, k, key_given = _mha_inputs(layer)
    masks = _mha_masks(layer, q, v, k, key_given)
    heads = as_int(layer.get("num_heads"), "num_heads")
    key_dim = as_int(layer.get("key_dim"), "key_dim")
    value_dim = as_int(layer.get("value_dim") or key_dim, "value_dim")
    if heads <= 0 or key_dim <= 0 or value_dim <= 0:
        raise BadModelFile(f"{layer.describe()} has non-positive sizes")
    if k.shape[:-1] != v.shape[:-1] or q.rank != v.rank:
        raise layer.unsupported(f"query {q.shape}, key {k.shape} and value {v.shape} do not line up")
    if any(d is None for t in (q, k, v) for d in t.shape[-1:]):
        raise layer.unsupported("inputs with an unknown feature size")
    out_shape = layer.get("output_shape") or [q.shape[-1]]
    out_shape = as_int_tuple(out_shape, "output_shape")
    rank = q.rank + 1  # of the projected (batch, *positions, heads, size) tensors
    axes_cfg = layer.get("attention_axes")
    if axes_cfg is None:
        axes = tuple(range(1, rank - 2))
    else:
        axes = tuple(sorted({a if a >= 0 else rank - 1 + a for a in as_int_tuple(axes_cfg, "attention_axes")}))
    if not axes or any(not 1 <= a <= rank - 3 for a in axes):
        raise layer.unsupported(f"attention_axes {axes_cfg!r} for inputs of rank {q.rank}")
    causal = _causal(layer)
    if causal and axes != (1,):
        raise layer.unsupported("use_causal_mask with attention over axes other than axis 1")
    use_bias = bool(layer.get("use_bias", True))
    shapes = [
        (q.shape[-1], heads, key_dim),
        (k.shape[-1], heads, key_dim),
        (v.shape[-1], heads, value_dim),
        (heads, value_dim) + out_shape,
    ]
    bias_shapes = [(heads, key_dim), (heads, key_dim), (heads, value_dim), out_shape]
    wanted = [s for pair in zip(shapes, bias_shapes) for s in pair] if use_bias else shapes
    weights = layer.expect_weights(*wanted)
    kernels = weights[0::2] if use_bias else weights
    biases = weights[1::2] if use_bias else [None] * 4

    def flat(array: np.ndarray | None, rows: int | None) -> np.ndarray | None:
        if array is None:
            return None
        return array.reshape(rows, -1) if rows is not None else array.reshape(-1)

    def project(x: Tensor, i: int, size: int) -> Tensor:
        kernel, bias = flat(kernels[i], x.shape[-1]), flat(biases[i], None)
        return layer.call(mha_project, x, kernel, bias, shape=x.shape[:-1] + (heads, size), heads=(heads, size))

    if any(m is not None for m in masks) and (q.rank != 3 or axes != (1,)):
        raise layer.unsupported("masks with attention over other than the steps of (batch, steps, features)")
    qp, kp, vp = project(q, 0, key_dim), project(k, 1, key_dim), project(v, 2, value_dim)
    scale = 1.0 / float(np.sqrt(float(key_dim)))
    if any(m is not None for m in masks):
        o = _masked_attention(layer, qp, kp, vp, masks, scale)
    else:
        shape = qp.shape[:-1] + (value_dim,)
        o = layer.call(mha_attend, qp, kp, vp, shape=shape, axes=axes, scale=scale, causal=causal)
    kernel, bias = flat(kernels[3], heads * value_dim), flat(biases[3], None)
    out = layer.call(mha_output, o, kernel, bias, shape=q.shape[:-1] + out_shape, out_shape=out_shape)
    return _end_masks(layer, q, v, k, out, q.mask)


@converter("GroupedQueryAttention", "GroupQueryAttention", mask="own")
def group_query_attention_layer(layer: Layer) -> Tensor:
    """Keras 3's GroupQueryAttention: MultiHeadAttention whose key/value projections have fewer
    heads, each repeated for a group of query heads (Keras's ops.repeat on the head axis)."""
    q, v, k, key_given = _mha_inputs(layer)
    masks = _mha_masks(layer, q, v, k, key_given)
    head_dim = as_int(layer.get("head_dim"), "head_dim")
    q_heads = as_int(layer.get("num_query_heads"), "num_query_heads")
    kv_heads = as_int(layer.get("num_key_value_heads"), "num_key_value_heads")
    if min(head_dim, q_heads, kv_heads) <= 0 or q_heads % kv_heads:
        raise BadModelFile(f"{layer.describe()} has {q_heads} query heads for {kv_heads} key/value heads")
    if not (q.rank == k.rank == v.rank == 3) or k.shape[:-1] != v.shape[:-1]:
        raise layer.unsupported(
            f"query {q.shape}, key {k.shape}, value {v.shape} (Keras takes (batch, time, features))"
        )
    if any(t.shape[-1] is None for t in (q, k, v)):
        raise layer.unsupported("inputs with an unknown feature size")
    features = q.shape[-1]
    use_bias = bool(layer.get("use_bias", True))
    shapes = [(features, q_heads, head_dim), (k.shape[-1], kv_heads, head_dim), (v.shape[-1], kv_heads, head_dim)]
    shapes.append((q_heads, head_dim, features))
    bias_shapes = [(q_heads, head_dim), (kv_heads, head_dim), (kv_heads, head_dim), (features,)]
    wanted = [s for pair in zip(shapes, bias_shapes) for s in pair] if use_bias else shapes
    weights = layer.expect_weights(*wanted)
    # As 2-D matrices: (features, heads * head_dim) for the projections, (heads * head_dim, features) out.
    kernels = [
        w.reshape(-1, w.shape[-1] if i == 3 else w.shape[1] * head_dim) for i, w in enumerate(weights[:: 1 + use_bias])
    ]
    biases = [b.reshape(-1) for b in weights[1::2]] if use_bias else [None] * 4

    def project(x: Tensor, i: int, heads: int) -> Tensor:
        shape = x.shape[:-1] + (heads, head_dim)
        return layer.call(mha_project, x, kernels[i], biases[i], shape=shape, heads=(heads, head_dim))

    qp, kp, vp = project(q, 0, q_heads), project(k, 1, kv_heads), project(v, 2, kv_heads)
    if q_heads != kv_heads:
        repeats = q_heads // kv_heads
        kp = layer.call(repeat_heads, kp, shape=kp.shape[:-2] + (q_heads, head_dim), repeats=repeats)
        vp = layer.call(repeat_heads, vp, shape=vp.shape[:-2] + (q_heads, head_dim), repeats=repeats)
    scale = 1.0 / float(np.sqrt(float(head_dim)))
    if any(m is not None for m in masks):
        o = _masked_attention(layer, qp, kp, vp, masks, scale)
    else:
        o = layer.call(mha_attend, qp, kp, vp, shape=qp.shape, axes=(1,), scale=scale, causal=_causal(layer))
    out = layer.call(mha_output, o, kernels[3], biases[3], shape=q.shape, out_shape=(features,))
    return _end_masks(layer, q, v, k, out, q.mask)


def _attention_inputs(layer: Layer) -> tuple[Tensor, Tensor, Tensor]:
    _refuse_scores(layer)
    xs = layer.inputs
    if len(xs) not in (2, 3):
        raise BadModelFile(f"{layer.describe()} needs [query, value] or [query, value, key], got {len(xs)} tensors")
    q, v = xs[0], xs[1]
    k = xs[2] if len(xs) == 3 else v
    if q.rank < 3 or q.rank != v.rank or k.shape[:-1] != v.shape[:-1]:
        raise layer.unsupported(f"query {q.shape}, value {v.shape}, key {k.shape} do not line up")
    if q.shape[-1] != k.shape[-1]:
        raise BadModelFile(f"{layer.describe()}: query and key feature sizes differ")
    return q, v, k


@converter("Attention", mask="own")
def attention_layer(layer: Layer) -> Tensor:
    q, v, k = _attention_inputs(layer)
    mode = layer.get("score_mode", "dot")
    use_scale = bool(layer.get("use_scale", False))
    if mode not in ("dot", "concat"):
        raise layer.unsupported(f"score_mode {str(mode)[:20]!r}")
    weights = layer.expect_weights(*([()] * (use_scale + (mode == "concat"))))
    scale = weights.pop(0) if use_scale else None
    shape = q.shape[:-1] + (k.shape[-2],)
    if mode == "dot":
        s = layer.call(dot_scores, q, k, scale, shape=shape)
    else:
        s = layer.call(concat_scores, q, k, scale, weights.pop(0), shape=shape)
    return _attend(layer, q, v, s)


def _attend(layer: Layer, q: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Softmax over the scores, then the values; with Keras's masks [query, value(, key)]: the call's
    `mask=` argument, else the inputs' own masks (the key's is never read)."""
    given = layer.kwargs.get("mask")
    masks = list(given) if isinstance(given, (list, tuple)) else [t.mask for t in layer.inputs]
    if (given is not None and not isinstance(given, (list, tuple))) or len(masks) not in (2, 3):
        raise layer.unsupported(f"a mask= call argument that is not a list of 2 or 3: {str(given)[:40]}")
    q_mask, v_mask = masks[0], masks[1]
    shape = q.shape[:-1] + v.shape[-1:]
    if q_mask is None and v_mask is None:
        return layer.call(attend, s, v, shape=shape, causal=_causal(layer))
    for m, t, what in ((q_mask, q, "query"), (v_mask, v, "value")):
        if m is not None and (not isinstance(m, Tensor) or m.shape != t.shape[:-1] or m.dtype != "bool" or t.rank != 3):
            raise layer.unsupported(f"a {what} mask {getattr(m, 'shape', m)} for a {what} of shape {t.shape}")
    out = layer.call(attend_masked, s, v, v_mask, q_mask, shape=shape, causal=_causal(layer))
    out.mask = q_mask
    return out


@converter("AdditiveAttention", mask="own")
def additive_attention_layer(layer: Layer) -> Tensor:
    q, v, k = _attention_inputs(layer)
    use_scale = bool(layer.get("use_scale", True))
    weights = layer.expect_weights(*([(q.shape[-1],)] if use_scale else []))
    scale = weights[0] if use_scale else None
    s = layer.call(additive_scores, q, k, scale, shape=q.shape[:-1] + (k.shape[-2],))
    return _attend(layer, q, v, s)


# ----------------------------------------------------------------------------- EinsumDense
def _spec(layer: Layer, text: Any) -> str:
    if not isinstance(text, str) or not text or any(c not in string.ascii_letters for c in text):
        raise layer.unsupported(f"einsum equation part {str(text)[:30]!r}")
    if len(set(text)) != len(text):
        raise layer.unsupported("an einsum equation with a repeated letter in one operand")
    return text


def parse_einsum_dense(layer: Layer, equation: Any, rank: int) -> tuple[str, str, str]:
    """(input, kernel, output) letter specs of an EinsumDense equation, "..." expanded."""
    if not isinstance(equation, str) or equation.count("->") != 1 or equation.count(",") != 1:
        raise layer.unsupported(f"einsum equation {str(equation)[:40]!r}")
    left, out = equation.replace(" ", "").split("->")
    inp, ker = left.split(",")
    if "..." in inp or "..." in out:
        if not (inp.startswith("...") and out.startswith("...") and "..." not in ker):
            raise layer.unsupported(f"einsum equation {equation[:40]!r} (only a leading ... is supported)")
        used = set(inp + ker + out)
        spare = [c for c in string.ascii_letters if c not in used]
        extra = rank - (len(inp) - 3)
        if extra < 1:
            raise BadModelFile(f"{layer.describe()}: equation {equation[:40]!r} does not fit rank {rank}")
        fill = "".join(spare[:extra])
        inp, out = fill + inp[3:], fill + out[3:]
    inp, ker, out = _spec(layer, inp), _spec(layer, ker), _spec(layer, out)
    if len(inp) != rank:
        raise BadModelFile(f"{layer.describe()}: equation {equation[:40]!r} does not fit rank {rank}")
    if out[0] != inp[0] or inp[0] in ker:
        raise layer.unsupported("an einsum equation that does not keep the batch axis first")
    if any(c not in inp and c not in ker for c in out) or any(c not in inp + out for c in ker):
        raise layer.unsupported(f"einsum equation {equation[:40]!r}")
    return inp, ker, out


@converter("EinsumDense", mask="drop")
def einsum_dense_layer(layer: Layer) -> Tensor:
    x = layer.input
    if layer.get("lora_rank"):
        raise layer.unsupported("LoRA-enabled EinsumDense")
    inp, ker, out = parse_einsum_dense(layer, layer.get("equation"), x.rank)
    # Letters are re-chosen by Konverter, so no text from the file reaches the generated code.
    letters = {c: string.ascii_letters[i] for i, c in enumerate(dict.fromkeys(inp + ker + out))}
    equation = "".join(letters[c] for c in inp) + "," + "".join(letters[c] for c in ker) + "->"
    equation += "".join(letters[c] for c in out)
    if quantization(layer) is not None:
        sizes = einsum_kernel_sizes(layer, x, (inp, ker, out))
        bias_shape = _bias_shape(layer, out, sizes)
        y = quantized_einsum_layer(layer, x, (inp, ker, out), sizes, bias_shape, equation)
        return apply_activation(layer, y, layer.get("activation"))
    sizes = {c: (None if i == 0 else x.shape[i - 1]) for i, c in enumerate(inp)}
    weights = list(layer.weights)
    if not weights:
        raise BadModelFile(f"{layer.describe()} has no kernel")
    kernel = weights[0]
    if kernel.ndim != len(ker):
        raise BadModelFile(f"{layer.describe()} kernel has shape {kernel.shape}, equation implies rank {len(ker)}")
    for c, d in zip(ker, kernel.shape):
        if sizes.get(c) is not None and sizes[c] != d:
            raise BadModelFile(f"{layer.describe()} kernel {kernel.shape} does not fit input {x.shape}")
        sizes[c] = d
    shape = tuple(sizes[c] for c in out[1:])
    bias_shape = _bias_shape(layer, out, sizes)
    bias = None
    if bias_shape is not None:
        (_, bias) = layer.expect_weights(kernel.shape, bias_shape)
    else:
        layer.expect_weights(kernel.shape)
    y = layer.call(einsum_dense, x, kernel, bias, shape=shape, equation=equation)
    return apply_activation(layer, y, layer.get("activation"))


def _bias_shape(layer: Layer, out: str, sizes: dict) -> tuple | None:
    """The bias's shape: the output's axes from the first bias axis on, 1 where no bias axis."""
    bias_axes = layer.get("bias_axes")
    if not bias_axes:
        return None
    _spec(layer, bias_axes)
    if any(c not in out for c in bias_axes):
        raise BadModelFile(f"{layer.describe()} has bias_axes outside the output")
    first = min(out.index(c) for c in bias_axes)
    return tuple(sizes[c] if c in bias_axes else 1 for c in out[first:])
