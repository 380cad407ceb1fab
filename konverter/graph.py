"""Turn a ModelFile into a Program: model inputs, an ordered list of NumPy calls, model outputs.

Sequential and Functional models (nested ones too) are flattened into one straight-line
program. Each Keras layer call is handed to the converter registered for its class.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BadModelFile, KonverterError, UnsupportedModel
from .h5reader import ModelFile
from .h5reader import config as cfgmod
from .h5reader.text import label
from .layers import CONVERTERS, Layer, Tensor
from .layers.base import WRAPS, Const, mask_policy, same_array
from .layers.quantized import policy_refusal, quantization_mode

REFUSED = {"Lambda": "runs Python code stored in the file, which Konverter never executes"}


# Input dtypes the generated predict() accepts (its as_batch converts to them with np.asarray).
INPUT_DTYPES = {"bool", "float16", "float32", "float64"} | {f"{s}int{n}" for s in ("", "u") for n in (8, 16, 32, 64)}
INPUT_DTYPES |= {"string"}  # text (StringLookup models): NumPy str arrays, see runtime.text_batch


@dataclass
class ModelInput:
    name: str
    tensor: Tensor


@dataclass
class Program:
    """What the code generator turns into a Python file."""

    name: str
    inputs: list
    outputs: list  # of Tensor
    output_names: list  # of str
    outputs_as_dict: bool
    ops: list = field(default_factory=list)
    layer_count: int = 0
    states: list = field(default_factory=list)  # stateful RNNs: [state input, final state] Tensor pairs
    notes: list = field(default_factory=list)  # one line each: what the user should know (NaN weights)


def dtype_name(value: Any) -> str:
    """An input's dtype from its config: "float32", or Keras 3's DTypePolicy dict."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name", "float32")
    if not isinstance(value, str):
        return "float32"
    if value in ("float16", "float64"):  # Keras casts float inputs to float32 (a mixed policy is refused)
        return "float32"
    if value in INPUT_DTYPES:
        return value
    # The name is written into the generated file (as a literal): only NumPy's plain dtype names pass.
    if value.isidentifier() and len(value) <= 20:
        raise UnsupportedModel(f"input dtype {value} is not supported")
    raise BadModelFile(f"invalid dtype {label(value)}")


def _shape_from(cfg: dict) -> tuple | None:
    for key in ("batch_shape", "batch_input_shape"):
        shape = cfg.get(key)
        if shape is not None:
            break
    else:
        shape = cfg.get("input_shape")
        if shape is None:
            return None
        shape = [None] + list(shape) if isinstance(shape, list) else None
    if not isinstance(shape, list) or not shape:
        raise BadModelFile(f"invalid input shape {str(shape)[:80]}")
    for d in shape:
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d <= 0 or d > 2**31):
            raise BadModelFile(f"invalid input shape {str(shape)[:80]}")
    return tuple(shape[1:])


def converter_key(entry: dict) -> str:
    """The CONVERTERS key of a config entry: its class name, or "ops.<Class>" for a Keras 3
    `keras.ops` node (whose class names, e.g. Add or Reshape, clash with layers')."""
    cls = cfgmod.class_of(entry)
    return f"ops.{cls}" if cfgmod.is_op_node(entry) else cls


def refusal(entry: dict) -> str:
    """Why a layer entry cannot be converted, judged from its config alone ("" when it can be tried).

    The one place that says so: conversion and `inspect` both ask it.
    """
    cls = converter_key(entry)
    # A converter may refuse by config before conversion (e.g. TFOpLambda by function name).
    refuses = getattr(CONVERTERS.get(cls), "refuses", None)
    why = refuses(entry) if refuses is not None else None
    if why:
        return why
    if cls == "InputLayer":
        return ""
    if cls in CONVERTERS:  # supported, unless its dtype policy is one Konverter does not compute
        return policy_refusal(cls, cfgmod.config_of(entry))
    registered = entry.get("registered_name")
    if cls in REFUSED:
        return REFUSED[cls]
    if isinstance(registered, str) and ">" in registered:
        return "custom object; its code is not in the file"
    if cls.startswith("ops."):
        return "keras.ops operation not supported"
    return "not supported"


