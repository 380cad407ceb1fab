"""Speed rewrites of a Program before code generation: the same numbers from fewer NumPy calls.

Everything here runs once, at conversion time:

- `fold_affine`: a per-feature multiply-add (a folded BatchNormalization, a Rescaling) right after
  or right before a Dense is folded into that Dense's kernel and bias (float64 arithmetic).
- `run_in_place`: an activation whose input is a fresh array that nothing else reads runs in place
  (`relu_inplace`), and Dense followed by ReLU becomes one `dense_relu`. Never on a model input,
  a model output, a value with another reader, or a view (only results of FRESH functions qualify).
- `dense_chain`: a model that is only Dense layers (ReLU/tanh/softmax between them, any elementwise
  activation at the end) from a 1-D float32 input gets a one-sample path through 1-D buffers, the
  bias stored as the kernel's last row so that each layer is one `np.dot` (and one `np.maximum` for
  ReLU), and large batches in row chunks through per-thread workspaces.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np

from .graph import Program
from .layers import activations as act
from .layers import conv, core, normalization, pooling, reshaping
from .layers.base import PROGRAM_PASSES, Const, Op, Tensor, tensors_in

DENSE = (core.dense, core.dense_no_bias)
AFFINE = (normalization.scale_shift, normalization.scale_only)
# Activations a Dense chain's last layer may end with (they return a new array of the same shape).
ELEMENTWISE = {
    act.relu,
    act.relu6,
    act.relu_general,
    act.leaky_relu,
    act.sigmoid,
    act.tanh,
    act.hard_sigmoid_keras2,
    act.hard_sigmoid,
    act.hard_silu,
    act.softplus,
    act.softsign,
    act.elu,
    act.selu,
    act.celu,
    act.exponential,
    act.swish,
    act.gelu,
    act.gelu_tanh,
    act.mish,
    act.log_sigmoid,
    act.softmax,
    act.log_softmax,
}

# Functions whose result is always a new array (never a view of an argument). Only such results
# may be overwritten in place. Another family's functions join by being listed here.
FRESH = {
    core.dense,
    core.dense_no_bias,
    core.dense_relu,
    normalization.scale_shift,
    normalization.scale_only,
    act.prelu,
} | ELEMENTWISE
IN_PLACE = {act.relu: act.relu_inplace, act.tanh: act.tanh_inplace, act.softmax: act.softmax_inplace}
# In-place functions return their (fresh) argument, so their results are fresh too.
FRESH |= set(IN_PLACE.values())


@dataclass(eq=False)
class ConstView:
    """The kernel rows (`part="kernel"`) or the last row (`part="bias"`) of an augmented kernel."""

    base: Const
    part: str


@dataclass
class ChainStep:
    kernel: Const  # (n + 1, m) with the bias as last row, or (n, m) without bias
    has_bias: bool
    activation: Optional[Callable]  # an IN_PLACE function; on the last step any ELEMENTWISE one; or None
    activation_kwargs: dict
    layer: str


@dataclass
class DenseChain:
    """A model that is Dense layers only (ReLU/tanh/softmax between them, any elementwise activation
    at the end): it gets the one-sample path and row-chunked batches."""

    width: int  # input features
    steps: list = field(default_factory=list)

    def chunk_rows(self, floats: int) -> int:
        """Rows per chunk of a large batch so that the widest intermediate holds about `floats` values."""
        widest = max(int(s.kernel.array.shape[1]) for s in self.steps)
        rows = max(256, min(8192, floats // max(widest, 1)))
        return 1 << (rows.bit_length() - 1)  # a power of two: easy to read in the generated file

    @property
    def widths(self) -> list:
        """Widths of the input and of every hidden vector (the last step returns a new array)."""
        return [self.width] + [int(s.kernel.array.shape[1]) for s in self.steps[:-1]]


def optimize(program: Program) -> tuple[Program, Optional[DenseChain]]:
    """The rewritten program (same results) and, when the model is a Dense chain, its one-sample form.

    Every rewrite happens here: the layer families' own (`layers.base.PROGRAM_PASSES`, e.g. BatchNorm
    into a convolution), then folding into Dense, then in-place activations. The values read after
    the last op (outputs, and the states a stateful model carries) are never rewritten away.
    """
    roots = list(program.outputs) + [final for _, final in program.states if final is not None]
    ops = list(program.ops)
    for family_pass in PROGRAM_PASSES:
        family_pass(ops, roots)
    ops = fold_affine(ops, roots)
    ops = run_in_place(ops, roots)
    return dense_chain(replace(program, ops=ops))


# ----------------------------------------------------------------------------- helpers
def _arguments(op: Op) -> dict:
    """The op's arguments by parameter name ({} when they cannot be bound: then no rewrite applies)."""
    try:
        return dict(inspect.signature(op.fn).bind(*op.args, **op.kwargs).arguments)
    except (TypeError, ValueError):
        return {}


