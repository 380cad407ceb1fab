"""Keras 3 `keras.ops` nodes: operations applied to symbolic tensors while building a model.

Unlike layers, ops see the whole batched tensor: their axes count the batch axis and their
shapes include it. Only ops that stay per-sample are converted; an op that would reduce,
move or reshape the batch axis (or mix samples, like matmul on a 2-D tensor) is refused.
Converters are registered as "ops.<Class>" (see graph.converter_key).

An operation is not a layer: Keras neither hands it a mask nor puts one on its result, so every
op drops masks. Keras 3.15 records the computation of a Functional model's masks as op nodes
(Masking: NotEqual then Any; Embedding(mask_zero): NotEqual; merges: LogicalOr, OnesLike,
Concatenate...) whose boolean result reaches the mask-aware layers as their `mask=` argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BadModelFile
from . import activations
from .base import Layer, Tensor, as_int, as_int_tuple, converter
from .merge import broadcast_shapes, concatenate


def op_add(a, b):
    return a + b


def op_subtract(a, b):
    return a - b


def op_multiply(a, b):
    return a * b


def op_divide(a, b):
    return a / b


def op_maximum(a, b):
    return np.maximum(a, b)


def op_minimum(a, b):
    return np.minimum(a, b)


def op_power(a, b):
    return np.power(a, b)


def op_absolute(x):
    return np.abs(x)


def op_negative(x):
    return -x


def op_log(x):
    return np.log(x)


def op_sqrt(x):
    return np.sqrt(x)


def op_square(x):
    return np.square(x)


def op_matmul(a, b):
    return np.matmul(a, b)


def op_reshape(x, shape):
    return x.reshape((x.shape[0],) + shape)


def op_transpose(x, axes):
    return np.transpose(x, axes)


def op_expand_dims(x, axis):
    return np.expand_dims(x, axis)


def op_squeeze(x, axis):
    return np.squeeze(x, axis=axis)


def op_mean(x, axis, keepdims):
    return np.mean(x, axis=axis, keepdims=keepdims)


def op_sum(x, axis, keepdims):
    return np.sum(x, axis=axis, keepdims=keepdims)


def op_max(x, axis, keepdims):
    return np.max(x, axis=axis, keepdims=keepdims)


def op_min(x, axis, keepdims):
    return np.min(x, axis=axis, keepdims=keepdims)


def op_get_item(x, key):
    # key: an int (index), a (start, stop, step) triple (a slice) or None (a new axis) per entry.
    return x[tuple(k if k is None or isinstance(k, int) else slice(*k) for k in key)]


def op_stack(xs, axis):
    return np.stack(xs, axis=axis)


BINARY = {
    "Add": op_add,
    "Subtract": op_subtract,
    "Multiply": op_multiply,
    "Divide": op_divide,
    "TrueDivide": op_divide,
    "Maximum": op_maximum,
    "Minimum": op_minimum,
    "Power": op_power,
}
UNARY = {
    "Absolute": op_absolute,
    "Abs": op_absolute,
    "Negative": op_negative,
    "Log": op_log,
    "Sqrt": op_sqrt,
    "Square": op_square,
}
REDUCE = {"Mean": op_mean, "Sum": op_sum, "Max": op_max, "Min": op_min}


def _operand(layer: Layer, value: Any, rank: int) -> tuple[Any, tuple]:
    """A tensor (its sample shape) or a numeric constant that broadcasts per sample."""
    if isinstance(value, Tensor):
        if value.rank != rank:
            raise layer.unsupported("operands of different ranks would broadcast across the batch axis")
        return value, value.shape
    if isinstance(value, bool) or value is None:
        raise BadModelFile(f"{layer.describe()} has a non-numeric operand")
    if isinstance(value, (int, float)):
        return float(value), ()
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadModelFile(f"{layer.describe()} has a non-numeric operand") from None
    if array.ndim >= rank:
        raise layer.unsupported("a constant operand that spans the batch axis")
    return array, array.shape


def _ops_args(layer: Layer, count: int) -> list:
    args = list(layer.args)
    if len(args) != count or layer.kwargs:
        raise BadModelFile(f"{layer.describe()} expects {count} positional arguments")
    return args


@converter(*(f"ops.{name}" for name in BINARY), mask="drop")
def binary_op(layer: Layer) -> Tensor:
    return _binary(layer, BINARY[layer.class_name[4:]], "float32")


def _binary(layer: Layer, fn, dtype: str) -> Tensor:
    a, b = _ops_args(layer, 2)
    tensors = [v for v in (a, b) if isinstance(v, Tensor)]
    if not tensors:
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    rank = tensors[0].rank
    (a, sa), (b, sb) = _operand(layer, a, rank), _operand(layer, b, rank)
    shape = broadcast_shapes(layer, [sa, sb])
    return layer.call(fn, a, b, shape=shape, dtype=dtype)


@converter(*(f"ops.{name}" for name in UNARY), mask="drop")
def unary_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    if not isinstance(x, Tensor):
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    return layer.call(UNARY[layer.class_name[4:]], x, shape=x.shape)


# keras.ops activation nodes -> the activation (konverter.layers.activations) computing them; their
# keyword arguments (alpha, negative_slope, threshold, approximate, axis...) come from the node's config.
ACTIVATION_OPS = {
    "Relu": "relu",
    "Relu6": "relu6",
    "Sigmoid": "sigmoid",
    "SparseSigmoid": "sparse_sigmoid",
    "Softplus": "softplus",
    "Softsign": "softsign",
    "SoftShrink": "soft_shrink",
    "SparsePlus": "sparse_plus",
    "Silu": "silu",
    "Squareplus": "squareplus",
    "LogSigmoid": "log_sigmoid",
    "LeakyRelu": "leaky_relu",
    "HardSigmoid": "hard_sigmoid",
    "HardSilu": "hard_silu",
    "Elu": "elu",
    "Selu": "selu",
    "Gelu": "gelu",
    "Celu": "celu",
    "Glu": "glu",
    "TanhShrink": "tanh_shrink",
    "HardTanh": "hard_tanh",
    "HardShrink": "hard_shrink",
    "Threshold": "threshold",
    "Softmax": "softmax",
    "LogSoftmax": "log_softmax",
    "Sparsemax": "sparsemax",
    "Tanh": "tanh",
    "Exp": "exponential",
    "Mish": "mish",  # keras.src.activations' operation, like ReLU below
}


@converter(*(f"ops.{name}" for name in ACTIVATION_OPS), "ops.ReLU", mask="drop")
def activation_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    if not isinstance(x, Tensor):
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    cls = layer.class_name[4:]
    name = ACTIVATION_OPS.get(cls, "relu")
    # The node's config holds its name and the function's keyword arguments; anything else is an
    # argument of a Keras version that Konverter does not know.
    known = {"name", *activations.activation_options(name)}
    if cls == "ReLU":  # keras.activations.relu(x, negative_slope, max_value, threshold)
        known |= {"negative_slope", "max_value", "threshold"}
    unknown = sorted(k for k in layer.config if k not in known)
    if unknown:
        raise layer.unsupported(f"argument {str(unknown[0])[:30]!r}")
    if cls == "ReLU":
        return activations.record_relu(layer, x)
    axis = -1
    if "axis" in known:
        axis = _activation_axis(layer, x, layer.get("axis", -1), multiple=name in ("softmax", "log_softmax"))
    return activations.record_activation(layer, x, name, layer.config, axis=axis)


def _activation_axis(layer: Layer, x: Tensor, value: Any, multiple: bool) -> Any:
    """A softmax-like op's axis (counting the batch axis): an int, or a tuple where Keras allows one."""
    if value is None:
        raise layer.unsupported("an activation over every axis, the batch axis included")
    if isinstance(value, list) and multiple:
        axes = tuple(sorted({layer.axis(a, x.rank) for a in value}))
    else:
        axes = (layer.axis(value, x.rank),)
    if 0 in axes:
        raise layer.unsupported("an activation over the batch axis")
    return axes[0] if len(axes) == 1 else axes