def unsupported_layers(entry: dict, found: list) -> None:
    """Collect every layer Konverter cannot convert, at any depth, as "'name' (Class: why)"."""
    for layer in cfgmod.sublayers(entry):
        if cfgmod.is_model(layer):
            unsupported_layers(layer, found)
            continue
        why = refusal(layer)
        if why:
            found.append(f"{label(cfgmod.name_of(layer))} ({label(converter_key(layer), quote=False)}: {why})")
            continue
        # Wrappers (Bidirectional, TimeDistributed): their inner layers are checked the same way.
        cfg = cfgmod.config_of(layer)
        wrapped = [cfg[k] for k in WRAPS.get(converter_key(layer), ()) if isinstance(cfg.get(k), dict)]
        if wrapped:
            unsupported_layers({"class_name": "Sequential", "config": {"layers": wrapped}}, found)


class BuildObserver:
    """Sees every layer call of a build (what `inspect` uses). With an observer the builder reports
    problems to it and keeps walking instead of stopping at the first unsupported layer."""

    def layer(self, path: tuple, entry: dict, out: Any, problem: str) -> Any:
        """After each call: `out` is None or shapeless when the layer was not converted (`problem` says
        why, "" when `refusal` does); the return value is what later layers receive."""
        return out

    def finished(self, inputs: list, outputs: list, names: list, problems: list) -> None:
        """At the end: the model's inputs and outputs (empty when the graph itself is broken)."""


