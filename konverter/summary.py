"""`konverter inspect`: what is in a model file, like Keras's model.summary(), without TensorFlow.

Works on models Konverter cannot convert (that is when people need it most): the layers are
walked with the normal graph builder, but an unsupported layer does not stop the walk. Output
shapes come from conversion where it gives them; past an unsupported layer they come from the
next layer's `build_config` in the file when it has one, else they are unknown.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from . import pipeline
from .convert import naming, require_regular_file
from .graph import BuildObserver, converter_key, refusal
from .h5reader import ModelFile
from .h5reader import config as cfgmod
from .h5reader.text import label
from .layers import Tensor

Shape = tuple  # Keras style, batch axis first as None: (None, 28, 28, 1)

FORMATS = {"h5": "legacy HDF5 (.h5)", "keras": "Keras zip archive (.keras)"}


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output."""

    name: str
    shape: Optional[Shape]  # None when unknown
    dtype: str


@dataclass(frozen=True)
class LayerInfo:
    """One row of the summary: a layer, or a nested model (its layers follow with depth + 1)."""

    name: str  # the layer's own name
    path: tuple  # names from the outermost model down to this layer
    class_name: str
    depth: int  # 0 for layers of the top model
    output_shapes: tuple  # one Shape (or None = unknown) per output; several when the layer is called again
    params: int  # weight values stored in the file (trainable and not, like Keras's "Param #")
    supported: bool
    reason: str = ""  # why not, when not supported (one line)

    @property
    def output_shape(self) -> str:
        """Display form: "(None, 16)", "multiple" for layers called with different shapes, "?" unknown."""
        shapes = set(self.output_shapes)
        if not shapes:
            return "?"
        if len(shapes) > 1:
            return "multiple"
        return shape_text(self.output_shapes[0])


@dataclass(frozen=True)
class ModelSummary:
    """What `konverter.inspect(path)` returns."""

    path: str
    format: str  # "h5" or "keras"
    keras_version: str
    backend: str
    model_class: str  # Sequential, Functional, Model
    name: str
    inputs: tuple  # of TensorInfo
    outputs: tuple  # of TensorInfo (empty when conversion stops before the outputs)
    layers: tuple  # of LayerInfo, in config order, nested models followed by their layers
    total_params: int
    problems: tuple = field(default=())  # every reason the model cannot be converted, one line each

    @property
    def convertible(self) -> bool:
        return not self.problems

    @property
    def format_description(self) -> str:
        return FORMATS.get(self.format, self.format)

    def to_dict(self) -> dict:
        """Plain JSON-ready data (shapes as lists, None for unknown sizes)."""
        data = asdict(self)
        data["convertible"] = self.convertible
        data["format_description"] = self.format_description
        for row, layer in zip(data["layers"], self.layers):
            row["path"] = list(layer.path)
            row["output_shape"] = layer.output_shape
            row["output_shapes"] = [None if s is None else list(s) for s in layer.output_shapes]
        for key in ("inputs", "outputs"):
            for item in data[key]:
                item["shape"] = None if item["shape"] is None else list(item["shape"])
        data["problems"] = list(self.problems)
        return data


def shape_text(shape: Optional[Shape]) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return ", ".join(shape_text(s) for s in shape)
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def inspect_model(path: str | os.PathLike) -> ModelSummary:
    """Describe a model file: format, Keras version, every layer with output shape, parameters, support.

    Raises BadModelFile when the file is not a readable Keras model; an unsupported layer is not an
    error here (it is reported in `layers[i].supported` and `problems`).
    """
    model = pipeline.read(path)
    walker = _Walker(model)
    pipeline.build(model, observer=walker)
    rows: list[LayerInfo] = []
    problems = list(walker.problems)
    _rows(model, model.config, (), 0, walker, rows, problems)
    cfg = cfgmod.config_of(model.config)
    return ModelSummary(
        path=os.fspath(path),
        format=model.format,
        keras_version=model.keras_version,
        backend=model.backend,
        model_class=model.class_name,
        name=str(cfg.get("name", "model")),
        inputs=tuple(walker.inputs),
        outputs=tuple(walker.outputs),
        layers=tuple(rows),
        total_params=sum(int(a.size) for arrays in model.weights.values() for a in arrays),
        problems=tuple(problems),
    )


