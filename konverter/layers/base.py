"""What layer converters work with: symbolic tensors, recorded NumPy calls, and the layer at hand.

A converter is a plain function registered for one or more Keras class names. It reads the
layer's config and weights, checks them, and records calls of plain NumPy functions
(`Layer.call`). Those functions live in the `konverter.layers` modules; tests call them
directly and the code generator copies their source into the generated file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import BadModelFile, UnsupportedModel
from ..h5reader.text import shown

Shape = tuple  # a tensor's shape WITHOUT the batch axis; None marks an unknown dimension


@dataclass(eq=False)
class Tensor:
    """A value flowing through the generated predict(); `shape` excludes the batch axis."""

    shape: Shape | None
    dtype: str = "float32"
    # Keras's mask: a Tensor holding a (batch, time) boolean array, set by Masking/Embedding(mask_zero)
    # and passed on by the layers in MASK_POLICY "pass"; graph.py refuses it reaching any other layer.
    mask: Tensor | None = None

    @property
    def rank(self) -> int:
        """Rank including the batch axis."""
        if self.shape is None:
            raise UnsupportedModel("a tensor of unknown rank reached a layer that needs its rank")
        return len(self.shape) + 1


@dataclass(eq=False)
class Const:
    """A weight array embedded in the generated file."""

    array: np.ndarray
    label: str = ""


@dataclass(eq=False)
class Derived:
    """An array the generated file computes once at import as fn(*args) (a layer function; literal
    arguments or Consts) instead of storing it: e.g. a convolution's gather indices, pure geometry."""

    fn: Callable
    args: tuple


@dataclass(eq=False)
class Op:
    fn: Callable
    args: tuple
    kwargs: dict
    outputs: tuple  # of Tensor
    layer: str = ""  # "name (Class)" of the Keras layer, for the comment


Converter = Callable[["Layer"], Any]
CONVERTERS: dict[str, Converter] = {}
# What a layer does with an incoming Keras mask: "pass" (output keeps the input's mask: Dense,
# Activation, Dropout...), "drop" (Keras 3 drops it and the math never reads it: Flatten...),
# "own" (the converter reads `tensor.mask` itself). Layers not listed are refused when a mask reaches them.
MASK_POLICY: dict[str, str] = {}


# A family's rewrites of the whole op list, run by konverter.optimize before code generation (all
# consumers known): pass(ops, roots) edits `ops` in place, never rewrites away a value in `roots`
# (outputs, carried states), and leaves every result unchanged (up to float32 rounding).
PROGRAM_PASSES: list[Callable[[list, list], None]] = []


def converter(*class_names: str, mask: str | None = None) -> Callable[[Converter], Converter]:
    """Register a converter for Keras class names (aliases included), with its mask policy."""

    def register(fn: Converter) -> Converter:
        for name in class_names:
            if name in CONVERTERS:
                raise RuntimeError(f"two converters for {name}")
            CONVERTERS[name] = fn
            if mask is not None:
                MASK_POLICY[name] = mask
        return fn

    return register