class Builder:
    """Flattens a model's (nested) layer graph into one Program by calling each layer's converter."""

    def __init__(self, model: ModelFile, options: dict | None = None, observer: BuildObserver | None = None) -> None:
        self.model = model
        self.options = options or {}
        self.observer = observer
        self.ops: list = []
        self.problems: list[str] = []
        self.layer_count = 0
        self.state_slots: list = []

    # ------------------------------------------------------------------ entry point
    def build(self) -> Program:
        config = self.model.config
        if self.observer is None:
            found: list[str] = []
            unsupported_layers(config, found)
            if found:
                raise UnsupportedModel("unsupported layers: " + ", ".join(found))
        cls = cfgmod.class_of(config)
        name = str(cfgmod.config_of(config).get("name", "model"))
        try:
            top = self._top_sequential if cls == "Sequential" else self._top_functional
            inputs, outputs, names, as_dict = top(config)
        except KonverterError as err:
            if self.observer is None:
                raise
            self.problems.append(str(err))  # the graph itself is broken: report what was found so far
            inputs, outputs, names, as_dict = [], [], [], False
        if self.observer is not None:
            self.observer.finished(inputs, outputs, names, self.problems)
        elif self.problems:
            raise UnsupportedModel("; ".join(self.problems))
        # Stateful models also need the ops that compute the state they carry to the next call.
        roots = list(outputs) + [final for _, final in self.state_slots if final is not None]
        ops = _live_ops(self.ops, roots)
        return Program(name, inputs, outputs, names, as_dict, ops, self.layer_count, self.state_slots)

    # ------------------------------------------------------------------ Sequential
    def _sequential_input(self, entry: dict) -> tuple[str, tuple, str]:
        cfg = cfgmod.config_of(entry)
        layers = cfgmod.sublayers(entry)
        first = layers[0] if layers else None
        if first is not None:
            first_cfg = cfgmod.config_of(first)
            shape = (
                _shape_from(first_cfg)
                if cfgmod.class_of(first) == "InputLayer"
                or ("batch_input_shape" in first_cfg or "batch_shape" in first_cfg)
                else None
            )
            if shape is None and cfgmod.is_model(first):
                return self._sequential_input(first)
            if shape is not None:
                name = cfgmod.name_of(first) if cfgmod.class_of(first) == "InputLayer" else "input"
                return name, shape, dtype_name(first_cfg.get("dtype"))
        build = cfg.get("build_input_shape")
        if isinstance(build, list) and build:
            return "input", _shape_from({"batch_shape": build}), "float32"
        raise BadModelFile("the model's input shape is not stored (was the model ever built?)")

    def _top_sequential(self, config: dict):
        name, shape, dtype = self._sequential_input(config)
        x = Tensor(shape, dtype)
        y = self._sequential(config, x, ())
        outs = y if isinstance(y, list) else [y]
        layers = [e for e in cfgmod.sublayers(config) if cfgmod.class_of(e) != "InputLayer"]
        last = cfgmod.name_of(layers[-1]) if layers else name
        names = [last] if len(outs) == 1 else [f"{last}_{i}" for i in range(len(outs))]
        return [ModelInput(name, x)], outs, names, False

    def _sequential(self, entry: dict, x: Any, prefix: tuple) -> Any:
        for layer in cfgmod.sublayers(entry):
            if cfgmod.class_of(layer) == "InputLayer":
                continue
            x = self._call(layer, prefix, [x], {})
        return x

    # ------------------------------------------------------------------ Functional
    def _top_functional(self, config: dict):
        cfg = cfgmod.config_of(config)
        layers = {cfgmod.name_of(e): e for e in cfgmod.sublayers(config)}
        inputs = []
        bound = {}
        for ref in _leaves(cfg.get("input_layers")):
            lname = ref[0]
            entry = layers.get(lname)
            if entry is None or cfgmod.class_of(entry) != "InputLayer":
                raise BadModelFile(f"input_layers names {label(lname)}, which is not an InputLayer of the model")
            icfg = cfgmod.config_of(entry)
            shape = _shape_from(icfg)
            if shape is None:
                raise BadModelFile(f"input {label(lname)} has no shape")
            t = Tensor(shape, dtype_name(icfg.get("dtype")))
            inputs.append(ModelInput(lname, t))
            bound[lname] = t
        if not inputs:
            raise BadModelFile("the model config lists no inputs")
        outs, names, as_dict = self._functional(config, bound, ())
        return inputs, outs, names, as_dict

    def _functional(self, entry: dict, bound: dict, prefix: tuple):
        """Convert every call of every layer of a Functional model whose inputs are `bound`."""
        cfg = cfgmod.config_of(entry)
        entries = cfgmod.sublayers(entry)
        layers = {cfgmod.name_of(e): e for e in entries}
        tensors: dict[tuple, Any] = {}
        for lname, t in bound.items():
            tensors[(lname, 0, 0)] = t
        keras2 = self.model.keras_major < 3
        pending = []
        for e in entries:
            if cfgmod.class_of(e) == "InputLayer":
                if cfgmod.name_of(e) not in bound:
                    raise BadModelFile(f"InputLayer {label(cfgmod.name_of(e))} is not a model input")
                continue
            calls = e.get("inbound_nodes")
            if not isinstance(calls, list):
                raise BadModelFile(f"layer {label(cfgmod.name_of(e))} has no inbound_nodes list")
            for k, call in enumerate(calls):
                pending.append((e, k, call))

        def offset(lname: str, node: int, in_io_list: bool) -> int:
            shifted = _offset(lname, node, in_io_list)
            # Defensive, for writers not covered above: a nested model's call index must exist.
            calls = layers[lname].get("inbound_nodes")
            if cfgmod.is_model(layers[lname]) and isinstance(calls, list):
                if shifted < 0:
                    return node
                if shifted >= len(calls) and node - 1 < len(calls) and node >= 1:
                    return node - 1
            return shifted

        def _offset(lname: str, node: int, in_io_list: bool) -> int:
            target = layers.get(lname)
            if target is None:
                raise BadModelFile(f"a layer refers to {label(lname)}, which is not in the model")
            if cfgmod.is_model(target) and (keras2 or (in_io_list and cfgmod.class_of(target) != "Sequential")):
                if keras2 and cfgmod.class_of(target) == "Sequential":
                    subs = cfgmod.sublayers(target)
                    old = self.model.keras_version.startswith("2.") and self.model.keras_version[:3] in (
                        "2.0",
                        "2.1",
                        "2.2",
                    )
                    if not old and not (subs and cfgmod.class_of(subs[0]) == "InputLayer"):
                        return node
                return node - 1
            return node

        def resolve(value: Any, in_io_list: bool = False) -> Any:
            ref = _as_ref(value)
            if ref is not None:
                lname, node, index = ref
                key = (lname, offset(lname, node, in_io_list), index)
                if key not in tensors:
                    raise _Missing(key)
                return tensors[key]
            if isinstance(value, list):
                return [resolve(v) for v in value]
            if isinstance(value, dict):
                return {k: resolve(v) for k, v in value.items()}
            return value

        readers = _Readers(self.model.keras_major, set(bound) if prefix else set())
        for e, k, call in pending:
            found: list = []
            _parse_call(call, lambda value, found=found: _collect_refs(value, found))
            node = (cfgmod.name_of(e), k)
            readers.entries[node] = (e, call)
            for lname, n, index in found:
                readers.read(node, (lname, offset(lname, n, False) if lname in layers else n, index))
        for key, t in tensors.items():
            readers.keys.setdefault(id(t), []).append(key)

        # Calls run in config order; one whose input is not computed yet waits for the call that makes
        # it and runs right after that one: each call is tried at most once per input (linear, even
        # for a graph listed in reverse order).
        queue = deque(pending)
        waiting: dict[tuple, list] = {}  # (layer, node) -> calls that need one of its outputs
        done = 0
        while queue:
            e, k, call = queue.popleft()
            try:
                args, kwargs = _parse_call(call, resolve)
            except _Missing as missing:
                waiting.setdefault(missing.args[0][:2], []).append((e, k, call))
                continue
            done += 1
            lname = cfgmod.name_of(e)
            out = self._call(e, prefix, args, kwargs, (readers, (lname, k)))
            for i, t in enumerate(out if isinstance(out, list) else [out]):
                tensors[(lname, k, i)] = t
                readers.keys.setdefault(id(t), []).append((lname, k, i))
            queue.extend(waiting.pop((lname, k), ()))
        if done < len(pending):
            names = sorted({label(cfgmod.name_of(e)) for calls in waiting.values() for e, _, _ in calls})
            raise BadModelFile("the layer graph has a cycle or an unreachable input: " + ", ".join(names[:10]))

        out_spec = cfg.get("output_layers")
        refs = _leaves(out_spec)
        if not refs:
            raise BadModelFile("the model config lists no outputs")
        try:
            outs = [resolve(list(r), in_io_list=True) for r in refs]
        except _Missing as missing:
            raise BadModelFile(f"output {label(missing.args[0][0])} is never computed") from None
        if isinstance(out_spec, dict) and len(out_spec) == len(outs):
            return outs, sorted(out_spec), True
        return outs, [r[0] for r in refs], False

    # ------------------------------------------------------------------ one call
    def _call(self, entry: dict, prefix: tuple, args: list, kwargs: dict, site: tuple | None = None) -> Any:
        """Convert one call; `site` is (the Functional model's _Readers, this call's (layer, node))."""
        if self.observer is None:
            return self._convert(entry, prefix, args, kwargs, site)
        path = prefix + (cfgmod.name_of(entry),)
        if not cfgmod.is_model(entry) and refusal(entry):
            return self.observer.layer(path, entry, None, "")
        before = len(self.problems)
        try:
            out = self._convert(entry, prefix, args, kwargs, site)
        except KonverterError as err:
            self.problems.append(str(err))
            out = None
        problem = self.problems[-1] if len(self.problems) > before and not cfgmod.is_model(entry) else ""
        return self.observer.layer(path, entry, out, problem)

    def _convert(self, entry: dict, prefix: tuple, args: list, kwargs: dict, site: tuple | None = None) -> Any:
        cls = converter_key(entry)
        name = cfgmod.name_of(entry)
        path = prefix + (name,)
        if cfgmod.is_model(entry):
            inputs = [t for t in _flat(args) if isinstance(t, Tensor)]
            if cls == "Sequential":
                if len(inputs) != 1:
                    raise BadModelFile(f"nested Sequential {label(name)} called on {len(inputs)} tensors")
                return self._sequential(entry, inputs[0], path)
            sub_inputs = [r[0] for r in _leaves(cfgmod.config_of(entry).get("input_layers"))]
            if len(sub_inputs) != len(inputs):
                raise BadModelFile(f"nested model {label(name)} takes {len(sub_inputs)} inputs, got {len(inputs)}")
            outs, _, _ = self._functional(entry, dict(zip(sub_inputs, inputs)), path)
            return outs if len(outs) > 1 else outs[0]
        if any(isinstance(t, Tensor) and t.shape is None for t in _flat(args)):
            return Tensor(None)  # an earlier layer already failed; its problem is reported
        self.layer_count += 1
        layer = Layer(
            name=name,
            class_name=cls,
            config=cfgmod.config_of(entry),
            weights=_float_weights(self.model.layer_weights(path), cfgmod.config_of(entry)),
            keras_major=self.model.keras_major,
            args=args,
            kwargs=kwargs,
            options=self.options,
            backend=self.model.backend,
            weight_names=self.model.weight_names.get(tuple(path), []),
            keras_version=self.model.keras_version,
            assets=self.model.layer_assets(path),
        )
        start, start_states = len(self.ops), len(self.state_slots)
        layer.ops = self.ops
        layer.state_slots = self.state_slots
        try:
            out = _apply_mask_policy(layer, CONVERTERS[cls](layer))
            if layer.ends_masks:
                _end_masks(layer, site)
        except UnsupportedModel as err:
            del self.ops[start:]
            del self.state_slots[start_states:]
            self.problems.append(str(err))
            return Tensor(None)
        except KonverterError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, MemoryError) as err:
            raise BadModelFile(
                f"{layer.describe()} has an invalid config ({type(err).__name__}: {str(err)[:100]})"
            ) from None
        comment = f"{label('/'.join(path))} ({label(cls, quote=False)})"  # the path tells nested twins apart
        for op in self.ops[start:]:
            op.layer, op.keras = comment, (path, cls)
            for const in _flat([list(op.args), op.kwargs]):
                if isinstance(const, Const) and not const.keras:
                    const.keras = op.keras
        return out


