"""What layer converters work with: symbolic tensors, recorded NumPy calls, and the layer at hand.

A converter is a plain function registered for one or more Keras class names. It reads the
layer's config and weights, checks them, and records calls of plain NumPy functions
(`Layer.call`). Those functions live in the `konverter.layers` modules; tests call them
directly and the code generator copies their source into the generated file.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

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
    # and then by each layer as Keras would (see MASK_POLICY and graph._apply_mask_policy).
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
    label: str = ""  # the parameter of the layer function that first received it ("kernel")
    keras: tuple = ()  # (layer path, class name) of the Keras layer that recorded it (set by graph.Builder)


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
    layer: str = ""  # "name (Class)" of the Keras layer(s) it computes, for the comment
    keras: tuple = ()  # (layer path, class name) of the first of them: codegen names weights after it


Converter = Callable[["Layer"], Any]
CONVERTERS: dict[str, Converter] = {}
# What a layer does with an incoming Keras mask, from its Keras class (`supports_masking`,
# `compute_mask`, a `mask` argument of `call`): "pass" (supports masking, default compute_mask: the
# output keeps the mask; the math never reads it: Dense, BatchNormalization, Dropout...), "drop"
# (does not support masking: Keras computes without the mask and drops it: Conv1D, Flatten, every
# keras.ops node...), "own" (the converter reads the mask and sets its output's: Softmax, merges,
# attention, recurrent layers). Layers not listed are refused when a mask reaches them.
MASK_POLICY: dict[str, str] = {}
MASK_POLICY_KERAS2: dict[str, str] = {}  # where tf-keras's class differs (Rescaling: "drop" there)
MASK_POLICIES = ("pass", "drop", "own")
WRAPS: dict[str, tuple] = {}  # class name -> config keys holding wrapped layers (see `converter`)


@dataclass(frozen=True)
class Traits:
    """What the rewrites may assume about a layer function, declared where it is defined (`@kernel`).

    A function with no declared traits is never rewritten, fused or run in place: the safe default.
    """

    elementwise: bool = False  # value by value, result of the input's shape (activations): fresh and row-wise
    fresh: bool = False  # the result is always a new array, never a view of an argument: may be overwritten
    row_wise: bool = False  # each output row depends on the same input row only: a batch may run in chunks
    in_place: Optional[Callable] = None  # a twin that overwrites its first argument and returns it
    overwrites: bool = False  # this function is such a twin
    fuses: tuple = ()  # (f, g): this function computes g(f(...)) in one call (dense then relu)


TRAITS: dict[Callable, Traits] = {}
FUSED: dict[tuple, Callable] = {}  # (f, g) -> the function declared with fuses=(f, g)
NO_TRAITS = Traits()


def kernel(
    *,
    elementwise: bool = False,
    fresh: bool = False,
    row_wise: bool = False,
    in_place_of: Optional[Callable] = None,
    fuses: tuple = (),
) -> Callable[[Callable], Callable]:
    """Declare a layer function's traits (see `Traits`); returns the function itself, unwrapped.

    `in_place_of=f`: this function is f computed in place on its first argument (a fresh array).
    The code generator copies the function without this decorator line.
    """

    def declare(fn: Callable) -> Callable:
        fresh_result = fresh or elementwise or in_place_of is not None or bool(fuses)
        declared = Traits(
            elementwise, fresh_result, row_wise or elementwise, overwrites=in_place_of is not None, fuses=tuple(fuses)
        )
        if in_place_of is not None:
            base = traits(in_place_of)
            TRAITS[in_place_of] = replace(base, in_place=fn)
            declared = replace(declared, row_wise=declared.row_wise or base.row_wise)
        if fuses:
            FUSED[tuple(fuses)] = fn
        TRAITS[fn] = declared
        return fn

    return declare


def traits(fn: Any) -> Traits:
    """The traits declared for a layer function (none for anything else)."""
    return TRAITS.get(fn, NO_TRAITS)


def converter(
    *class_names: str, mask: str | None = None, mask_keras2: str | None = None, wraps: tuple = ()
) -> Callable[[Converter], Converter]:
    """Register a converter for Keras class names (aliases included), with its mask policy (see
    MASK_POLICY) and, where tf-keras's class treats masks differently, its policy in Keras 2 files.

    `wraps`: the config keys that hold wrapped layers (Bidirectional's `layer` and `backward_layer`):
    those are checked for support like the model's own layers, before any conversion.
    """
    if any(p not in MASK_POLICIES for p in (mask, mask_keras2) if p is not None):
        raise RuntimeError(f"unknown mask policy for {class_names}")

    def register(fn: Converter) -> Converter:
        for name in class_names:
            if name in CONVERTERS:
                raise RuntimeError(f"two converters for {name}")
            CONVERTERS[name] = fn
            if mask is not None:
                MASK_POLICY[name] = mask
            if mask_keras2 is not None:
                MASK_POLICY_KERAS2[name] = mask_keras2
            if wraps:
                WRAPS[name] = tuple(wraps)
        return fn

    return register


def mask_policy(class_name: str, keras_major: int) -> str | None:
    """What a layer of this class does with a mask in files of this Keras major version (None: unknown)."""
    if keras_major < 3 and class_name in MASK_POLICY_KERAS2:
        return MASK_POLICY_KERAS2[class_name]
    return MASK_POLICY.get(class_name)


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
    # The weights' names in the file, in `weights` order: layers made of sublayers (keras_hub's) pick
    # each sublayer's arrays by name, as .keras and .h5 files store them in different orders.
    weight_names: list = field(default_factory=list)
    keras_version: str = ""  # the writer's full Keras version, for behaviour that changed within a major version
    assets: dict = field(default_factory=dict)  # the layer's files in a .keras archive's assets/ (name -> bytes)
    # Tensors whose Keras mask this call deletes for the layers that run after it (Keras 3.7+'s
    # MultiHeadAttention does so to its inputs); graph.py applies it, or refuses where Keras's order
    # of the other readers is not known.
    ends_masks: list = field(default_factory=list)

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

    def call_mask(self, x: Tensor, name: str = "mask") -> Tensor | None:
        """The mask Keras hands this call for `x`: the `name=` call argument when the file gives one
        (Keras 3.15 writes every mask-aware layer's mask so, computed by keras.ops nodes), else the
        mask that x carries."""
        given = self.kwargs.get(name)
        if given is None:
            return x.mask
        if not isinstance(given, Tensor):
            raise self.unsupported(f"a {name}= call argument that is not one tensor: {str(given)[:40]}")
        return given

    def release(self) -> tuple[int, int] | None:
        """The writer's Keras (major, minor) version, None when the file does not say."""
        parts = self.keras_version.split(".")
        if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            return None
        return int(parts[0]), int(parts[1])

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
            backend=self.backend,
            keras_version=self.keras_version,
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
        self._record(fn, args, kwargs, (out,))
        return out

    def call_multi(self, fn: Callable, *args: Any, shapes: list, **kwargs: Any) -> list[Tensor]:
        """Record a call that returns a tuple of arrays."""
        outs = tuple(Tensor(tuple(s) if s is not None else None) for s in shapes)
        self._record(fn, args, kwargs, outs)
        return list(outs)

    def _record(self, fn: Callable, args: tuple, kwargs: dict, outs: tuple) -> None:
        op = Op(fn, tuple(_wrap(a) for a in args), {k: _wrap(v) for k, v in kwargs.items()}, outs)
        # Each new constant is labelled with its parameter: the generated file names it after that.
        try:
            bound = inspect.signature(fn).bind(*op.args, **op.kwargs).arguments
        except (TypeError, ValueError):
            bound = {}
        for param, value in bound.items():
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, Const) and not item.label:
                    item.label = f"{param}{i if len(items) > 1 else ''}"
        self.ops.append(op)


def same_array(x):
    # A layer that is the identity at inference but ends (or changes) its input's Keras mask: the
    # same array under a name of its own, as the mask belongs to the name.
    return x


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
