"""Fold a per-feature multiply-add (a folded BatchNormalization, a Rescaling) into the Dense next to it.

Proves equal, up to float32 rounding:
- Dense, then y * a + s:  x @ (W * a) + (b * a + s)
- x * a + s, then Dense:  x @ (a[:, None] * W) + (s @ W + b)
The folded constants are computed in float64 and stored as float32. A fold is refused where it
could change more than rounding: a constant that is not a finite float32 (Keras computes with the
float32 value, inf included), a folded constant that overflows float32, or a scale beyond
`MAX_SCALE`, where an input that Keras's separate multiply overflows to inf is a plausible value.
Each fold reads one Dense's neighbours only: one forward and one backward sweep, linear in the ops.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..layers import core, normalization
from ..layers.base import Const, Op, Tensor, tensors_in
from .common import arguments, only_reader, per_feature, readers

DENSE = (core.dense, core.dense_no_bias)
AFFINE = (normalization.scale_shift, normalization.scale_only)
MAX_SCALE = 65536.0  # |a| above this: x * a overflows float32 for |x| > 5e33, so keep Keras's two steps
FLOAT32_MAX = float(np.finfo(np.float32).max)


def fold_affine(ops: list, roots: list) -> list:
    """Every foldable multiply-add folded into its Dense neighbour (chains of them too)."""
    ops = list(ops)
    counts = readers(ops)
    producer = {id(t): i for i, op in enumerate(ops) for t in op.outputs}
    reader = {id(t): i for i, op in enumerate(ops) for t in tensors_in([op.args, op.kwargs])}
    removed: set = set()
    # Dense, then multiply-add(s): W' = W * a, b' = b * a + s.
    for i in range(len(ops)):
        while ops[i].fn in DENSE and len(ops[i].outputs) == 1 and only_reader(ops[i].outputs[0], counts, roots):
            j = reader[id(ops[i].outputs[0])]
            folded = _fold_after(ops[i], ops[j]) if ops[j].fn in AFFINE else None
            if folded is None:
                break
            ops[i] = folded
            removed.add(j)
            producer[id(folded.outputs[0])] = i
    # Multiply-add(s), then Dense: W' = a[:, None] * W, b' = s @ W + b.
    for i in reversed(range(len(ops))):
        while i not in removed and ops[i].fn in DENSE:
            x = arguments(ops[i]).get("x")
            j = producer.get(id(x)) if isinstance(x, Tensor) else None
            if j is None or j in removed or ops[j].fn not in AFFINE or not only_reader(x, counts, roots):
                break
            folded = _fold_before(ops[j], ops[i])
            if folded is None:
                break
            ops[i] = folded
            removed.add(j)
    return [op for i, op in enumerate(ops) if i not in removed]


def _dense_parts(op: Op) -> tuple:
    """(input, kernel float64, bias float64 or None) of a dense/dense_no_bias op."""
    args = arguments(op)
    bias = args.get("bias")
    if bias is not None and not isinstance(bias, Const):
        return None, None, None
    kernel = args.get("kernel")
    if not isinstance(kernel, Const) or kernel.array.ndim != 2:
        return None, None, None
    b = None if bias is None else np.asarray(bias.array, dtype=np.float64)
    return args.get("x"), np.asarray(kernel.array, dtype=np.float64), b


def _affine_vectors(op: Op, units: int) -> tuple:
    """(input, scale, shift) as float64 vectors, or None parts where folding cannot give Keras's numbers."""
    args = arguments(op)
    scale = per_feature(args.get("scale"), units)
    shift = per_feature(args.get("shift", 0.0), units)
    for vector in (scale, shift):
        if vector is not None and not np.all(np.abs(vector) <= FLOAT32_MAX):
            return args.get("x"), None, None  # inf, nan, or a number float32 cannot hold
    if scale is not None and np.any(np.abs(scale) > MAX_SCALE):
        return args.get("x"), None, None
    return args.get("x"), scale, shift


def _dense_op(
    x: Tensor, kernel: np.ndarray, bias: np.ndarray, outputs: tuple, layer: str, keras: tuple
) -> Optional[Op]:
    if not (np.all(np.abs(kernel) <= FLOAT32_MAX) and np.all(np.abs(bias) <= FLOAT32_MAX)):
        return None  # folding would turn an inf/nan or an overflow into other numbers than Keras computes
    args = (x, Const(kernel.astype(np.float32)), Const(bias.astype(np.float32)))
    return Op(core.dense, args, {}, outputs, layer, keras)


def _fold_after(dense: Op, affine: Op) -> Optional[Op]:
    xin, kernel, bias = _dense_parts(dense)
    if kernel is None or arguments(affine).get("x") is not dense.outputs[0]:
        return None
    _, a, s = _affine_vectors(affine, kernel.shape[1])
    if a is None or s is None:
        return None
    bias = np.zeros(kernel.shape[1]) if bias is None else bias
    return _dense_op(xin, kernel * a, bias * a + s, affine.outputs, f"{dense.layer} + {affine.layer}", dense.keras)


def _fold_before(affine: Op, dense: Op) -> Optional[Op]:
    xin, kernel, bias = _dense_parts(dense)
    if kernel is None or xin is not affine.outputs[0]:
        return None
    x, a, s = _affine_vectors(affine, kernel.shape[0])
    if a is None or s is None:
        return None
    bias = np.zeros(kernel.shape[1]) if bias is None else bias
    return _dense_op(
        x, a[:, None] * kernel, s @ kernel + bias, dense.outputs, f"{affine.layer} + {dense.layer}", dense.keras
    )