CONSTANT_VALUE = "_CONSTANT_VALUE"  # tf.keras's marker for a non-tensor first call argument


class _Missing(Exception):
    pass


def _float_weights(weights: list, config: dict) -> list:
    """Keras assigns stored values to its float32 variables: integer weights would give float64 outputs.
    A quantized layer's integer kernels stay integers (its own arithmetic reads them)."""
    if quantization_mode(config):
        return weights
    return [w.astype(np.float32) if w.dtype.kind in "iub" else w for w in weights]


def _apply_mask_policy(layer: Layer, out: Any) -> Any:
    """Keras's mask after a layer call, by the layer's policy (base.MASK_POLICY): "pass" gives the
    outputs the mask Keras hands the call (the `mask=` argument, else the first input's), "drop"
    leaves them without one, "own" trusts the converter; a layer without a policy is refused when
    a mask reaches it. Returns `out`, an output that is an input under another mask renamed."""
    given = layer.kwargs.get("mask")
    masked = [t for t in _flat([layer.args, layer.kwargs]) if isinstance(t, Tensor) and t.mask is not None]
    if not masked and not isinstance(given, Tensor):
        return out
    policy = mask_policy(layer.class_name, layer.keras_major)
    if policy is None:
        raise layer.unsupported("receives a mask (from Masking or Embedding mask_zero) that Konverter cannot apply")
    if policy == "own":
        return out
    first = layer.args[0] if layer.args and isinstance(layer.args[0], Tensor) else None
    mask = None
    if policy == "pass" and first is not None:
        mask = layer.call_mask(first)
    inputs = {id(t) for t in _flat([layer.args, layer.kwargs]) if isinstance(t, Tensor)}
    outs = out if isinstance(out, list) else [out]
    for i, t in enumerate(outs):
        if not isinstance(t, Tensor) or t.mask is mask:
            continue
        if id(t) in inputs:  # the identity at inference: the same array, under a mask of its own
            outs[i] = t = layer.call(same_array, t, shape=t.shape, dtype=t.dtype)
        if t.mask is None:
            t.mask = mask
    return outs if isinstance(out, list) else outs[0]


