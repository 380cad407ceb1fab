"""Where a converted model's time goes: its `predict` timed statement by statement.

Each statement of a generated `predict` is one layer call (or a few fused into one), under the
comment that names its Keras layers. `profile_source` imports generated module text with a timer
around each of those statements; the file's own code is not changed, and the numbers it computes
are the same. Only Konverter's own text is instrumented: labels are read from its comments, and
nothing of a model file becomes code (the timers are indexed by number).
"""

from __future__ import annotations

import ast
import math
import os
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .convert import generate_source, module_from_source, naming, require_regular_file
from .errors import UsageError


@dataclass
class LayerTime:
    line: int  # of the statement in the generated file
    function: str  # the layer function it calls
    layer: str  # the comment above it: the Keras layer(s) it computes
    seconds: float  # per predict call


@dataclass
class ProfileReport:
    model: str
    inputs: list  # the input shapes used, batch axis first when batched
    batch: int  # 0: one unbatched sample
    calls: int
    seconds: float  # mean time of one predict call, with the timers in place
    layers: list = field(default_factory=list)  # of LayerTime, in predict's order

    def by_function(self) -> dict:
        """Seconds per layer function, the slowest first."""
        total: dict = {}
        for t in self.layers:
            total[t.function] = total.get(t.function, 0.0) + t.seconds
        return dict(sorted(total.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict:
        return {**asdict(self), "by_function": self.by_function()}


def _timed_statements(tree: ast.Module, lines: list) -> list:
    """Put a timer around each statement of predict's layer calls; return their (line, function, layer)."""
    predict = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "predict"), None)
    guards = [n for n in ast.walk(predict) if isinstance(n, ast.Try)] if predict else []
    if not guards:
        raise UsageError("not a Konverter module: no predict() with layer calls")
    body = guards[-1]  # the layer calls run inside the floating-point-state guard
    labels, timed = [], []
    for statement in body.body:
        above = (lines[i].strip() for i in range(statement.lineno - 2, -1, -1))
        comment = next((line[2:] for line in above if line.startswith("#")), "")
        call = statement.value if isinstance(statement, (ast.Assign, ast.Expr)) else None
        function = call.func.id if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else "(other)"
        timed += ast.parse("_profile_tick = _profile_clock()").body
        timed.append(statement)
        timed += ast.parse(f"_PROFILE[{len(labels)}] += _profile_clock() - _profile_tick").body
        labels.append((statement.lineno, function, comment))
    body.body = timed
    ast.fix_missing_locations(tree)
    return labels


def profiled_module(source: str, name: str) -> tuple[types.ModuleType, list]:
    """Generated module text imported with timers in predict: (module, [(line, function, layer)]).
    Times add up in `module._PROFILE`, one entry per label."""
    tree = ast.parse(source)
    labels = _timed_statements(tree, source.splitlines())
    timers = {"_profile_clock": time.perf_counter, "_PROFILE": [0.0] * len(labels)}
    return module_from_source(source, name, tree, timers), labels


def sample_inputs(module: types.ModuleType, batch: int, seed: int = 0) -> list:
    """Random inputs for each of the module's inputs: normal floats, zeros for integer inputs."""
    rng = np.random.default_rng(seed)
    inputs = []
    for name, shape, dtype in zip(module.INPUT_NAMES, module.INPUT_SHAPES, module.INPUT_DTYPES):
        if None in shape[1:]:
            raise UsageError(f"input {name!r} has shape {shape}: profiling needs fixed sizes")
        kind = np.dtype(dtype).kind if dtype not in ("string", "str") else "U"
        if kind not in "biuf":
            raise UsageError(f"input {name!r} takes {dtype} values: profiling needs numeric inputs")
        size = ((batch,) if batch else ()) + tuple(shape[1:])
        values = rng.standard_normal(size) if kind == "f" else np.zeros(size)
        inputs.append(values.astype(dtype))
    return inputs


def profile_source(
    source: str, name: str, batch: int = 0, calls: int = 20, seed: int = 0, inputs: list | None = None
) -> ProfileReport:
    """Profile generated module text on `inputs`, or on random ones: one unbatched sample (batch 0) or a batch."""
    module, labels = profiled_module(source, name)
    if inputs is None:
        inputs = sample_inputs(module, batch, seed)
    else:
        batch = len(inputs[0]) if inputs[0].ndim == len(module.INPUT_SHAPES[0]) else 0
    for _ in range(3):  # warm up: caches, first allocations
        module.predict(*inputs)
    totals = module._PROFILE
    totals[:] = [0.0] * len(totals)
    start = time.perf_counter()
    for _ in range(calls):
        module.predict(*inputs)
    mean = (time.perf_counter() - start) / calls  # a mean, like the layers' times: the shares add up
    layers = [LayerTime(line, fn, layer, seconds / calls) for (line, fn, layer), seconds in zip(labels, totals)]
    return ProfileReport(name, [list(x.shape) for x in inputs], batch, calls, mean, layers)


def profile(
    path: str | os.PathLike, batch: int = 0, calls: int = 20, seed: int = 0, options: dict | None = None
) -> ProfileReport:
    """Convert a model in memory and profile its predict on random inputs (nothing is written)."""
    if batch < 0 or calls < 1:
        raise UsageError("batch must be >= 0 and calls >= 1")
    with naming(path):
        require_regular_file(path)
        source, _, _ = generate_source(path, options)
        return profile_source(source, Path(path).name, batch, calls, seed)


def share(seconds: float, total: float) -> str:
    """A layer's share of the whole call, as a percentage."""
    return f"{seconds / total:.0%}" if total > 0 and math.isfinite(seconds) else "-"
