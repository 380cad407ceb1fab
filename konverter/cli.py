"""The `konverter` command: convert, inspect and verify, built on the Python API."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .batch import CONVERTED, FAILED, NOT_RUN, SKIPPED, Outcome, convert_many, convert_one, find_models, folder_targets
from .codegen import text
from .errors import (
    EXIT_BAD_FILE,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    KonverterError,
)
from .summary import ModelSummary, inspect_model, shape_text
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, VerifyReport, verify
from .version import __version__

EPILOG = (
    "Exit codes: 0 done; 1 some files of a folder failed; 2 bad command line or unusable reference data; "
    "3 not a valid Keras model file; 4 unsupported layer or feature; 5 output not written; "
    "6 outputs differ from the reference; 70 internal error; 130 interrupted."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"konverter {__version__}")
        raise typer.Exit(EXIT_OK)


def _plain(value: object) -> str:
    """A file name or message for the terminal: control characters (escape sequences) shown escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(value))


class WeightStorage(str, Enum):
    float32 = "float32"
    float16 = "float16"


def _fail(path: object, message: str, code: int) -> typer.Exit:
    err_console.print(f"konverter: error: {_plain(path)}: {_plain(message)}", markup=False)
    return typer.Exit(code)


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


def _cells(*values: str) -> list:
    """Table cells as plain text: names and paths with [brackets] are never read as rich markup."""
    return [Text(_plain(v)) for v in values]


@app.callback()
def _group() -> None:
    """Konverter: Keras model files to NumPy-only Python files, without TensorFlow."""


