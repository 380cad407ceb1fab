"""SimpleRNN, GRU, LSTM, the generic RNN around their cells or a StackedRNNCells, and the old
CuDNNGRU/CuDNNLSTM.

A converter reads the layer's config and weights into an RNNSpec (flags checked, weights laid out by
cells.py; a StackedSpec holds one per stacked cell) and records one loop call per cell (loops.py).
Stateful layers get state slots that the generated predict() carries between calls. Shared with
bidirectional.py, time_distributed.py and convlstm.py: the specs and the call-input and mask checks.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import BadModelFile
from ...h5reader import config as cfgmod
from ..base import Layer, Tensor, as_int, converter, tensors_in
from . import cells
from .loops import gru_sequence, lstm_sequence, reverse_time, rnn_initial_state, simple_rnn_sequence

RNN_CLASSES = (
    "SimpleRNN",
    "GRU",
    "LSTM",
    "CuDNNGRU",
    "CuDNNLSTM",
    "UnifiedGRU",
    "UnifiedLSTM",
    "GRUV2",
    "LSTMV2",
    "RNN",
)
CELLS = ("SimpleRNNCell", "GRUCell", "LSTMCell")
LOOPS = {"SimpleRNN": simple_rnn_sequence, "GRU": gru_sequence, "LSTM": lstm_sequence}


def _kind(class_name: str) -> str:
    for kind in ("SimpleRNN", "GRU", "LSTM"):
        if kind in class_name:
            return kind
    raise BadModelFile(f"{class_name} is not a recurrent layer")


def _unwrap_cell(layer: Layer, class_name: str, config: dict) -> tuple[str, dict]:
    """RNN(LSTMCell(...)) and friends: the cell's config with the RNN's flags, as if it were LSTM(...)."""
    if class_name != "RNN":
        return class_name, config
    cell = config.get("cell")
    if not isinstance(cell, dict):
        raise BadModelFile(f"{layer.describe()} has no cell config")
    cls = cfgmod.class_of(cell)
    if cls not in CELLS:
        raise layer.unsupported(f"an RNN around {cls[:60]}")
    merged = dict(cfgmod.config_of(cell))
    merged.update((k, v) for k, v in config.items() if k != "cell")
    return cls[: -len("Cell")], merged


class RNNSpec:
    """A recurrent layer's config and weights, checked and laid out for its loop."""

    def __init__(self, layer: Layer, class_name: str, config: dict, weights: list, features: int) -> None:
        self.layer = layer
        class_name, config = _unwrap_cell(layer, class_name, config)
        self.kind = _kind(class_name)
        cudnn = class_name.startswith("CuDNN")
        get = config.get
        self.units = as_int(get("units"), f"{self.kind} units")
        if self.units <= 0:
            raise BadModelFile(f"{layer.describe()} has {self.units} units")
        if get("time_major"):
            raise layer.unsupported("time_major=True")
        self.return_sequences = bool(get("return_sequences", False))
        self.return_state = bool(get("return_state", False))
        self.go_backwards = bool(get("go_backwards", False))
        self.stateful = bool(get("stateful", False))
        self.zero_masked = bool(get("zero_output_for_mask", False))
        u, gates = self.units, cells.GATE_COUNT[self.kind]
        self.activation = cells.candidate_activation(layer, "tanh" if cudnn else get("activation", "tanh"))
        self.gate = None
        if self.kind != "SimpleRNN":
            self.gate = cells.gate_name(layer, "sigmoid" if cudnn else get("recurrent_activation", "sigmoid"))
        use_bias = True if cudnn else bool(get("use_bias", True))
        if len(weights) != (3 if use_bias else 2):
            implied = "its config implies 3" if use_bias else "use_bias=False implies 2"
            raise BadModelFile(f"{layer.describe()} has {len(weights)} weight arrays, {implied}")
        kernel, recurrent_kernel = weights[0], weights[1]
        bias = weights[2] if use_bias else None
        for name, array, shape in (
            ("kernel", kernel, (features, gates * u)),
            ("recurrent kernel", recurrent_kernel, (u, gates * u)),
        ):
            if tuple(array.shape) != shape:
                raise BadModelFile(f"{layer.describe()} {name} has shape {tuple(array.shape)}, expected {shape}")
        if bias is not None:
            cells.check_bias_shape(layer, self.kind, u, bias, cudnn)
        if cudnn:
            kernel, recurrent_kernel, bias = cells.from_cudnn([kernel, recurrent_kernel, bias], gates)
        self.reset_after = self.kind == "GRU" and (
            bias.ndim == 2 if bias is not None else bool(get("reset_after", False))
        )
        stated = get("reset_after", self.reset_after)
        if self.kind == "GRU" and bias is not None and stated != (bias.ndim == 2):
            raise BadModelFile(f"{layer.describe()} bias shape {tuple(bias.shape)} contradicts reset_after")
        kernel, recurrent_kernel = kernel.astype(np.float64), recurrent_kernel.astype(np.float64)
        # The loop's weights by parameter name (GRU reset_after=False adds recurrent_h_kernel).
        if self.kind == "SimpleRNN":
            self.weights = {"step_kernel": cells.simple_rnn_kernel(kernel, recurrent_kernel, bias)}
        elif self.kind == "GRU":
            fold = cells.gate_fold(layer, self.gate)
            self.weights = cells.gru_kernels(kernel, recurrent_kernel, bias, self.reset_after, fold)
        else:
            fold = cells.gate_fold(layer, self.gate)
            self.weights = {"step_kernel": cells.lstm_kernel(kernel, recurrent_kernel, bias, fold)}

    @property
    def state_count(self) -> int:
        return 2 if self.kind == "LSTM" else 1

    @property
    def state_shapes(self) -> list:
        return [(self.units,)] * self.state_count

    def loop(self, zero_masked: bool | None = None) -> tuple[Callable, list, dict]:
        """The loop function, its positional weights and its keyword arguments (options, optional
        weights); `zero_masked` overrides the config's (Bidirectional forces its own)."""
        weights = dict(self.weights)
        positional = [weights.pop(k) for k in ("step_kernel", "input_h_kernel", "input_h_bias") if k in weights]
        options = {} if self.gate is None else {"gate": self.gate}
        options.update(activation=self.activation, go_backwards=self.go_backwards)
        options.update(return_sequences=self.return_sequences)
        options["zero_masked"] = self.zero_masked if zero_masked is None else zero_masked
        return LOOPS[self.kind], positional, {**options, **weights}

    def run(self, x: Tensor, states: list, mask: Tensor | None, zero_masked: bool | None = None) -> tuple:
        """Record the loop; returns (output Tensor, [final state Tensors])."""
        steps = x.shape[0]
        out_shape = (steps, self.units) if self.return_sequences else (self.units,)
        shapes = [out_shape] + [(self.units,)] * self.state_count
        inputs = [x] + [states[i] if i < len(states) else None for i in range(self.state_count)] + [mask]
        fn, weights, options = self.loop(zero_masked)
        outs = self.layer.call_multi(fn, *inputs, *weights, shapes=shapes, **options)
        return outs[0], outs[1:]


