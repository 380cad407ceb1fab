"""Rewrites of a Program before code generation: the same numbers from fewer NumPy calls.

`REWRITES` is the one ordered list; `optimize` runs it once at conversion time. Each entry is
`rewrite(ops, roots)`: it edits the op list in place (returning None) or returns the new list, never
rewrites away a value in `roots` (model outputs and the states a stateful model carries), and its
docstring states what it proves equal. What a layer function allows (elementwise, fresh result,
in-place twin, row-wise) is declared next to it with `layers.base.kernel`, not here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from ..graph import Program
from ..layers.conv import (
    fold_batchnorm_into_conv,
    fuse_activation_into_conv,
    fuse_residual_into_conv,
    gather_narrow_convs,
    plan_conv_windows,
    tile_depthwise_rows,
)
from ..layers.pooling import fuse_squeeze_excite, plan_pool_taps, pool_before_bias_relu, tile_bias_and_relu
from .dense_chain import DenseChain, dense_chain
from .fold_affine import fold_affine
from .in_place import run_in_place

Rewrite = Callable[[list, list], Optional[list]]

# The order matters: each entry recognises the ops the entries before it leave.
REWRITES: tuple[Rewrite, ...] = (
    fold_batchnorm_into_conv,  # conv -> BatchNormalization: one convolution
    fuse_residual_into_conv,  # Add(shortcut, conv): the add inside the convolution, on its fresh output
    fuse_activation_into_conv,  # conv -> ReLU/ReLU6/sigmoid/swish/hard-swish: inside the convolution, in place
    pool_before_bias_relu,  # conv -> max pooling: bias and ReLU after the (smaller) pooled tensor
    fuse_squeeze_excite,  # GAP -> 1x1 conv -> 1x1 conv -> Multiply: one squeeze_excite call
    gather_narrow_convs,  # the conv rewrites above recognise plain `conv` ops only
    plan_pool_taps,  # poolings of a known size: their taps' slices built at import
    plan_conv_windows,  # the other convolutions of a known size: their windows' geometry built at import
    tile_depthwise_rows,  # depthwise kernels laid out along an output row at import
    tile_bias_and_relu,  # last: bias and ReLU zeros as rows or maps built at import (after every move of a bias)
    fold_affine,  # per-feature multiply-add next to a Dense: into its kernel and bias
    run_in_place,  # activations on fresh, private arrays: in place; Dense -> ReLU: one call
)


def optimize(program: Program) -> tuple[Program, Optional[DenseChain]]:
    """The rewritten program (same results) and, when the model is a Dense chain, its one-sample form."""
    roots = list(program.outputs) + [final for _, final in program.states if final is not None]
    ops = list(program.ops)
    for rewrite in REWRITES:
        result = rewrite(ops, roots)
        if result is not None:
            ops = result
    return dense_chain(replace(program, ops=ops))


__all__ = ["REWRITES", "DenseChain", "dense_chain", "fold_affine", "optimize", "run_in_place"]