def _reduce_axes(layer: Layer, x: Tensor, value: Any) -> tuple:
    if value is None:
        raise layer.unsupported("a reduction over every axis, the batch axis included")
    axes = tuple(sorted({layer.axis(a, x.rank) for a in (value if isinstance(value, list) else [value])}))
    if 0 in axes:
        raise layer.unsupported("a reduction over the batch axis")
    return axes


@converter(*(f"ops.{name}" for name in REDUCE), mask="drop")
def reduce_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    if layer.get("initial") is not None:
        raise layer.unsupported("max/min with an initial value")
    axes = _reduce_axes(layer, x, layer.get("axis"))
    keepdims = bool(layer.get("keepdims", False))
    shape = tuple(1 if i + 1 in axes else d for i, d in enumerate(x.shape) if keepdims or i + 1 not in axes)
    return layer.call(REDUCE[layer.class_name[4:]], x, shape=shape, axis=axes, keepdims=keepdims)


@converter("ops.Matmul", mask="drop")
def matmul_op(layer: Layer) -> Tensor:
    a, b = _ops_args(layer, 2)
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise layer.unsupported("matmul with a constant operand")
    if a.rank < 3 or b.rank < 3:
        raise layer.unsupported("matmul of a 2-D tensor, which would mix the samples of a batch")
    if a.shape[-1] is not None and b.shape[-2] is not None and a.shape[-1] != b.shape[-2]:
        raise BadModelFile(f"{layer.describe()} multiplies mismatched shapes {a.shape} and {b.shape}")
    lead = broadcast_shapes(layer, [a.shape[:-2], b.shape[:-2]])
    return layer.call(op_matmul, a, b, shape=lead + (a.shape[-2], b.shape[-1]))