@dataclass
class _Readers:
    """Which calls of a Functional model read which tensors, for a call that deletes its inputs'
    masks (Layer.ends_masks): Keras runs the calls in an order of its own (by depth in the graph,
    not the config's), so only the calls that depend on that call, or it on them, have a known order."""

    keras_major: int
    outer: set  # a nested model's inputs: their other readers are in the model around it
    entries: dict = field(default_factory=dict)  # (layer, node) -> (config entry, inbound node)
    readers: dict = field(default_factory=dict)  # tensor key (layer, node, index) -> [(layer, node)]
    children: dict = field(default_factory=dict)  # (layer, node) -> {calls reading one of its outputs}
    parents: dict = field(default_factory=dict)  # (layer, node) -> {calls whose outputs it reads}
    keys: dict = field(default_factory=dict)  # id(Tensor) -> [tensor keys it stands for]

    def read(self, node: tuple, key: tuple) -> None:
        self.readers.setdefault(key, []).append(node)
        self.children.setdefault(key[:2], set()).add(node)
        self.parents.setdefault(node, set()).add(key[:2])

    def reachable(self, node: tuple, edges: dict) -> set:
        """The calls that depend on call `node` (edges: children) or that it depends on (parents)."""
        found: set = set()
        todo = [node]
        while todo:
            for other in edges.get(todo.pop(), ()):
                if other not in found:
                    found.add(other)
                    todo.append(other)
        return found

    def unaffected(self, node: tuple) -> bool:
        """Whether call `node` computes the same whatever mask its inputs carry: a layer that drops
        masks, or one handed its mask by a `mask=` argument in the file."""
        entry, call = self.entries[node]
        if mask_policy(converter_key(entry), self.keras_major) == "drop":
            return True
        given = call.get("kwargs", {}).get("mask") if isinstance(call, dict) else None
        return _as_ref(given) is not None