def stacked_cells(layer: Layer, config: dict) -> list | None:
    """The cell entries of RNN(StackedRNNCells([...])) (or an old config's list of cells), else None."""
    cell = config.get("cell")
    if isinstance(cell, dict) and cfgmod.class_of(cell) == "StackedRNNCells":
        stack = cfgmod.config_of(cell)
        if stack.get("reverse_state_order"):
            raise layer.unsupported("StackedRNNCells with reverse_state_order=True")
        cell = stack.get("cells")
    elif not isinstance(cell, list):
        return None
    if not isinstance(cell, list) or not cell or not all(isinstance(c, dict) for c in cell):
        raise BadModelFile(f"{layer.describe()} has an invalid list of stacked cells")
    return cell


class StackedSpec:
    """RNN around StackedRNNCells: at each step the cells run one after another, each on the output of
    the one before. That is one RNNSpec per cell run over the whole sequence in turn (every one but the
    last returning its sequence); masked steps are skipped by all of them alike. go_backwards reverses
    the input once, so every cell and the returned sequence follow the processing order, like Keras.
    States (return_state, initial_state, stateful) are the cells' states in order, flattened."""

    def __init__(self, layer: Layer, config: dict, entries: list, weights: list, features: int) -> None:
        self.layer = layer
        self.return_sequences = bool(config.get("return_sequences", False))
        self.return_state = bool(config.get("return_state", False))
        self.go_backwards = bool(config.get("go_backwards", False))
        self.stateful = bool(config.get("stateful", False))
        self.zero_masked = bool(config.get("zero_output_for_mask", False))
        last = len(entries) - 1
        self.cells = []
        for i, entry in enumerate(entries):
            flags = {"return_sequences": i < last or self.return_sequences, "go_backwards": False}
            flags.update(zero_output_for_mask=self.zero_masked and i == last, time_major=config.get("time_major"))
            count = weight_count("RNN", {"cell": entry})
            spec = RNNSpec(layer, "RNN", {"cell": entry, **flags}, weights[:count], features)
            weights, features = weights[count:], spec.units
            self.cells.append(spec)
        if weights:
            raise BadModelFile(f"{layer.describe()} has {len(weights)} weight arrays more than its cells use")
        self.units = self.cells[-1].units

    @property
    def state_count(self) -> int:
        return sum(spec.state_count for spec in self.cells)

    @property
    def state_shapes(self) -> list:
        return [shape for spec in self.cells for shape in spec.state_shapes]

    def run(self, x: Tensor, states: list, mask: Tensor | None, zero_masked: bool | None = None) -> tuple:
        """Record the cells' loops; returns (output Tensor, [final state Tensors of every cell])."""
        if self.go_backwards:
            x = self.layer.call(reverse_time, x, shape=x.shape, dtype=x.dtype)
            if mask is not None:
                mask = self.layer.call(reverse_time, mask, shape=mask.shape, dtype=mask.dtype)
        finals = []
        for i, spec in enumerate(self.cells):
            given = states[len(finals) : len(finals) + spec.state_count] if states else []
            last = i == len(self.cells) - 1
            x, cell_finals = spec.run(x, given, mask, zero_masked if last else None)
            finals += cell_finals
        return x, finals