# ----------------------------------------------------------------------------- convert
@app.command("convert", epilog=EPILOG)
def convert_command(
    path: Path = typer.Argument(..., help="A model file (.h5, .hdf5, .keras) or a folder of them.", show_default=False),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Output .py file (or folder, for a folder of models). Default: next to each model."
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="With a folder: include its subfolders."),
    force: bool = typer.Option(
        False, "--force", "-f", help="Convert even if the output is up to date; replace files Konverter did not write."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="With a folder: convert in N processes (0: one per CPU)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="With a folder: start nothing new after a failure."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary (JSON) on stdout."),
    embed_check: Optional[Path] = typer.Option(
        None,
        "--embed-check",
        help="An .npz (x0.., y0..): store its first sample in the output and add self_check().",
        dir_okay=False,
    ),
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
    `konverter models/` converts every .h5/.hdf5/.keras file in the folder. An output that is
    up to date (same model file, same Konverter version, same settings) is skipped.
    """
    # float32 storage is the default and is recorded as no setting, so earlier outputs stay up to date.
    options = {"weights": weights.value} if weights is not WeightStorage.float32 else None
    with _ctrl_c():
        if path.is_dir():
            if embed_check is not None:
                raise _fail(path, "--embed-check needs a single model file, not a folder", EXIT_USAGE)
            raise typer.Exit(
                _convert_folder(path, output, recursive, force, jobs, fail_fast, as_json, quiet, debug, options)
            )
        if not path.exists():
            raise _fail(path, "no such file", EXIT_BAD_FILE)
        outcome = convert_one(path, output, force=force, options=options, embed_check=embed_check, debug=debug)
        if as_json:
            _print_json(_summary_json([outcome]))
        if not outcome.ok:
            raise _fail(path, outcome.message, outcome.code)
        if not quiet and not as_json:
            detail = "up to date" if outcome.status == SKIPPED else f"{outcome.layers} layers, {outcome.seconds:.2f} s"
            out_console.print(f"{_plain(path)} -> {_plain(outcome.target)} ({detail})", markup=False)


_INTERRUPTED = threading.Event()


def _check_interrupt() -> None:
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c():
    """Ctrl-C ends the run with exit 130, one line, and no partial file (outputs are renamed into place).

    Python silently drops a KeyboardInterrupt raised while a weakref callback or __del__ runs, so the
    signal also sets a flag that is checked between files and at the end.
    """

    def on_sigint(signum, frame):
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    def unraisable(info) -> None:
        # Where Python drops the interrupt (a weakref callback, __del__) it would print a traceback:
        # keep the flag instead, and the run stops at the next check.
        if isinstance(info.exc_value, KeyboardInterrupt):
            _INTERRUPTED.set()
        else:
            previous_hook(info)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: keep Python's own handling
        previous = None
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
        _check_interrupt()
    except KeyboardInterrupt:
        err_console.print("konverter: interrupted", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
        _INTERRUPTED.clear()


def _convert_folder(
    folder: Path,
    out: Optional[Path],
    recursive: bool,
    force: bool,
    jobs: int,
    fail_fast: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
    options: Optional[dict] = None,
) -> int:
    models = find_models(folder, recursive)
    if not models:
        err_console.print(f"konverter: no .h5/.hdf5/.keras files in {_plain(folder)}", markup=False)
        if as_json:
            _print_json(_summary_json([]))
        return EXIT_SOME_FAILED
    targets = folder_targets(models, folder, out)
    finished: dict = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet or as_json,
    ) as progress:
        task = progress.add_task("converting" if jobs == 1 else "converting in parallel", total=len(models))

        def started(source: Path) -> None:
            _check_interrupt()
            progress.update(task, description=escape(f"converting {_plain(source.name)[:40]}"))

        for outcome in convert_many(
            targets, jobs=jobs, fail_fast=fail_fast, force=force, options=options, debug=debug, on_start=started
        ):
            finished[outcome.source] = outcome
            progress.advance(task)
        _check_interrupt()
    outcomes = [finished[m] for m in models]  # the folder's order, whatever order they finished in
    failed = [o for o in outcomes if o.status == FAILED]
    if as_json:
        _print_json(_summary_json(outcomes))
    elif not quiet or failed:
        _print_folder_table(outcomes, failed)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _summary_json(outcomes: List[Outcome]) -> dict:
    counts = {status: sum(o.status == status for o in outcomes) for status in (CONVERTED, SKIPPED, FAILED, NOT_RUN)}
    return {
        "konverter": __version__,
        "total": len(outcomes),
        "converted": counts[CONVERTED],
        "skipped": counts[SKIPPED],
        "failed": counts[FAILED],
        "not_run": counts[NOT_RUN],
        "files": [o.to_dict() for o in outcomes],
    }


def _print_folder_table(outcomes: List[Outcome], failed: List[Outcome]) -> None:
    counts = _summary_json(outcomes)
    parts = [f"{counts['converted']} converted"]
    labels = {"skipped": "up to date", "failed": "failed", "not_run": "not run"}
    parts += [f"{counts[key]} {label}" for key, label in labels.items() if counts[key]]
    title = f"Konverter, {len(outcomes)} files: " + ", ".join(parts)
    table = Table(title=Text(title))
    for column in ("file", "status", "layers", "seconds"):
        table.add_column(column, justify="right" if column in ("layers", "seconds") else "left")
    for o in outcomes:
        if o.status == CONVERTED:
            status = f"-> {o.target}"
        elif o.status == SKIPPED:
            status = f"up to date: {o.target}"
        elif o.status == NOT_RUN:
            status = "not run (--fail-fast)"
        else:
            status = f"FAILED: {o.message}"
        layers = str(o.layers) if o.status == CONVERTED else ""
        table.add_row(*_cells(str(o.source), status, layers, f"{o.seconds:.2f}"))
    (err_console if failed else out_console).print(table)


# ----------------------------------------------------------------------------- inspect
@app.command("inspect", epilog=EPILOG)
def inspect_command(
    model: Path = typer.Argument(..., help="A model file (.h5, .hdf5, .keras).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Show a model's layers like Keras's model.summary(), and whether Konverter supports each one.

    Also the file format and the Keras version that wrote it. Needs no TensorFlow and works on models
    Konverter cannot convert. Exits 0 for any readable model file.
    """
    if not model.is_file():
        raise _fail(model, "no such file", EXIT_BAD_FILE)
    try:
        summary = inspect_model(model)
    except KonverterError as err:
        raise _fail(model, str(err), err.exit_code) from None
    if as_json:
        _print_json(summary.to_dict())
    else:
        _print_summary(summary)


