"""The conversion pipeline, stage by stage, in the order it runs: read -> build -> optimize -> emit.

    read      the model file -> ModelFile (config + weights as NumPy; `h5reader`)
    build     ModelFile -> Program: each layer call's converter records NumPy calls (`graph`)
    optimize  Program -> Program with the same numbers from fewer calls (`rewrites.REWRITES`)
    emit      Program -> the generated module's text (`codegen`)

The CLI, the Python API, `inspect` and `verify` all go through these functions: `inspect` stops
after `build` (with an observer that records every layer and keeps going past problems).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from .codegen import Generated, SelfCheck, generate
from .errors import BadModelFile
from .graph import Builder, BuildObserver, Program
from .h5reader import ModelFile, read_model
from .layers.base import Const, Op
from .rewrites import DenseChain
from .rewrites import optimize as run_rewrites
from .version import __version__

Optimized = tuple[Program, Optional[DenseChain]]


def read(path: str | os.PathLike) -> ModelFile:
    """Stage 1: the model file's config and weights (raises BadModelFile for anything unreadable)."""
    return read_model(path)


def build(model: ModelFile, options: dict | None = None, observer: BuildObserver | None = None) -> Program:
    """Stage 2: every layer call converted into NumPy calls, or one KonverterError naming all problems.

    With an `observer` (what `inspect` uses) problems are reported to it and the walk goes on.
    Conversion is quiet: no NumPy warning (a BatchNormalization's negative variance gives NaN as in
    Keras); weights that hold NaN or inf are reported once in `Program.notes`.
    """
    try:
        with np.errstate(all="ignore"):
            program = Builder(model, options, observer).build()
        program.notes.extend(non_finite_weights(program))
        return program
    except RecursionError:
        raise BadModelFile("the model config is nested too deeply") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        # A config value of an unexpected type that no check caught: still the file's fault, still one line.
        detail = str(err).splitlines()[0][:100] if str(err) else ""
        raise BadModelFile(f"the model config is inconsistent ({type(err).__name__}: {detail})") from None


def optimize(program: Program) -> Optimized:
    """Stage 3: the rewrites, in their one explicit order; and the Dense-chain form when there is one."""
    with np.errstate(all="ignore"):  # a rewrite that would overflow is refused by the rewrite itself
        return run_rewrites(program)


def non_finite_weights(program: Program) -> list[str]:
    """One line naming the layers whose weights hold NaN or inf (Keras computes NaN/inf there too)."""
    layers: dict[str, None] = {}
    for op in program.ops:
        for value in tensors_and_constants(op):
            if isinstance(value, Const) and value.array.dtype.kind == "f" and not np.isfinite(value.array).all():
                layers[op.layer] = None
    if not layers:
        return []
    shown = ", ".join(list(layers)[:5]) + (f" and {len(layers) - 5} more" if len(layers) > 5 else "")
    return [f"weights hold NaN or inf in {shown}: their outputs are NaN or inf, as in Keras"]


def tensors_and_constants(op: Op) -> list:
    """The op's arguments, lists flattened."""
    values = list(op.args) + list(op.kwargs.values())
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def emit(
    optimized: Optimized,
    model: ModelFile,
    source_path: str | os.PathLike,
    source_hash: str,
    options: dict | None = None,
    *,
    settings: str = "",
    check: SelfCheck | None = None,
    stream: bool = False,
) -> str | Generated:
    """Stage 4: the generated module's text (with `stream`: a Generated, written a block at a time)."""
    program, chain = optimized
    return generate(
        program,
        chain,
        Path(source_path).name,
        model.keras_version,
        source_hash,
        __version__,
        options,
        settings=settings,
        check=check,
        stream=stream,
    )
