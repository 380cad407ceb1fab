"""The `konverter` command: convert one model file or every model file in a folder."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .convert import convert_file, default_output
from .errors import (
    EXIT_BAD_FILE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    KonverterError,
)
from .h5reader import MODEL_SUFFIXES

EPILOG = (
    "Exit codes: 0 converted; 1 some files of a folder failed; 2 bad command line; "
    "3 not a valid Keras model file; 4 unsupported layer or feature; 5 output not written; "
    "70 internal error; 130 interrupted."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False)


@dataclass
class Outcome:
    source: Path
    target: Optional[Path]
    code: int  # exit code: 0 when converted
    message: str
    layers: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK


def _version(value: bool) -> None:
    if value:
        typer.echo(f"konverter {__version__}")
        raise typer.Exit(EXIT_OK)


class WeightStorage(str, Enum):
    float32 = "float32"
    float16 = "float16"


def _convert_one(
    source: Path, target: Optional[Path], force: bool, debug: bool, options: Optional[dict] = None
) -> Outcome:
    start = time.perf_counter()
    try:
        dest, program = convert_file(source, target, force=force, options=options)
        return Outcome(source, dest, EXIT_OK, "", program.layer_count, time.perf_counter() - start)
    except KonverterError as err:
        return Outcome(source, None, err.exit_code, str(err), 0, time.perf_counter() - start)
    except RecursionError:
        message = "the model config is nested too deeply"
        return Outcome(source, None, EXIT_BAD_FILE, message, 0, time.perf_counter() - start)
    except Exception as err:  # a bug in Konverter: still one line, unless --debug
        if debug:
            raise
        message = f"internal error, please report it ({type(err).__name__}: {str(err)[:200]}); --debug shows details"
        return Outcome(source, None, EXIT_INTERNAL, message, 0, time.perf_counter() - start)


def _find_models(folder: Path, recursive: bool) -> List[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)


def _folder_targets(models: List[Path], folder: Path, out: Optional[Path]) -> dict:
    """Output path per model; model.h5 and model.keras side by side get model_h5.py and model_keras.py."""
    targets = {}
    for m in models:
        rel = m.relative_to(folder)
        base = (out / rel) if out is not None else m
        targets[m] = default_output(base)
    seen: dict = {}
    for m, t in targets.items():
        seen.setdefault(t, []).append(m)
    for t, group in seen.items():
        if len(group) > 1:
            for m in group:
                targets[m] = t.with_name(f"{t.stem}_{m.suffix.lstrip('.').lower()}.py")
    return targets


@app.callback()
def _group() -> None:
    """Konverter: Keras model files to NumPy-only Python files, without TensorFlow."""


@app.command("convert", epilog=EPILOG)
def convert_command(
    path: Path = typer.Argument(..., help="A model file (.h5, .hdf5, .keras) or a folder of them.", show_default=False),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Output .py file (or folder, for a folder of models). Default: next to each model."
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="With a folder: include its subfolders."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output file Konverter did not write."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for internal errors."),
    weights: WeightStorage = typer.Option(
        WeightStorage.float32,
        "--weights",
        help="How the weights are stored in the generated file: float16 halves it (computed in float32 all the same).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Convert a Keras model file into one Python file that predicts with NumPy only.

    No TensorFlow or Keras is needed. `konverter model.h5` writes model.py next to it;
    `konverter models/` converts every .h5/.hdf5/.keras file in the folder.
    """
    options = {"weights": weights.value}
    if path.is_dir():
        raise typer.Exit(_convert_folder(path, output, recursive, force, quiet, debug, options))
    if not path.exists():
        err_console.print(f"konverter: error: {path}: no such file", markup=False)
        raise typer.Exit(EXIT_BAD_FILE)
    outcome = _convert_one(path, output, force, debug, options)
    if not outcome.ok:
        err_console.print(f"konverter: error: {path}: {outcome.message}", markup=False)
        raise typer.Exit(outcome.code)
    if not quiet:
        out_console.print(
            f"{path} -> {outcome.target} ({outcome.layers} layers, {outcome.seconds:.2f} s)", markup=False
        )


def _convert_folder(
    folder: Path, out: Optional[Path], recursive: bool, force: bool, quiet: bool, debug: bool, options: dict
) -> int:
    models = _find_models(folder, recursive)
    if not models:
        err_console.print(f"konverter: no .h5/.hdf5/.keras files in {folder}", markup=False)
        return EXIT_SOME_FAILED
    targets = _folder_targets(models, folder, out)
    outcomes: List[Outcome] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task("converting", total=len(models))
        for m in models:
            progress.update(task, description=f"converting {m.name[:40]}")
            outcomes.append(_convert_one(m, targets[m], force, debug, options))
            progress.advance(task)
    failed = [o for o in outcomes if not o.ok]
    if not quiet or failed:
        table = Table(title=f"Konverter: {len(models) - len(failed)} of {len(models)} converted")
        for column in ("file", "status", "layers", "seconds"):
            table.add_column(column, justify="right" if column in ("layers", "seconds") else "left")
        for o in outcomes:
            status = f"-> {o.target}" if o.ok else f"FAILED: {o.message}"
            table.add_row(str(o.source), status, str(o.layers) if o.ok else "", f"{o.seconds:.2f}")
        (err_console if failed else out_console).print(table)
    return EXIT_SOME_FAILED if failed else EXIT_OK


COMMANDS = {"convert"}


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: `konverter PATH` is short for `konverter convert PATH`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        args.insert(0, "convert")
    try:
        app(args=args, prog_name="konverter")
    except KeyboardInterrupt:
        err_console.print("konverter: interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)
