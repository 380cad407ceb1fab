"""Keras 3 quantized layers (`model.quantize("int8")`, `("int4")`) and the dtype policies Konverter refuses.

Keras quantizes Dense, EinsumDense and Embedding (keras/src/layers/core/dense.py, einsum_dense.py,
embedding.py; keras/src/quantizers/quantizers.py). The generated file stores their weights as Keras
does (int8; int4 packed two per byte) and repeats Keras's inference arithmetic step by step, in the
same float32 operations:

- int8 kernel, per output channel scale. With an activation quantizer (the int8 default) each input
  row is quantized too: scale = high / (max|x| + epsilon), q = clip(round_half_even(x * scale)),
  the integer product (int32 in Keras; here float32 or float64, chosen at conversion so that every
  partial sum is exact) divided by (input scale * kernel scale). Without one: x @ kernel / scale.
- int4 per channel (`block_size` -1): the same with the unpacked kernel. Dense multiplies integers,
  EinsumDense first divides the kernel by its scale (Keras's two layers differ here).
- int4 sub-channel (`block_size` > 0, Keras 3.14+'s default of 128): asymmetric groups of rows,
  kernel = (q - zero) * scale, then a float product; activations are never quantized.
- Embedding: the gathered int8/int4 rows divided by their row's scale, or dequantized per group.

Refused, by name and mode: float8, GPTQ and AWQ, int4 files from Keras before 3.14 (kernel packed
along the input axis, another layout), quantization on top of a non-float32 policy, custom
quantizers. Non-float32 compute policies (mixed_float16, mixed_bfloat16, float16, bfloat16,
float64) are refused for every layer: Keras rounds each step to that dtype, Konverter computes in
float32, and the results would differ by more than Konverter's tolerance (float64: values that
overflow float32 become inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ..errors import BadModelFile
from ..h5reader.text import label
from .base import Layer, Tensor, as_int, kernel
from .embedding import embedding_lookup

QUANTIZABLE = ("Dense", "EinsumDense", "Embedding")
# Float compute dtypes other than float32, per policy name: refused (see the module docstring).
OTHER_PRECISION = {
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float64": "float64",
    "double": "float64",
    "half": "float16",
}
DEFAULT_INPUTS = (-127, 127, 1e-7)  # Keras's AbsMaxQuantizer(): value_range (-127, 127), backend.epsilon()
EXACT_FLOAT32 = 2**24  # integer sums below this are exact in float32
INT32_LIMIT = 2**31  # Keras accumulates in int32: beyond this it wraps, which Konverter does not imitate


@dataclass(frozen=True)
class Quantization:
    """How one layer's weights are quantized, from its dtype policy and `quantization_config`."""

    mode: str  # "int8" or "int4"
    block_size: Optional[int]  # int4: rows per group (asymmetric, with zero points); None: one scale per channel
    inputs: Optional[tuple]  # the activation quantizer's (low, high, epsilon); None: weights only


# ----------------------------------------------------------------------------- NumPy functions
def unpack_int4(packed, size):
    # Keras's pack_int4 along the last axis: two signed 4-bit values per byte, the first in the low
    # nibble; `size` drops the padding nibble of an odd length.
    u = packed.view(np.uint8)
    nibbles = np.stack((u & 15, u >> 4), axis=-1).reshape(u.shape[:-1] + (2 * u.shape[-1],))[..., :size]
    return (nibbles.astype(np.int8) ^ np.int8(8)) - np.int8(8)


def abs_max_quantize(x, axis, low, high, epsilon):
    # Keras's AbsMaxQuantizer, float32 step by step: scale = high / (max|x| + epsilon) over `axis`,
    # then round half to even (tf.round, np.round) and clip. Returns integer values as floats.
    scale = np.float32(high) / (np.max(np.abs(x), axis=axis, keepdims=True) + np.float32(epsilon))
    return np.clip(np.round(x * scale), low, high), scale


def dequantize_groups(q, scale, zero, groups, axis):
    # Keras's dequantize_with_sz_map: each position along `axis` takes its group's zero point and
    # scale; (q - zero) * scale in float32.
    return (q - np.take(zero, groups, axis=axis).astype(np.float32)) * np.take(scale, groups, axis=axis)


def align_scale(scale, reduced, order, new_axes):
    # An input scale (1 on the contracted axes) laid out like the einsum's output: the contracted axes
    # dropped, the rest in output order, 1 where the output has a kernel-only axis.
    return np.expand_dims(np.transpose(np.squeeze(scale, axis=reduced), order), new_axes)


