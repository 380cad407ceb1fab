"""Run activations in place where nobody else can see the array, and fuse declared pairs.

Proves equal, bit for bit: an activation f with an in-place twin (`@kernel(in_place_of=f)`) whose
input is a fresh array (its producer is declared `fresh`: a new array, never a view of anything)
that no other op reads and that is not a root computes the same values into that array. A pair
f -> g that some function declares with `fuses=(f, g)` (Dense -> ReLU: `dense_relu`) becomes that
one call under the same conditions. Never on a model input, an output, a carried state or a view.
"""

from __future__ import annotations

from dataclasses import replace

from ..layers.base import FUSED, Op, Tensor, traits
from .common import only_reader, readers


def run_in_place(ops: list, roots: list) -> list:
    counts = readers(ops)
    producer: dict[int, int] = {}  # tensor id -> index in `result`
    result: list[Op] = []
    for op in ops:
        x = op.args[0] if op.args else None
        at = producer.get(id(x)) if isinstance(x, Tensor) else None
        twin = traits(op.fn).in_place
        if (
            twin is not None
            and at is not None
            and traits(result[at].fn).fresh
            and len(result[at].outputs) == 1
            and x.dtype == "float32"
            and only_reader(x, counts, roots)
        ):
            source = result[at]
            fused = FUSED.get((source.fn, op.fn))
            if fused is not None and not op.kwargs and len(op.args) == 1:
                label = source.layer if source.layer == op.layer else f"{source.layer} + {op.layer}"
                result[at] = Op(fused, source.args, source.kwargs, op.outputs, label, source.keras)
                producer[id(op.outputs[0])] = at
                continue
            op = replace(op, fn=twin)
        result.append(op)
        for t in op.outputs:
            producer[id(t)] = len(result) - 1
    return result