def _end_masks(layer: Layer, site: tuple | None) -> None:
    """Delete the masks of the tensors `layer` says it deletes (Keras 3.7+'s MultiHeadAttention) for
    the calls converted after it. Keras runs its calls in an order of its own, so this is right only
    when every other reader of those tensors that reads masks runs in a known order: before the
    call (it depends on them) or, reading the very tensors the call was given, after it (they
    depend on it). An array standing for several Keras tensors (an identity layer passing the mask
    on) has every tensor's readers checked: only the call's own input loses its mask in Keras.
    Refused otherwise, naming the reader."""
    readers, node = site if site is not None else (None, None)
    for t in layer.ends_masks:
        keys = readers.keys.get(id(t), []) if readers is not None else []
        if not keys or any(key[0] in readers.outer for key in keys):  # outside this graph
            raise layer.unsupported("a masked input whose other readers are outside this model's graph")
        before = readers.reachable(node, readers.parents)
        after = readers.reachable(node, readers.children)
        own = {key for key in keys if node in readers.readers.get(key, [])}
        for key in keys:
            for c in readers.readers.get(key, []):
                if c == node or c in before or (key in own and c in after) or readers.unaffected(c):
                    continue
                raise layer.unsupported(
                    f"a masked input that {label(c[0])} also reads: Keras 3.7+ deletes that mask in this"
                    " layer, and whether that one sees it depends on Keras's order of the graph"
                )
        t.mask = None


