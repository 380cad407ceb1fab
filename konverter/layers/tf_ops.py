"""tf.keras (Keras 2) TFOpLambda / SlicingOpLambda layers: TensorFlow functions applied to
symbolic tensors (`x + 1`, `tf.concat(...)`, `x[:, 0]`), stored by function name.

The simple ones are the Keras 3 `keras.ops` nodes under another name, so each is handed to the
converter in `ops.py` (same NumPy functions, same batch-axis rules). Nothing is evaluated:
the function name only selects one of the entries below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadModelFile
from .base import CONVERTERS, Layer, Tensor, converter

BINARY = {
    "__operators__.add": "Add",
    "math.add": "Add",
    "math.subtract": "Subtract",
    "math.multiply": "Multiply",
    "math.truediv": "Divide",
    "math.divide": "Divide",
    "math.maximum": "Maximum",
    "math.minimum": "Minimum",
    "math.pow": "Power",
}
UNARY = {
    "math.abs": "Absolute",
    "math.negative": "Negative",
    "math.exp": "Exp",
    "math.log": "Log",
    "math.sqrt": "Sqrt",
    "math.square": "Square",
    "math.tanh": "Tanh",
    "math.sigmoid": "Sigmoid",
    "nn.sigmoid": "Sigmoid",
    "nn.relu": "Relu",
}
REDUCE = {
    "math.reduce_mean": "Mean",
    "math.reduce_sum": "Sum",
    "math.reduce_max": "Max",
    "math.reduce_min": "Min",
}
OTHER = {
    "nn.softmax",
    "math.softmax",
    "concat",
    "stack",
    "reshape",
    "transpose",
    "compat.v1.transpose",
    "expand_dims",
    "squeeze",
    "compat.v1.squeeze",
    "linalg.matmul",
    "__operators__.getitem",
}
SUPPORTED = set(BINARY) | set(UNARY) | set(REDUCE) | OTHER


@dataclass(eq=False)
class _Delegated(Layer):
    """The TF op seen as a keras.ops node, still named after the TF function in messages."""

    label: str = ""

    def describe(self) -> str:
        return self.label


def _function(entry_config: dict) -> Any:
    return entry_config.get("function")


def refuses(entry: dict) -> str | None:
    """Config-level check run before conversion, so every unsupported function is named at once."""
    function = _function(entry.get("config") or {})
    if isinstance(function, str) and function in SUPPORTED:
        return None
    return f"TensorFlow function tf.{ascii(str(function))[1:-1][:40]} not supported"


@converter("TFOpLambda", "SlicingOpLambda", mask="drop")
def tf_op_layer(layer: Layer) -> Tensor:
    function = _function(layer.config)
    if not isinstance(function, str) or function not in SUPPORTED:
        raise layer.unsupported(refuses({"config": layer.config}) or "unknown function")
    layer.expect_weights()
    if len(layer.args) != 1:
        raise BadModelFile(f"{layer.describe()} has {len(layer.args)} positional inputs, expected 1")
    first = layer.args[0]
    kw = {k: v for k, v in layer.kwargs.items() if k != "name"}
    label = f"layer {layer.name!r} (tf.{ascii(function)[1:-1]})"

    def delegate(op: str, args: list, config: dict | None = None) -> Tensor:
        shim = _Delegated(
            layer.name, f"ops.{op}", config or {}, [], layer.keras_major, args, {}, layer.ops, layer.options, label
        )
        return CONVERTERS[f"ops.{op}"](shim)

    def only(*allowed: str) -> None:
        extra = sorted(k for k, v in kw.items() if k not in allowed and v not in (None, False))
        if extra:
            raise layer.unsupported(f"tf.{function} with {', '.join(extra)}")

    if function in BINARY:
        only("y")
        if "y" not in kw:
            raise BadModelFile(f"{layer.describe()} has no second operand")
        return delegate(BINARY[function], [first, kw["y"]])
    if function in UNARY:
        only()
        return delegate(UNARY[function], [first])
    if function in REDUCE:
        only("axis", "keepdims")
        return delegate(REDUCE[function], [first], {"axis": kw.get("axis"), "keepdims": kw.get("keepdims", False)})
    if function in ("nn.softmax", "math.softmax"):
        only("axis")
        axis = kw.get("axis")
        return delegate("Softmax", [first], {"axis": -1 if axis is None else axis})  # TF: None is the last axis
    if function in ("concat", "stack"):
        only("axis")
        tensors = first if isinstance(first, list) else [first]
        op = "Concatenate" if function == "concat" else "Stack"
        return delegate(op, [tensors], {"axis": kw.get("axis", 0)})
    if function == "reshape":
        only("shape")
        shape = kw.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) or d is None for d in shape):
            raise layer.unsupported("tf.reshape to a shape computed at run time")
        return delegate("Reshape", [first], {"newshape": shape})
    if function in ("transpose", "compat.v1.transpose"):
        only("perm")
        return delegate("Transpose", [first], {"axes": kw.get("perm")})
    if function == "expand_dims":
        only("axis")
        return delegate("ExpandDims", [first], {"axis": kw.get("axis")})
    if function in ("squeeze", "compat.v1.squeeze"):
        only("axis")
        return delegate("Squeeze", [first], {"axis": kw.get("axis")})
    if function == "linalg.matmul":
        only("b", "transpose_a", "transpose_b")
        a, b = first, kw.get("b")
        if kw.get("transpose_a") and isinstance(a, Tensor):
            a = delegate("Transpose", [a], {"axes": _swap_last(a)})
        if kw.get("transpose_b") and isinstance(b, Tensor):
            b = delegate("Transpose", [b], {"axes": _swap_last(b)})
        return delegate("Matmul", [a, b])
    # __operators__.getitem
    only("slice_spec")
    spec = kw.get("slice_spec")
    key = [_slice_entry(layer, e) for e in (spec if isinstance(spec, list) else [spec])]
    return delegate("GetItem", [first, key])


def _swap_last(t: Tensor) -> list:
    axes = list(range(t.rank))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return axes


def _slice_entry(layer: Layer, entry: Any) -> Any:
    """tf.keras's slice_spec entry in the Keras 3 GetItem key encoding."""
    if isinstance(entry, dict) and entry.get("class_name") == "__ellipsis__":
        return entry
    if isinstance(entry, dict) and set(entry) <= {"start", "stop", "step"}:
        return {"class_name": "__slice__", "config": entry}
    if entry is None or (isinstance(entry, int) and not isinstance(entry, bool)):
        return entry  # None: tf.newaxis
    raise layer.unsupported(f"indexing with {str(entry)[:40]}")


tf_op_layer.refuses = refuses  # read by graph.unsupported_layers