def _rows(model: ModelFile, entry: dict, prefix: tuple, depth: int, walker: _Walker, rows: list, problems: list) -> int:
    """Append a LayerInfo for every layer under `entry` (and unsupported classes to `problems`).

    Returns the layers' parameter count.
    """
    total = 0
    for layer in cfgmod.sublayers(entry):
        cls = cfgmod.class_of(layer)
        name = cfgmod.name_of(layer)
        path = prefix + (name,)
        if cfgmod.is_model(layer):
            at = len(rows)
            rows.append(None)  # filled in once the children are counted
            params = _rows(model, layer, path, depth + 1, walker, rows, problems)
            supported = all(r.supported for r in rows[at + 1 :])
            reason = "" if supported else "contains unsupported layers"
        else:
            params = sum(int(a.size) for a in model.layer_weights(path))
            reason = walker.reasons.get(path, "")
            if not reason:
                reason = refusal(layer)
                if reason:
                    problems.append(f"{label(name)} ({label(converter_key(layer), quote=False)}: {reason})")
            supported = not reason
        shapes = tuple(walker.shapes.get(path, ()))
        if cls == "InputLayer" and not shapes:
            shapes = tuple(i.shape for i in walker.inputs if i.name == name)[:1] or _input_layer_shape(layer)
        info = LayerInfo(name, path, cls, depth, shapes, params, supported, reason)
        if cfgmod.is_model(layer):
            rows[at] = info
        else:
            rows.append(info)
        total += params
    return total


def _input_layer_shape(entry: dict) -> tuple:
    cfg = cfgmod.config_of(entry)
    shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
    if isinstance(shape, list) and all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape):
        return (tuple(shape),)
    return ()


class _Walker(BuildObserver):
    """Records each layer's output shapes and problems; an unconverted layer's output is guessed."""

    def __init__(self, model: ModelFile) -> None:
        self.shapes: dict[tuple, list] = {}
        self.reasons: dict[tuple, str] = {}
        self.hints = _shape_hints(model.config, ())
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.problems: list[str] = []

    def layer(self, path: tuple, entry: dict, out: Any, problem: str) -> Any:
        if problem:
            self.reasons[path] = problem
        if out is None or (isinstance(out, Tensor) and out.shape is None):
            out = Tensor(self.hints.get(path))  # the shape its consumer was built with, if the file says
        outs = out if isinstance(out, list) else [out]
        shapes = [_keras_shape(t) if isinstance(t, Tensor) else None for t in outs]
        self.shapes.setdefault(path, []).append(shapes[0] if len(shapes) == 1 else tuple(shapes))
        return out

    def finished(self, inputs: list, outputs: list, names: list, problems: list) -> None:
        self.inputs = [TensorInfo(i.name, _keras_shape(i.tensor), i.tensor.dtype) for i in inputs]
        self.outputs = [TensorInfo(n, _keras_shape(t), t.dtype) for n, t in zip(names, outputs)]
        self.problems = list(problems)


def _keras_shape(t: Tensor) -> Optional[Shape]:
    return None if t.shape is None else (None,) + tuple(t.shape)


def _shape_hints(entry: dict, prefix: tuple) -> dict:
    """Output shapes (without batch axis) known from the file: a layer's input shape in `build_config`
    is the output shape of the single layer that feeds it."""
    hints: dict[tuple, tuple] = {}
    layers = cfgmod.sublayers(entry)
    sequential = cfgmod.class_of(entry) == "Sequential"
    previous = None
    for layer in layers:
        path = prefix + (cfgmod.name_of(layer),)
        if cfgmod.is_model(layer):
            hints.update(_shape_hints(layer, path))
        built = _built_shape(layer)
        if sequential:
            if previous is not None and built is not None:
                hints.setdefault(previous, built)
            previous = path
            continue
        sources = set(_refs(layer.get("inbound_nodes")))
        if built is not None and len(sources) == 1:
            hints.setdefault(prefix + (sources.pop(),), built)
    return hints


def _built_shape(entry: dict) -> Optional[tuple]:
    build = entry.get("build_config")
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if not isinstance(shape, list) or not shape:
        return None
    if any(d is not None and (isinstance(d, bool) or not isinstance(d, int) or d <= 0) for d in shape):
        return None
    return tuple(shape[1:])


def _refs(value: Any) -> list:
    """Names of the layers a call refers to, in both node formats (Keras 2 lists, Keras 3 keras_history)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history")
            return [history[0]] if isinstance(history, list) and history and isinstance(history[0], str) else []
        return [n for v in value.values() for n in _refs(v)]
    if isinstance(value, list):
        if len(value) in (3, 4) and isinstance(value[0], str) and all(isinstance(v, int) for v in value[1:3]):
            return [value[0]]
        return [n for v in value for n in _refs(v)]
    return []


def inspect(path: str | os.PathLike) -> ModelSummary:
    """Describe a model file without TensorFlow: format, Keras version, inputs and outputs, and every
    layer with its output shape, parameter count and whether Konverter supports it.

    Works on models Konverter cannot convert (`summary.convertible` is False, `summary.problems`
    says why). Raises BadModelFile when the file is not a readable Keras model, UsageError when
    `path` is missing or not a regular file; the message names the file.
    """
    with naming(path):
        require_regular_file(path)
        return inspect_model(path)