@kernel(fresh=True, row_wise=True)
def quantized_dense(x, kernel, kernel_scale, bias, units, inputs, exact):
    # int8 Dense, or int4 per channel (`units`: unpack first). `inputs`: quantize each row too and
    # multiply integers exactly in the float dtype `exact` (Keras: int32), else a float product.
    if units:
        kernel = unpack_int4(kernel, units)
    if inputs is None:
        y = x @ kernel.astype(np.float32)
        y /= kernel_scale
    else:
        q, scale = abs_max_quantize(x, -1, *inputs)
        y = (q.astype(exact) @ kernel.astype(exact)).astype(np.float32, copy=False)
        y /= kernel_scale * scale
    if bias is not None:
        y += bias
    return y


@kernel(fresh=True, row_wise=True)
def grouped_dense(x, kernel, kernel_scale, kernel_zero, groups, bias):
    # int4 sub-channel Dense: the kernel dequantized per group of input rows, then a float product.
    q = unpack_int4(kernel, kernel_scale.shape[-1])
    y = x @ dequantize_groups(q, kernel_scale, kernel_zero, groups, 0)
    if bias is not None:
        y += bias
    return y


@kernel(fresh=True, row_wise=True)
def int8_einsum(x, kernel, kernel_scale, bias, equation, inputs, layout, exact):
    # int8 EinsumDense; `layout` = (contracted input axes, output order, kernel-only output axes).
    if inputs is None:
        y = np.einsum(equation, x, kernel.astype(np.float32), optimize=True)
        y /= kernel_scale
    else:
        q, scale = abs_max_quantize(x, layout[0], *inputs)
        y = np.einsum(equation, q.astype(exact), kernel.astype(exact), optimize=True).astype(np.float32, copy=False)
        y /= align_scale(scale, *layout) * kernel_scale
    if bias is not None:
        y += bias
    return y


@kernel(fresh=True, row_wise=True)
def int4_einsum(x, kernel, kernel_scale, bias, equation, kernel_shape, inputs, layout):
    # int4 per-channel EinsumDense: Keras flattens the kernel to (contracted, other) by a plain
    # reshape, dequantizes it (q / scale per column) and reshapes it back before a float einsum.
    w = (unpack_int4(kernel, kernel_scale.shape[-1]).astype(np.float32) / kernel_scale).reshape(kernel_shape)
    if inputs is None:
        y = np.einsum(equation, x, w, optimize=True)
    else:
        q, scale = abs_max_quantize(x, layout[0], *inputs)
        y = np.einsum(equation, q, w, optimize=True)
        y /= align_scale(scale, *layout)
    if bias is not None:
        y += bias
    return y


@kernel(fresh=True, row_wise=True)
def grouped_einsum(x, kernel, kernel_scale, kernel_zero, groups, bias, equation, kernel_shape):
    # int4 sub-channel EinsumDense: the flattened kernel dequantized per group of rows, reshaped back.
    q = unpack_int4(kernel, kernel_scale.shape[-1])
    w = dequantize_groups(q, kernel_scale, kernel_zero, groups, 0).reshape(kernel_shape)
    y = np.einsum(equation, x, w, optimize=True)
    if bias is not None:
        y += bias
    return y


@kernel(fresh=True)  # not declared row-wise, like embedding_lookup
def quantized_embedding(x, table, scale, size):
    # int8 rows (or int4 per channel, `size` = the unpacked width) divided by their row's scale.
    rows = embedding_lookup(x, table)
    if size:
        rows = unpack_int4(rows, size)
    return rows.astype(np.float32) / embedding_lookup(x, scale)[..., None]


@kernel(fresh=True)  # not declared row-wise, like embedding_lookup
def grouped_embedding(x, table, scale, zero, groups, size):
    # int4 sub-channel rows: each group of columns has its row's zero point and scale.
    rows = unpack_int4(embedding_lookup(x, table), size).astype(np.float32)
    return dequantize_groups(rows, embedding_lookup(x, scale), embedding_lookup(x, zero), groups, -1)


# ----------------------------------------------------------------------------- dtype policies
def _policy(value: Any) -> tuple[str, str]:
    """(quantization mode or "", the policy name it computes in) of a layer's `dtype` config entry.

    Forms: "float32"; "int8_from_float32"; Keras 3 {"class_name": "DTypePolicy", "config": {"name": ...}};
    tf.keras {"class_name": "Policy", ...}; Keras 3.4+ quantized {"config": {"mode": "int4/128", "source_name": ...}}.
    """
    if isinstance(value, dict):
        config = value.get("config") if isinstance(value.get("config"), dict) else {}
        if "mode" in config:
            return str(config.get("mode")), str(config.get("source_name") or "float32")
        value = config.get("name")
    if not isinstance(value, str):
        return "", "float32"
    mode, found, source = value.rpartition("_from_")
    return (mode, source) if found else ("", value)