@converter("ops.Reshape", mask="drop")
def reshape_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    new = layer.get("newshape", layer.get("new_shape"))
    if not isinstance(new, list) or not new or new[0] not in (-1, None):
        raise layer.unsupported(f"reshape to {str(new)[:40]}, which does not keep the batch axis first")
    target = as_int_tuple(new[1:], "reshape newshape")
    if any(d <= 0 for d in target):
        raise layer.unsupported("reshape with an inferred (-1) dimension besides the batch")
    size = None if None in x.shape else int(np.prod(x.shape, dtype=np.int64))
    if size is not None and size != int(np.prod(target, dtype=np.int64)):
        raise BadModelFile(f"{layer.describe()} cannot reshape {x.shape} into {target}")
    return layer.call(op_reshape, x, target, shape=target, dtype=x.dtype)  # positional: `shape=` is the result's


@converter("ops.Transpose", mask="drop")
def transpose_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    axes = layer.get("axes")
    if axes is None:
        raise layer.unsupported("transpose without axes, which moves the batch axis")
    axes = tuple(layer.axis(a, x.rank) for a in as_int_tuple(axes, "transpose axes"))
    if sorted(axes) != list(range(x.rank)) or axes[0] != 0:
        raise layer.unsupported(f"transpose with axes {axes}, which moves the batch axis")
    return layer.call(op_transpose, x, shape=tuple(x.shape[a - 1] for a in axes[1:]), dtype=x.dtype, axes=axes)


@converter("ops.ExpandDims", mask="drop")
def expand_dims_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    axis = layer.axis(as_int(layer.get("axis"), "expand_dims axis"), x.rank + 1)
    if axis == 0:
        raise layer.unsupported("expand_dims in front of the batch axis")
    shape = x.shape[: axis - 1] + (1,) + x.shape[axis - 1 :]
    return layer.call(op_expand_dims, x, shape=shape, dtype=x.dtype, axis=axis)


@converter("ops.Squeeze", mask="drop")
def squeeze_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    axes = _reduce_axes(layer, x, layer.get("axis"))
    if any(x.shape[a - 1] != 1 for a in axes):
        raise BadModelFile(f"{layer.describe()} squeezes an axis whose size is not 1")
    shape = tuple(d for i, d in enumerate(x.shape) if i + 1 not in axes)
    return layer.call(op_squeeze, x, shape=shape, dtype=x.dtype, axis=axes)