def rnn_spec(layer: Layer, class_name: str, config: dict, weights: list, features: int):
    """The RNNSpec of a recurrent layer config, or a StackedSpec for RNN(StackedRNNCells)."""
    entries = stacked_cells(layer, config) if class_name == "RNN" else None
    if entries is not None:
        return StackedSpec(layer, config, entries, weights, features)
    return RNNSpec(layer, class_name, config, weights, features)


def sequence_input(layer: Layer, x: Tensor, spatial_rank: int = 0) -> Tensor:
    """x checked: (batch, time, features), or (batch, time, *spatial, channels) with known sizes."""
    if x.shape is None or len(x.shape) != 2 + spatial_rank or None in x.shape[1:]:
        want = "(batch, time, features)" if not spatial_rank else f"(batch, time) + {spatial_rank + 1} known sizes"
        raise layer.unsupported(f"a recurrent layer needs {want} input, got {x.shape}")
    if x.dtype not in ("float32", "float16", "float64", "bfloat16"):
        raise layer.unsupported(f"a recurrent layer on {x.dtype} input")
    return x


def _all_tensors(value: object) -> bool:
    return isinstance(value, Tensor) or (isinstance(value, (list, tuple)) and all(_all_tensors(v) for v in value))


def call_inputs(layer: Layer, spatial_rank: int = 0) -> tuple[Tensor, list]:
    """The sequence and any initial states (Keras 2 lists them after the input, Keras 3 as a kwarg)."""
    tensors = layer.inputs
    if not tensors:
        raise layer.unsupported("called without an input tensor")
    x, states = tensors[0], tensors[1:]
    given = layer.kwargs.get("initial_state")
    if given is not None:
        extra = tensors_in(given)  # nested per cell for stacked cells: flattened in order
        if not _all_tensors(given):
            raise layer.unsupported("an initial_state that is not a tensor")
        states = states + extra
    if any(isinstance(v, Tensor) for k, v in layer.kwargs.items() if k not in ("initial_state", "mask")):
        raise layer.unsupported(f"tensor call arguments {sorted(layer.kwargs)}")
    return sequence_input(layer, x, spatial_rank), states