def _readers(ops: list) -> dict:
    """Tensor id -> number of ops that read it."""
    count: dict[int, int] = {}
    for op in ops:
        for key in {id(t) for t in tensors_in([op.args, op.kwargs])}:
            count[key] = count.get(key, 0) + 1
    return count


def _only_reader(t: Tensor, readers: dict, outputs: list) -> bool:
    return readers.get(id(t)) == 1 and all(t is not o for o in outputs)


def _per_feature(value: Any, units: int) -> Optional[np.ndarray]:
    """A scale/shift that varies over the last axis only, as a float64 vector of `units`, else None."""
    if isinstance(value, Const):
        a = np.asarray(value.array, dtype=np.float64)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        a = np.asarray(float(value))
    else:
        return None
    if a.ndim and (any(d != 1 for d in a.shape[:-1]) or a.shape[-1] not in (1, units)):
        return None
    return np.broadcast_to(a.reshape(-1) if a.ndim else a, (units,))


def _dense_parts(op: Op) -> tuple:
    """(input, kernel float64, bias float64 or None) of a dense/dense_no_bias op."""
    args = _arguments(op)
    bias = args.get("bias")
    if bias is not None and not isinstance(bias, Const):
        return None, None, None
    kernel = args.get("kernel")
    if not isinstance(kernel, Const) or kernel.array.ndim != 2:
        return None, None, None
    b = None if bias is None else np.asarray(bias.array, dtype=np.float64)
    return args.get("x"), np.asarray(kernel.array, dtype=np.float64), b


def _dense_op(x: Tensor, kernel: np.ndarray, bias: np.ndarray, outputs: tuple, layer: str) -> Optional[Op]:
    if not (np.all(np.isfinite(kernel)) and np.all(np.isfinite(bias))):
        return None  # folding would turn an inf/nan into different numbers than Keras computes
    kernel32, bias32 = Const(kernel.astype(np.float32)), Const(bias.astype(np.float32))
    return Op(core.dense, (x, kernel32, bias32), {}, outputs, layer)


def _affine_vectors(op: Op, units: int) -> tuple:
    args = _arguments(op)
    scale = _per_feature(args.get("scale"), units)
    shift = _per_feature(args.get("shift", 0.0), units)
    return args.get("x"), scale, shift