@converter("ops.Concatenate", mask="drop")
def concatenate_op(layer: Layer) -> Tensor:
    (xs,) = _ops_args(layer, 1)
    if not isinstance(xs, list) or not xs or not all(isinstance(t, Tensor) for t in xs):
        raise layer.unsupported("concatenate of anything but a list of tensors")
    rank = xs[0].rank
    if any(t.rank != rank for t in xs):
        raise BadModelFile(f"{layer.describe()} concatenates tensors of different ranks")
    axis = layer.axis(layer.get("axis", 0), rank)
    if axis == 0:
        raise layer.unsupported("concatenation along the batch axis")
    sizes = [t.shape[axis - 1] for t in xs]
    shape = list(xs[0].shape)
    shape[axis - 1] = None if None in sizes else sum(sizes)
    return layer.call(concatenate, xs, shape=tuple(shape), dtype=_common_dtype(layer, xs), axis=axis)


def _slice_entry(layer: Layer, entry: Any) -> Any:
    """One entry of a GetItem key: int, (start, stop, step), "...", None (new axis) or a refusal."""
    if entry is None or (isinstance(entry, int) and not isinstance(entry, bool)):
        return entry
    if isinstance(entry, dict) and entry.get("class_name") == "__ellipsis__":
        return "..."
    if isinstance(entry, dict) and entry.get("class_name") == "__slice__":
        cfg = entry.get("config") or {}
        parts = tuple(cfg.get(k) for k in ("start", "stop", "step"))
        if all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts) and parts[2] != 0:
            return parts
    raise layer.unsupported(f"indexing with {str(entry)[:40]}")


@converter("ops.GetItem", mask="drop")
def get_item_op(layer: Layer) -> Tensor:
    x, key = _ops_args(layer, 2)
    if not isinstance(x, Tensor):
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    entries = [_slice_entry(layer, e) for e in (key if isinstance(key, list) else [key])]
    if entries.count("...") > 1:
        raise BadModelFile(f"{layer.describe()} has two ellipses")
    used = sum(1 for e in entries if e is not None and e != "...")
    if used > x.rank:
        raise BadModelFile(f"{layer.describe()} indexes {used} axes of a rank-{x.rank} tensor")
    full = (None, None, None)
    if "..." in entries:
        i = entries.index("...")
        entries = entries[:i] + [full] * (x.rank - used) + entries[i + 1 :]
    else:
        entries += [full] * (x.rank - used)
    if entries[0] != full:
        raise layer.unsupported("indexing that selects from, or adds an axis before, the batch axis")
    shape = []
    sizes = iter(x.shape)
    for entry in entries[1:]:
        if entry is None:
            shape.append(1)
            continue
        size = next(sizes)
        if isinstance(entry, int):
            if size is not None and not -size <= entry < size:
                raise BadModelFile(f"{layer.describe()} index {entry} is out of range for size {size}")
        elif size is not None:
            shape.append(len(range(*slice(*entry).indices(size))))
        else:
            shape.append(None)
    return layer.call(op_get_item, x, shape=tuple(shape), dtype=x.dtype, key=tuple(entries))


@converter("ops.Stack", mask="drop")
def stack_op(layer: Layer) -> Tensor:
    (xs,) = _ops_args(layer, 1)
    if not isinstance(xs, list) or not xs or not all(isinstance(t, Tensor) for t in xs):
        raise layer.unsupported("stack of anything but a list of tensors")
    if any(t.shape != xs[0].shape for t in xs):
        raise BadModelFile(f"{layer.describe()} stacks tensors of different shapes")
    axis = layer.axis(layer.get("axis", 0), xs[0].rank + 1)
    if axis == 0:
        raise layer.unsupported("stacking along the batch axis")
    shape = xs[0].shape[: axis - 1] + (len(xs),) + xs[0].shape[axis - 1 :]
    return layer.call(op_stack, xs, shape=shape, dtype=_common_dtype(layer, xs), axis=axis)