def stateful_states(layer: Layer, x: Tensor, shapes: list) -> tuple[list, list]:
    """Initial states of a stateful layer (one per shape) and their slots, which the generated predict() carries."""
    states, slots = [], []
    for shape in shapes:
        slot = layer.state_input(shape)
        slots.append(slot)
        states.append(layer.call(rnn_initial_state, slot, x, shape=shape, state_shape=shape))
    return states, slots


def sequence_mask(layer: Layer, x: Tensor) -> Tensor | None:
    """The (batch, time) mask Keras hands the layer, checked: an explicit `mask=` call argument (Keras
    3.15 writes a Functional model's Masking as op nodes whose result every mask-aware layer gets so),
    else the one that came with x (Masking, Embedding(mask_zero=True), a layer passing it on)."""
    mask = layer.call_mask(x)
    if mask is not None and (mask.shape != x.shape[:1] or mask.dtype != "bool"):
        raise layer.unsupported(f"a mask of shape {mask.shape} ({mask.dtype}) for input {x.shape}")
    return mask


def check_states(layer: Layer, spec: RNNSpec | StackedSpec, states: list) -> None:
    if len(states) != spec.state_count:
        raise layer.unsupported(f"{len(states)} initial states given, the layer has {spec.state_count}")
    for s, want in zip(states, spec.state_shapes):
        if s.shape != want:
            raise layer.unsupported(f"an initial state of shape {s.shape}, expected {want}")


def weight_count(class_name: str, config: dict) -> int:
    """How many weight arrays a recurrent layer of this config holds."""
    cell = config.get("cell") if class_name == "RNN" else None
    if isinstance(cell, dict) and cfgmod.class_of(cell) == "StackedRNNCells":
        cell = cfgmod.config_of(cell).get("cells")
    if isinstance(cell, list):
        return sum(weight_count("RNN", {"cell": c}) for c in cell if isinstance(c, dict))
    if isinstance(cell, dict):
        config = cfgmod.config_of(cell)
    if class_name.startswith("CuDNN"):
        return 3
    return 3 if config.get("use_bias", True) else 2


def wrapped_config(layer: Layer, key: str) -> tuple[str, dict]:
    """(class name, config) of a wrapper's inner layer config `key` ("layer", "backward_layer")."""
    entry = layer.get(key)
    if not isinstance(entry, dict):
        raise BadModelFile(f"{layer.describe()} has no {key!r} layer config")
    cls = cfgmod.class_of(entry)
    return cls, cfgmod.config_of(entry)


@converter(*RNN_CLASSES, mask="own")
def recurrent_layer(layer: Layer):
    x, states = call_inputs(layer)
    mask = sequence_mask(layer, x)
    spec = rnn_spec(layer, layer.class_name, layer.config, layer.weights, x.shape[1])
    if spec.stateful:
        if states:
            raise layer.unsupported("stateful=True together with an initial_state")
        states, slots = stateful_states(layer, x, spec.state_shapes)
    elif states:
        check_states(layer, spec, states)
    y, finals = spec.run(x, states, mask)
    if spec.stateful:
        for slot, final in zip(slots, finals):
            layer.state_output(slot, final)
    if spec.return_sequences:
        y.mask = mask
    return [y] + finals if spec.return_state else y