# ----------------------------------------------------------------------------- passes
def fold_affine(ops: list, outputs: list) -> list:
    """Fold per-feature multiply-adds into the neighbouring Dense (before or after it).

    Each pass folds every pair it can without touching an op twice; passes repeat until nothing
    changes (BatchNormalization -> Dense -> BatchNormalization takes two), each linear in the ops.
    """
    while True:
        readers = _readers(ops)
        producer = {id(t): i for i, op in enumerate(ops) for t in op.outputs}
        users: dict[int, list] = {}
        for i, op in enumerate(ops):
            for key in {id(t) for t in tensors_in([op.args, op.kwargs])}:
                users.setdefault(key, []).append(i)
        new: dict[int, Op] = {}  # index -> replacement
        removed: set = set()
        for i, op in enumerate(ops):
            if op.fn not in AFFINE or len(op.outputs) != 1 or i in new:
                continue
            t = op.outputs[0]
            x = _arguments(op).get("x")
            # Dense, then this multiply-add: W' = W * a, b' = b * a + s.
            j = producer.get(id(x)) if isinstance(x, Tensor) else None
            if j is not None and j not in new and j not in removed and ops[j].fn in DENSE:
                folded = _fold_after(ops[j], op, readers, outputs)
                if folded is not None:
                    new[j] = folded
                    removed.add(i)
                    continue
            # This multiply-add, then Dense: W' = a[:, None] * W, b' = s @ W + b.
            after = users.get(id(t), [])
            if len(after) == 1 and after[0] not in new and after[0] not in removed and ops[after[0]].fn in DENSE:
                folded = _fold_before(op, ops[after[0]], readers, outputs)
                if folded is not None:
                    new[after[0]] = folded
                    removed.add(i)
        if not new:
            return ops
        ops = [new.get(i, op) for i, op in enumerate(ops) if i not in removed]


def _fold_after(dense: Op, affine: Op, readers: dict, outputs: list) -> Optional[Op]:
    xin, kernel, bias = _dense_parts(dense)
    if kernel is None or not _only_reader(dense.outputs[0], readers, outputs):
        return None
    _, a, s = _affine_vectors(affine, kernel.shape[1])
    if a is None or s is None:
        return None
    bias = np.zeros(kernel.shape[1]) if bias is None else bias
    return _dense_op(xin, kernel * a, bias * a + s, affine.outputs, f"{dense.layer} + {affine.layer}")


def _fold_before(affine: Op, dense: Op, readers: dict, outputs: list) -> Optional[Op]:
    t = affine.outputs[0]
    xin, kernel, bias = _dense_parts(dense)
    if kernel is None or xin is not t or not _only_reader(t, readers, outputs):
        return None
    x, a, s = _affine_vectors(affine, kernel.shape[0])
    if a is None or s is None:
        return None
    bias = np.zeros(kernel.shape[1]) if bias is None else bias
    return _dense_op(x, a[:, None] * kernel, s @ kernel + bias, dense.outputs, f"{affine.layer} + {dense.layer}")


def run_in_place(ops: list, outputs: list) -> list:
    """In-place activations on fresh arrays nothing else reads; Dense + ReLU as one dense_relu."""
    readers = _readers(ops)
    producer: dict[int, Op] = {}
    result = []
    for op in ops:
        x = op.args[0] if op.args else None
        source = producer.get(id(x)) if isinstance(x, Tensor) else None
        if (
            op.fn in IN_PLACE
            and source is not None
            and source.fn in FRESH
            and len(source.outputs) == 1
            and x.dtype == "float32"
            and _only_reader(x, readers, outputs)
        ):
            if source.fn is core.dense and op.fn is act.relu and not op.kwargs and len(op.args) == 1:
                label = source.layer if source.layer == op.layer else f"{source.layer} + {op.layer}"
                fused = Op(core.dense_relu, source.args, source.kwargs, op.outputs, label)
                result[result.index(source)] = fused
                producer[id(op.outputs[0])] = fused
                continue
            op = replace(op, fn=IN_PLACE[op.fn])
        result.append(op)
        for t in op.outputs:
            producer[id(t)] = op
    return result


def _chain_activation(op: Op, last: bool) -> bool:
    """An activation the chain can run: in place anywhere, or any elementwise one at the very end;
    its other arguments plain numbers, and softmax over the feature axis."""
    if not (op.fn in IN_PLACE.values() or (last and op.fn in ELEMENTWISE)):
        return False
    kwargs = {k: v for k, v in _arguments(op).items() if k != "x"}
    if any(not (v is None or isinstance(v, (int, float))) for k, v in kwargs.items() if k != "axis"):
        return False
    return "axis" not in kwargs or kwargs["axis"] in (-1, 1, (1,))