def _collect_refs(value: Any, found: list) -> None:
    """Every tensor reference inside a call's arguments (for _parse_call), in order."""
    ref = _as_ref(value)
    if ref is not None:
        found.append(ref)
    elif isinstance(value, list):
        for v in value:
            _collect_refs(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_refs(v, found)


def _as_ref(value: Any) -> tuple | None:
    """A tensor reference in either node format, as (layer, node, tensor), else None."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        config = value.get("config")
        history = config.get("keras_history") if isinstance(config, dict) else None
        if not (isinstance(history, list) and len(history) == 3):
            raise BadModelFile("a __keras_tensor__ has no valid keras_history")
        value = history
    elif not (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)):
        return None
    name, node, index = value[0], value[1], value[2]
    if not isinstance(name, str) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (node, index)):
        raise BadModelFile(f"invalid tensor reference {str(value)[:80]}")
    return name, node, index


def _parse_call(call: Any, resolve) -> tuple[list, dict]:
    """Positional and keyword arguments of one layer call, with tensors resolved."""
    if isinstance(call, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args, kwargs = call.get("args", []), call.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise BadModelFile("an inbound node has invalid args/kwargs")
        return resolve(args), resolve(kwargs)
    if not isinstance(call, list) or not call:
        raise BadModelFile("an inbound node is not a list of tensor references")
    if isinstance(call[0], str):  # TFOpLambda style: one reference, not wrapped
        call = [call]
    tensors, kwargs = [], {}
    for ref in call:
        if isinstance(ref, list) and len(ref) in (3, 4) and ref[:2] == [CONSTANT_VALUE, -1]:
            tensors.append(ref[2])  # a constant first argument of a TF op (tf.keras TFOpLambda)
        elif isinstance(ref, list) and ref and all(isinstance(r, list) and _as_ref(r) is not None for r in ref):
            tensors.extend(resolve(list(r[:3])) for r in ref)  # nested: a stack of RNN cells' initial states
        elif _as_ref(ref) is None:
            raise BadModelFile(f"invalid inbound node entry {str(ref)[:80]}")
        else:
            tensors.append(resolve(list(ref[:3])))
        if len(ref) == 4 and isinstance(ref[3], dict) and not kwargs:
            kwargs = resolve(ref[3])
    return ([tensors[0]] if len(tensors) == 1 else [tensors]), kwargs


def _leaves(spec: Any) -> list:
    """Triples [name, node, tensor] from input_layers/output_layers in any shape Keras writes."""
    if spec is None:
        return []
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str):
        return [spec]
    if isinstance(spec, dict):  # Keras flattens dicts in sorted key order
        return [leaf for k in sorted(spec) for leaf in _leaves(spec[k])]
    if isinstance(spec, list):
        return [leaf for v in spec for leaf in _leaves(v)]
    raise BadModelFile(f"invalid input/output layer list {str(spec)[:80]}")


def _flat(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    return [value]


def _live_ops(ops: list, outputs: list) -> list:
    """Drop calls whose results reach no model output (e.g. an unused output of a nested model)."""
    needed = {id(t) for t in outputs}
    live = []
    for op in reversed(ops):
        if any(id(t) in needed for t in op.outputs):
            live.append(op)
            needed.update(id(t) for t in _flat([list(op.args), op.kwargs]) if isinstance(t, Tensor))
    return live[::-1]


def build_program(model: ModelFile, options: dict | None = None) -> Program:
    """Convert every layer of a model into NumPy calls, or raise one KonverterError naming all problems."""
    return Builder(model, options).build()