def _print_summary(s: ModelSummary) -> None:
    backend = f", backend {text(s.backend)}" if s.backend else ""
    out_console.print(
        f"{s.path}: {s.format_description}, written by Keras {text(s.keras_version)}{backend}", markup=False
    )
    table = Table(title=Text(f"Model {text(s.name)} ({text(s.model_class)})"), title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output shape")
    table.add_column("Param #", justify="right")
    table.add_column("Konverter")
    for layer in s.layers:
        label = "  " * layer.depth + f"{text(layer.name)} ({text(layer.class_name)})"
        support = "yes" if layer.supported else "no: " + layer.reason
        table.add_row(*_cells(label, layer.output_shape, f"{layer.params:,}", support))
    out_console.print(table)
    out_console.print(f"Total params: {s.total_params:,}", markup=False)
    for kind, items in (("Input", s.inputs), ("Output", s.outputs)):
        for item in items:
            out_console.print(f"{kind} {text(item.name)}: {shape_text(item.shape)} {item.dtype}", markup=False)
    if s.convertible:
        out_console.print("Konverter: can convert this model.", markup=False)
    else:
        out_console.print("Konverter: cannot convert this model: " + "; ".join(s.problems), markup=False)


# ----------------------------------------------------------------------------- verify
@app.command("verify", epilog=EPILOG)
def verify_command(
    model: Path = typer.Argument(..., help="The Keras model file.", show_default=False),
    generated: Optional[Path] = typer.Argument(
        None, help="The generated .py file to check. Default: convert in memory.", show_default=False
    ),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="An .npz of inputs x0.. and expected outputs y0..: no Keras needed.", dir_okay=False
    ),
    atol: float = typer.Option(DEFAULT_ATOL, "--atol", min=0.0, help="Absolute tolerance."),
    rtol: float = typer.Option(DEFAULT_RTOL, "--rtol", min=0.0, help="Relative tolerance."),
    samples: int = typer.Option(3, "--samples", min=1, help="Random samples when comparing with Keras."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs when comparing with Keras."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Check that the converted model computes what Keras computes.

    With TensorFlow/Keras installed, the model is loaded with Keras (tf_keras for Keras 2 files, keras
    for Keras 3 files) and both run on the same deterministic random inputs. Without it, give stored
    outputs with --reference. Every output is compared as a batch, per sample as a batch of 1, and per
    sample unbatched; exits 6 if any differs by more than atol + rtol * |reference|.
    """
    for given in (model, generated, reference):
        if given is not None and not given.is_file():
            raise _fail(given, "no such file", EXIT_USAGE if given is not model else EXIT_BAD_FILE)
    try:
        report = verify(model, generated, reference=reference, atol=atol, rtol=rtol, samples=samples, seed=seed)
    except KonverterError as err:
        raise _fail(model, str(err), err.exit_code) from None
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_report(report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_MISMATCH)


def _print_report(r: VerifyReport) -> None:
    table = Table(
        title=Text(f"{r.model} vs {r.against}: {r.samples} samples, atol {r.atol:g}, rtol {r.rtol:g}"),
        title_justify="left",
    )
    for column in ("output", "mode", "max abs error", "max rel error", "result"):
        table.add_column(column, justify="right" if "error" in column else "left")
    for c in r.checks:
        result = "ok" if c.ok else "DIFFERS"
        table.add_row(*_cells(text(c.output), c.mode, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}", result))
    (out_console if r.ok else err_console).print(table)
    if r.ok:
        out_console.print("verify: ok", markup=False)
    else:
        err_console.print("verify: outputs differ beyond the tolerance", markup=False)


COMMANDS = {"convert", "inspect", "verify"}


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