def dense_chain(program: Program) -> tuple[Program, Optional[DenseChain]]:
    """A model made of Dense layers and ReLU/tanh/softmax only: its one-sample form, and the program
    rewritten so that its kernels and biases are views of the augmented kernels (stored once)."""
    if len(program.inputs) != 1 or len(program.outputs) != 1 or program.outputs_as_dict or not program.ops:
        return program, None
    x = program.inputs[0].tensor
    if x.dtype != "float32" or x.shape is None or len(x.shape) != 1 or x.shape[0] is None:
        return program, None
    chain = DenseChain(int(x.shape[0]))
    ops = []
    current = x
    for op in program.ops:
        ops.append(op)
        args = _arguments(op)
        if args.get("x") is not current or len(op.outputs) != 1:
            return program, None
        if op.fn in (core.dense, core.dense_relu, core.dense_no_bias):
            kernel, bias = args.get("kernel"), args.get("bias")
            if not isinstance(kernel, Const) or not (bias is None or isinstance(bias, Const)):
                return program, None
            if kernel.array.ndim != 2 or kernel.array.dtype != np.float32:
                return program, None
            if bias is not None:
                if bias.array.dtype != np.float32 or bias.array.shape != kernel.array.shape[1:]:
                    return program, None
                kernel = Const(np.vstack([kernel.array, bias.array[None]]))
                ops[-1] = replace(op, args=(current, ConstView(kernel, "kernel"), ConstView(kernel, "bias")), kwargs={})
            relu = act.relu_inplace if op.fn is core.dense_relu else None
            chain.steps.append(ChainStep(kernel, bias is not None, relu, {}, op.layer))
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
    return replace(program, ops=ops), chain


# Functions whose every output row depends on the same input row only (no mixing along the batch
# axis): a program made of these alone may run a large batch in chunks of rows.
ROW_WISE = (
    ELEMENTWISE
    | set(IN_PLACE.values())
    | {act.prelu, core.dense, core.dense_no_bias, core.dense_relu, *AFFINE}
    | {conv.conv, conv.conv_gather, conv.conv_grouped, conv.depthwise_conv, conv.separable_conv}
    | {conv.conv_transpose, pooling.max_pool, pooling.average_pool, pooling.global_max_pool}
    | {pooling.global_average_pool, pooling.global_average_product}
    | {reshaping.flatten, reshaping.flatten_channels_first, reshaping.reshape, reshaping.zero_pad}
    | {reshaping.crop, reshaping.upsample_nearest, reshaping.upsample_bilinear}
)
CHUNK_VALUES = 1 << 20  # values in the widest intermediate of one chunk (4 MB of float32)


def row_chunk(program: Program) -> Optional[int]:
    """Rows per chunk for a large batch of a row-wise program with one input and one output, else None.

    Whole-batch intermediates of a convolutional model are tens of MB: each is page-faulted in anew.
    Chunks keep them a few MB and reused (measured: the benchmark CNN's batch of 1,000 55.9 -> 30.7 ms).
    """
    if len(program.inputs) != 1 or len(program.outputs) != 1 or program.outputs_as_dict or program.states:
        return None
    if not program.ops or any(op.fn not in ROW_WISE for op in program.ops):
        return None
    widest = 0
    for t in [program.inputs[0].tensor] + [t for op in program.ops for t in op.outputs]:
        if t.shape is None or None in t.shape:
            return None
        widest = max(widest, int(np.prod(t.shape)))
    rows = max(1, min(4096, CHUNK_VALUES // max(widest, 1)))  # 1: a sample alone is MBs
    return 1 << (rows.bit_length() - 1)  # a power of two: easy to read in the generated file