def _common_dtype(layer: Layer, xs: list) -> str:
    """The dtype of tensors joined into one (concatenate, stack): theirs when they agree."""
    dtypes = {t.dtype for t in xs}
    return dtypes.pop() if len(dtypes) == 1 else "float32"


# ----------------------------------------------------------------------------- boolean ops (masks)


def op_not_equal(a, b):
    return a != b


def op_equal(a, b):
    return a == b


def op_logical_and(a, b):
    return np.logical_and(a, b)


def op_logical_or(a, b):
    return np.logical_or(a, b)


def op_logical_not(x):
    return np.logical_not(x)


def op_any(x, axis, keepdims):
    return np.any(x, axis=axis, keepdims=keepdims)


def op_all(x, axis, keepdims):
    return np.all(x, axis=axis, keepdims=keepdims)


def op_full_like(x, value, kind):
    # ones_like / zeros_like: a new array of x's shape (the batch's too) holding `value`.
    return np.full(x.shape, value, dtype=kind)


BOOLEAN_BINARY = {
    "NotEqual": op_not_equal,
    "Equal": op_equal,
    "LogicalAnd": op_logical_and,
    "LogicalOr": op_logical_or,
}
BOOLEAN_REDUCE = {"Any": op_any, "All": op_all}
# The dtypes a ones_like/zeros_like node may ask for, by Keras's name (NumPy's is the same).
LIKE_DTYPES = ("bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")


@converter(*(f"ops.{name}" for name in BOOLEAN_BINARY), mask="drop")
def boolean_binary_op(layer: Layer) -> Tensor:
    return _binary(layer, BOOLEAN_BINARY[layer.class_name[4:]], "bool")


@converter("ops.LogicalNot", mask="drop")
def logical_not_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    if not isinstance(x, Tensor):
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    return layer.call(op_logical_not, x, shape=x.shape, dtype="bool")


@converter(*(f"ops.{name}" for name in BOOLEAN_REDUCE), mask="drop")
def boolean_reduce_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    axes = _reduce_axes(layer, x, layer.get("axis"))
    keepdims = bool(layer.get("keepdims", False))
    shape = tuple(1 if i + 1 in axes else d for i, d in enumerate(x.shape) if keepdims or i + 1 not in axes)
    fn = BOOLEAN_REDUCE[layer.class_name[4:]]
    return layer.call(fn, x, shape=shape, dtype="bool", axis=axes, keepdims=keepdims)


@converter("ops.OnesLike", "ops.ZerosLike", mask="drop")
def full_like_op(layer: Layer) -> Tensor:
    (x,) = _ops_args(layer, 1)
    if not isinstance(x, Tensor):
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    dtype = layer.get("dtype") or x.dtype
    if dtype not in LIKE_DTYPES:
        raise layer.unsupported(f"dtype {str(dtype)[:20]!r}")
    value = 1 if layer.class_name == "ops.OnesLike" else 0
    return layer.call(op_full_like, x, shape=x.shape, dtype=dtype, value=value, kind=dtype)


def op_cast(x, kind):
    return x.astype(kind)


@converter("ops.ConvertToTensor", mask="drop")
def convert_to_tensor_op(layer: Layer) -> Tensor:
    """convert_to_tensor (Keras 3's Attention hands its query mask on through one): the tensor
    itself, or cast to the dtype the node names."""
    (x,) = _ops_args(layer, 1)
    if not isinstance(x, Tensor):
        raise BadModelFile(f"{layer.describe()} has no tensor operand")
    if layer.get("sparse") or layer.get("ragged"):
        raise layer.unsupported("a sparse or ragged tensor")
    dtype = layer.get("dtype") or x.dtype
    if dtype == x.dtype:
        return x
    if dtype not in LIKE_DTYPES:
        raise layer.unsupported(f"dtype {str(dtype)[:20]!r}")
    return layer.call(op_cast, x, shape=x.shape, dtype=dtype, kind=dtype)