def quantization_mode(config: dict) -> str:
    """The layer's quantization mode from its dtype policy ("int8", "int4/128", ...; "" for a float layer)."""
    return _policy(config.get("dtype"))[0]


def policy_refusal(class_name: str, config: dict) -> str:
    """Why a layer's dtype policy stops its conversion, judged from its config ("" when it does not)."""
    mode, compute = _policy(config.get("dtype"))
    if compute in OTHER_PRECISION:
        what = f"{label(mode, quote=False)} quantization on the {compute} policy" if mode else f"dtype policy {compute}"
        return f"{what} not supported: Keras computes in {OTHER_PRECISION[compute]}, Konverter in float32"
    found = _quantization(class_name, mode, compute, config) if mode else None
    return found if isinstance(found, str) else ""


def quantization(layer: Layer) -> Optional[Quantization]:
    """The layer's quantization (None for a float layer); refuses what Konverter does not compute."""
    mode, compute = _policy(layer.get("dtype"))
    found = _quantization(layer.class_name, mode, compute, layer.config) if mode else None
    if isinstance(found, str):
        raise layer.unsupported(found)
    return found


def _quantization(class_name: str, mode: str, compute: str, config: dict) -> Union[Quantization, str]:
    """The Quantization of a quantized policy, or why it is refused."""
    shown = label(mode, quote=False)
    base, _, block = mode.partition("/")
    if base in ("float8", "gptq", "awq"):
        return f"{shown} quantization not supported (only int8 and int4)"
    if base not in ("int8", "int4") or (base == "int8" and block):
        return f"quantization mode {shown} not supported"
    if class_name not in QUANTIZABLE:
        return f"{shown} quantization of a {class_name} layer not supported"
    if compute != "float32":
        return f"{shown} quantization on the {label(compute, quote=False)} policy not supported"
    if config.get("lora_rank"):
        return f"LoRA on an {base} quantized layer not supported"
    if base == "int4" and not block:
        return "int4 quantization written by Keras before 3.14 (kernel packed along its input axis) not supported"
    block_size = _block_size(block) if base == "int4" else None
    if isinstance(block_size, str):
        return block_size
    spec = config.get("quantization_config")
    if spec is None:  # files from before Keras 3.13: the defaults of the time
        return Quantization(base, block_size, DEFAULT_INPUTS if base == "int8" else None)
    expected = "Int8QuantizationConfig" if base == "int8" else "Int4QuantizationConfig"
    if not isinstance(spec, dict) or spec.get("class_name") != expected or not isinstance(spec.get("config"), dict):
        return f"{shown} quantization with a {label(str(_class(spec)), quote=False)} config not supported"
    settings = spec["config"]
    if base == "int4" and "block_size" in settings:  # Keras: the config's block size wins over the policy's
        block_size = _block_size(settings["block_size"])
        if isinstance(block_size, str):
            return block_size
    inputs = _inputs_quantizer(settings.get("activation_quantizer"))
    if isinstance(inputs, str):
        return inputs
    if block_size is not None and inputs is not None:
        return "int4 sub-channel quantization with an activation quantizer not supported (Keras refuses it too)"
    return Quantization(base, block_size, inputs)


def _class(value: Any) -> Any:
    return value.get("class_name") if isinstance(value, dict) else type(value).__name__


def _block_size(value: Any) -> Union[int, None, str]:
    """An int4 block size (from "int4/128" or a config): None for per-channel (-1 or None)."""
    if value is None:
        return None
    try:
        size = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        size = 0
    if size == -1:
        return None
    if size <= 0:
        return f"int4 block size {label(str(value)[:20], quote=False)} not supported"
    return size