@dataclass(eq=False)
class Layer:
    """One call of one Keras layer, as a converter sees it."""

    name: str
    class_name: str
    config: dict
    weights: list
    keras_major: int
    args: list  # positional call arguments: Tensors, lists of Tensors, constants
    kwargs: dict  # keyword call arguments (Tensors possible, e.g. MultiHeadAttention key=)
    ops: list = field(default_factory=list)
    options: dict = field(default_factory=dict)  # conversion options (e.g. weight dtype)
    # Stateful RNNs: [input Tensor, final-state Tensor] pairs that predict() carries between calls.
    state_slots: list = field(default_factory=list)
    backend: str = ""  # the writer's Keras backend from the file ("theano" files need flipped conv kernels)

    # ----- inputs
    @property
    def inputs(self) -> list[Tensor]:
        """Every Tensor among the positional arguments, flattened in order."""
        found: list[Tensor] = []

        def visit(value: Any) -> None:
            if isinstance(value, Tensor):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    visit(item)

        visit(self.args)
        return found

    @property
    def input(self) -> Tensor:
        """The single input tensor; refuses layers called on several tensors."""
        inputs = self.inputs
        if len(inputs) != 1:
            raise UnsupportedModel(f"{self.describe()} expects one input tensor, got {len(inputs)}")
        return inputs[0]

    def describe(self) -> str:
        # The name comes from the file: escaped (one printable line) and cut short (names may be 10,000 chars).
        return f"layer {shown(self.name, 62)} ({self.class_name})"

    # ----- config and weights
    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def expect_weights(self, *shapes: tuple | None) -> list[np.ndarray]:
        """Check the weight count and shapes (None = any, None inside a shape = any size)."""
        if len(self.weights) != len(shapes):
            raise BadModelFile(
                f"{self.describe()} has {len(self.weights)} weight arrays, its config implies {len(shapes)}"
            )
        for i, (array, want) in enumerate(zip(self.weights, shapes)):
            if want is None:
                continue
            if len(array.shape) != len(want) or any(w is not None and w != g for g, w in zip(array.shape, want)):
                shown = tuple("?" if w is None else w for w in want)
                raise BadModelFile(
                    f"{self.describe()} weight {i} has shape {tuple(array.shape)}, its config implies {shown}"
                )
        return list(self.weights)

    def unsupported(self, what: str) -> UnsupportedModel:
        return UnsupportedModel(f"{self.describe()}: {what}")

    def axis(self, axis: Any, rank: int) -> int:
        """A Keras axis (negative, or absolute counting the batch axis) as a non-negative int."""
        if isinstance(axis, (list, tuple)) and len(axis) == 1:
            axis = axis[0]
        if not isinstance(axis, int) or isinstance(axis, bool) or not -rank <= axis < rank:
            raise BadModelFile(f"{self.describe()} has axis {axis!r}, invalid for rank {rank}")
        return axis % rank

    def inner(self, name: str, class_name: str, config: dict, weights: list, args: list) -> Layer:
        """A wrapped layer (TimeDistributed's `layer`) recording into the same program."""
        return Layer(
            name=f"{self.name}/{name}",
            class_name=class_name,
            config=config,
            weights=weights,
            keras_major=self.keras_major,
            args=args,
            kwargs={},
            ops=self.ops,
            options=self.options,
            state_slots=self.state_slots,
        )

    # ----- stateful layers
    def state_input(self, shape: Shape) -> Tensor:
        """A state value given to predict() (None before the first call); see `state_output`."""
        slot = Tensor(tuple(shape))
        self.state_slots.append([slot, None])
        return slot

    def state_output(self, slot: Tensor, final: Tensor) -> None:
        for pair in self.state_slots:
            if pair[0] is slot:
                pair[1] = final
                return
        raise RuntimeError("state_output for an unknown state slot")

    # ----- recording
    def call(self, fn: Callable, *args: Any, shape: Shape | None, dtype: str = "float32", **kwargs: Any) -> Tensor:
        """Record `fn(*args, **kwargs)`; arrays become embedded constants. Returns the result."""
        out = Tensor(tuple(shape) if shape is not None else None, dtype)
        self.ops.append(Op(fn, tuple(_wrap(a) for a in args), {k: _wrap(v) for k, v in kwargs.items()}, (out,)))
        return out

    def call_multi(self, fn: Callable, *args: Any, shapes: list, **kwargs: Any) -> list[Tensor]:
        """Record a call that returns a tuple of arrays."""
        outs = tuple(Tensor(tuple(s) if s is not None else None) for s in shapes)
        self.ops.append(Op(fn, tuple(_wrap(a) for a in args), {k: _wrap(v) for k, v in kwargs.items()}, outs))
        return list(outs)


def tensors_in(value: Any) -> list:
    """Every Tensor inside nested lists, tuples and dicts (an op's args and kwargs), in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return Const(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadModelFile(f"{what} must be a number, found {type(value).__name__}")
    return float(value)


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadModelFile(f"{what} must be an integer, found {value!r}"[:200])
    return value


def as_int_tuple(value: Any, what: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise BadModelFile(f"{what} must be a list of integers")
    return tuple(as_int(v, what) for v in value)
