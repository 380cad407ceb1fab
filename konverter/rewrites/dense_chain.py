"""The one-sample form of a model made of Dense layers only (ReLU/tanh/softmax between them).

Proves equal, bit for bit: with the bias stored as the kernel's last row and the input followed by
1.0, `[x, 1] @ [[W], [b]]` is `x @ W + b` in one `np.dot`; the program keeps the same kernel and bias
as views of that augmented kernel (`ConstView`), so each weight is stored once. Any elementwise
activation may end the chain; between layers only those with an in-place twin run (into the
per-thread buffers). A large batch runs in chunks of rows through per-thread workspaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np

from ..graph import Program
from ..layers import activations, core
from ..layers.base import Const, Op, traits
from .common import arguments

DENSE_STEPS = (core.dense, core.dense_relu, core.dense_no_bias)
RELU_IN_PLACE = traits(activations.relu).in_place
# The layer functions the chain's generated code calls (codegen names none itself).
KERNELS = SimpleNamespace(
    vector=core.dense_vector,  # the last layer of one sample: a new vector
    into=core.dense_into,  # a hidden layer of one sample, into its buffer
    relu_into=core.dense_relu_into,  # the same with ReLU
    rows=core.dense_rows,  # a chunk of rows, into a workspace
    relu_rows=core.dense_relu_rows,
    no_bias_rows=core.dense_no_bias_rows,
)


@dataclass(eq=False)
class ConstView:
    """The kernel rows (`part="kernel"`) or the last row (`part="bias"`) of an augmented kernel."""

    base: Const
    part: str


@dataclass
class ChainStep:
    kernel: Const  # (n + 1, m) with the bias as last row, or (n, m) without bias
    has_bias: bool
    activation: Optional[Callable]  # an in-place twin; on the last step any elementwise function; or None
    activation_kwargs: dict
    layer: str
    keras: tuple = ()  # (layer path, class name): the generated file names the kernel after it

    @property
    def relu(self) -> bool:
        return self.activation is RELU_IN_PLACE


@dataclass
class DenseChain:
    """A model that is Dense layers only: it gets the one-sample path and row-chunked batches."""

    width: int  # input features
    steps: list = field(default_factory=list)
    kernels: SimpleNamespace = field(default_factory=lambda: KERNELS)

    def chunk_rows(self, floats: int) -> int:
        """Rows per chunk of a large batch so that the widest intermediate holds about `floats` values."""
        widest = max(int(s.kernel.array.shape[1]) for s in self.steps)
        rows = max(256, min(8192, floats // max(widest, 1)))
        return 1 << (rows.bit_length() - 1)  # a power of two: easy to read in the generated file

    @property
    def widths(self) -> list:
        """Widths of the input and of every hidden vector (the last step returns a new array)."""
        return [self.width] + [int(s.kernel.array.shape[1]) for s in self.steps[:-1]]


def _chain_activation(op: Op, last: bool) -> bool:
    """An activation the chain can run: in place anywhere, or any elementwise one at the very end;
    its other arguments plain numbers, and softmax over the feature axis."""
    if not (traits(op.fn).overwrites or (last and traits(op.fn).elementwise)):
        return False
    kwargs = {k: v for k, v in arguments(op).items() if k != "x"}
    if any(not (v is None or isinstance(v, (int, float))) for k, v in kwargs.items() if k != "axis"):
        return False
    return "axis" not in kwargs or kwargs["axis"] in (-1, 1, (1,))


def dense_chain(program: Program) -> tuple[Program, Optional[DenseChain]]:
    """A model made of Dense layers and ReLU/tanh/softmax only: its one-sample form, and the program
    rewritten so that its kernels and biases are views of the augmented kernels (stored once).

    Memory: each augmented kernel is built only once the whole program is known to be a chain, and
    the original kernel and bias Consts are pointed at its rows (the same values) as soon as it
    exists, so the original arrays are freed one by one (once the reader's ModelFile let go of them,
    see `convert._generate`) instead of the model being held twice at the end."""
    if len(program.inputs) != 1 or len(program.outputs) != 1 or program.outputs_as_dict or not program.ops:
        return program, None
    x = program.inputs[0].tensor
    if x.dtype != "float32" or x.shape is None or len(x.shape) != 1 or x.shape[0] is None:
        return program, None
    chain = DenseChain(int(x.shape[0]))
    dense_ops = []  # (index in the program, its input, kernel Const, bias Const or None)
    current = x
    for i, op in enumerate(program.ops):
        args = arguments(op)
        if args.get("x") is not current or len(op.outputs) != 1:
            return program, None
        if op.fn in DENSE_STEPS:
            kernel, bias = args.get("kernel"), args.get("bias")
            if not isinstance(kernel, Const) or not (bias is None or isinstance(bias, Const)):
                return program, None
            if kernel.array.ndim != 2 or kernel.array.dtype != np.float32:
                return program, None
            if bias is not None and (bias.array.dtype != np.float32 or bias.array.shape != kernel.array.shape[1:]):
                return program, None
            dense_ops.append((i, current, kernel, bias))
            relu = RELU_IN_PLACE if op.fn is core.dense_relu else None
            chain.steps.append(ChainStep(kernel, bias is not None, relu, {}, op.layer, op.keras))
        elif chain.steps and chain.steps[-1].activation is None and _chain_activation(op, op is program.ops[-1]):
            kwargs = {k: v for k, v in args.items() if k != "x"}
            if "axis" in kwargs:
                kwargs["axis"] = -1  # checked by _chain_activation: the feature axis
            chain.steps[-1].activation = op.fn
            chain.steps[-1].activation_kwargs = kwargs
        else:
            return program, None
        current = op.outputs[0]
    if current is not program.outputs[0] or not chain.steps:
        return program, None
    ops = list(program.ops)
    for step, (i, h, kernel, bias) in zip(chain.steps, dense_ops):
        if bias is None:
            continue
        augmented = Const(np.vstack([kernel.array, bias.array[None]]))
        kernel.array, bias.array = augmented.array[:-1], augmented.array[-1]  # the originals can go now
        step.kernel = augmented
        ops[i] = replace(ops[i], args=(h, ConstView(augmented, "kernel"), ConstView(augmented, "bias")), kwargs={})
    return replace(program, ops=ops), chain