def _inputs_quantizer(spec: Any) -> Union[tuple, None, str]:
    """(low, high, epsilon) of an AbsMaxQuantizer activation quantizer, None for none."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("class_name") != "AbsMaxQuantizer":
        return f"activation quantizer {label(str(_class(spec)), quote=False)} not supported"
    cfg = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    bounds = cfg.get("value_range", (-127, 127))
    epsilon = cfg.get("epsilon", 1e-7)
    ints = isinstance(bounds, (list, tuple)) and len(bounds) == 2
    ints = ints and all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)
    if cfg.get("output_dtype", "int8") != "int8" or not ints or not -128 <= bounds[0] < 0 < bounds[1] <= 127:
        return "activation quantizer with a value_range or output dtype other than int8's not supported"
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < 1:
        return "activation quantizer epsilon must be a small non-negative number"
    return (bounds[0], bounds[1], float(epsilon))


# ----------------------------------------------------------------------------- converters
def _keras_order(layer: Layer, has_bias: bool) -> list:
    """The weights in the .keras order (kernel, bias, scale, ...): Keras 3 .h5 files list the
    trainable bias first."""
    weights = list(layer.weights)
    if has_bias and len(weights) >= 2 and weights[0].dtype.kind == "f" and weights[1].dtype == np.int8:
        weights[0], weights[1] = weights[1], weights[0]
    return weights


def _int8(layer: Layer, array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype != np.int8:
        raise BadModelFile(f"{layer.describe()}: quantized {what} is {array.dtype}, not int8")
    return array


def _scale(layer: Layer, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind != "f":
        raise BadModelFile(f"{layer.describe()}: quantization scale is {array.dtype}, not a float array")
    return array.astype(np.float32)


def _groups(layer: Layer, g_idx: np.ndarray, count: int) -> np.ndarray:
    """Keras's g_idx (stored as floats, cast to int32 like Keras) as small group numbers."""
    groups = np.trunc(g_idx.astype(np.float64))  # Keras casts to int32: toward zero
    if not np.isfinite(groups).all() or (groups.size and (groups.min() < 0 or groups.max() >= count)):
        raise BadModelFile(f"{layer.describe()}: g_idx names groups outside 0..{count - 1}")
    return groups.astype(np.uint8 if count <= 256 else np.int32)


def _exact(layer: Layer, kernel_ints: np.ndarray, contracted: tuple, inputs: tuple) -> str:
    """The float dtype in which the integer product is exact: every partial sum is bounded by
    max|q| * sum|kernel| over the contracted axes."""
    bound = int(np.abs(kernel_ints.astype(np.int64)).sum(axis=contracted).max(initial=0)) * max(-inputs[0], inputs[1])
    if bound >= INT32_LIMIT:
        raise layer.unsupported("quantized products can exceed int32, where Keras's sums wrap around")
    return "float32" if bound < EXACT_FLOAT32 else "float64"


def _quantized_weights(layer: Layer, q: Quantization, has_bias: bool, shapes: dict, group_axis: int = 0) -> dict:
    """The layer's weights by name, in whatever order the file lists them, shapes checked.

    `shapes`: kernel, bias, scale (and for sub-channel int4: zero, g_idx) -> expected shape;
    `group_axis`: the axis of the zero points that counts the groups.
    """
    names = ["kernel"] + (["bias"] if has_bias else []) + ["scale"]
    if q.block_size is not None:
        names += ["zero", "g_idx"]
    layer.weights = _keras_order(layer, has_bias)
    found = dict(zip(names, layer.expect_weights(*[shapes[n] for n in names])))
    found["kernel"] = _int8(layer, found["kernel"], "kernel")
    found["scale"] = _scale(layer, found["scale"])
    if "zero" in found:
        found["zero"] = _int8(layer, found["zero"], "zero point")
        found["groups"] = _groups(layer, found.pop("g_idx"), shapes["zero"][group_axis])
    if has_bias:
        found["bias"] = found["bias"].astype(np.float32)
    return found


def quantized_dense_layer(layer: Layer, x: Tensor, units: int) -> Tensor:
    """A quantized Dense (its activation is applied by the caller)."""
    q = quantization(layer)
    features = x.shape[-1]
    packed = (units + 1) // 2 if q.mode == "int4" else units
    groups = math.ceil(features / q.block_size) if q.block_size else None
    has_bias = bool(layer.get("use_bias", True))
    shapes = {
        "kernel": (features, packed),
        "bias": (units,),
        "scale": (groups, units) if groups else (units,),
        "zero": (groups, units),
        "g_idx": (features,),
    }
    w = _quantized_weights(layer, q, has_bias, shapes)
    shape = x.shape[:-1] + (units,)
    bias = w.get("bias")
    if q.block_size is not None:
        return layer.call(grouped_dense, x, w["kernel"], w["scale"], w["zero"], w["groups"], bias, shape=shape)
    unpack = units if q.mode == "int4" else None
    exact = None
    if q.inputs is not None:
        ints = unpack_int4(w["kernel"], units) if unpack else w["kernel"]
        exact = _exact(layer, ints, (0,), q.inputs)
    return layer.call(
        quantized_dense, x, w["kernel"], w["scale"], bias, shape=shape, units=unpack, inputs=q.inputs, exact=exact
    )


def einsum_kernel_sizes(layer: Layer, x: Tensor, specs: tuple) -> dict:
    """Every einsum letter's size (None for the batch): from the input's shape and the config's
    `output_shape` (a quantized int4 kernel is stored flattened, so its shape does not say)."""
    inp, ker, out = specs
    sizes: dict = {c: (None if i == 0 else x.shape[i - 1]) for i, c in enumerate(inp)}
    wanted = layer.get("output_shape")
    wanted = [wanted] if isinstance(wanted, int) else wanted
    if not isinstance(wanted, (list, tuple)) or len(wanted) > len(out) - 1:
        raise BadModelFile(f"{layer.describe()} has an invalid output_shape")
    for c, d in zip(out[len(out) - len(wanted) :], wanted):
        if d is not None and sizes.get(c) is None:
            sizes[c] = as_int(d, "EinsumDense output_shape")
    for c in ker:
        if not isinstance(sizes.get(c), int) or sizes[c] <= 0:
            raise BadModelFile(f"{layer.describe()}: the size of kernel axis {c!r} is unknown")
    return sizes


def quantized_einsum_layer(
    layer: Layer, x: Tensor, specs: tuple, sizes: dict, bias_shape: Optional[tuple], equation: str
) -> Tensor:
    """A quantized EinsumDense (its activation is applied by the caller). `specs`: the (input, kernel,
    output) letters, `sizes` from `einsum_kernel_sizes`, `equation` the safe equation to record."""
    q = quantization(layer)
    inp, ker, out = specs
    kernel_shape = tuple(sizes[c] for c in ker)
    contracted = tuple(i for i, c in enumerate(ker) if c not in out)
    rows = math.prod(kernel_shape[i] for i in contracted)
    columns = math.prod(kernel_shape) // rows
    groups = math.ceil(rows / q.block_size) if q.block_size else None
    # Keras's int8 kernel scale: 1 on the contracted axes, laid out like the output.
    int8_scale = tuple(sizes[c] if c in ker else 1 for c in out)
    shapes = {
        "kernel": kernel_shape if q.mode == "int8" else (rows, (columns + 1) // 2),
        "bias": bias_shape,
        "scale": None if q.mode == "int8" else ((groups, columns) if groups else (columns,)),
        "zero": (groups, columns),
        "g_idx": (rows,),
    }
    w = _quantized_weights(layer, q, bias_shape is not None, shapes)
    kernel, scale, bias = w["kernel"], w["scale"], w.get("bias")
    shape = tuple(sizes[c] for c in out[1:])
    literals = {"equation": equation, "kernel_shape": kernel_shape}
    if q.block_size is not None:
        return layer.call(grouped_einsum, x, kernel, scale, w["zero"], w["groups"], bias, shape=shape, **literals)
    # The input scale's layout: contracted input axes dropped, the rest in output order, new axes added.
    reduced = tuple(i for i, c in enumerate(inp) if c not in out)
    kept = [c for c in inp if c in out]
    order = tuple(kept.index(c) for c in out if c in kept)
    new_axes = tuple(i for i, c in enumerate(out) if c not in inp)
    layout = (reduced, order, new_axes)
    if q.mode == "int4":
        return layer.call(int4_einsum, x, kernel, scale, bias, shape=shape, inputs=q.inputs, layout=layout, **literals)
    if [d for d in scale.shape if d != 1] != [d for d in int8_scale if d != 1]:
        raise BadModelFile(f"{layer.describe()}: kernel scale {scale.shape} does not fit the output {int8_scale}")
    exact = _exact(layer, kernel, contracted, q.inputs) if q.inputs is not None else None
    return layer.call(
        int8_einsum,
        x,
        kernel,
        scale.reshape(int8_scale),
        bias,
        shape=shape,
        equation=equation,
        inputs=q.inputs,
        layout=layout,
        exact=exact,
    )


def quantized_embedding_layer(layer: Layer, x: Tensor, rows: int, width: int) -> Tensor:
    """A quantized Embedding's lookup (the caller adds the mask)."""
    q = quantization(layer)
    packed = (width + 1) // 2 if q.mode == "int4" else width
    groups = math.ceil(width / q.block_size) if q.block_size else None
    shapes = {
        "kernel": (rows, packed),
        "scale": (rows, groups) if groups else (rows,),
        "zero": (rows, groups),
        "g_idx": (width,),
    }
    w = _quantized_weights(layer, q, False, shapes, group_axis=1)
    shape = x.shape + (width,)
    if q.block_size is not None:
        return layer.call(
            grouped_embedding, x, w["kernel"], w["scale"], w["zero"], w["groups"], shape=shape, size=width
        )
    size = width if q.mode == "int4" else None
    return layer.call(quantized_embedding, x, w["kernel"], w["scale"], shape=shape, size=size)
