"""The `konverter` command: convert, inspect, verify and profile, built on the Python API."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .batch import (
    CONVERTED,
    FAILED,
    NOT_RUN,
    SKIPPED,
    STOP_SIGNALS,
    Outcome,
    convert_many,
    convert_one,
    plan,
    refused_outcome,
)
from .codegen import text
from .convert import output_notes, output_path, require_regular_file
from .errors import EXIT_BAD_FILE, EXIT_INTERNAL, EXIT_MISMATCH, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, KonverterError
from .profile import ProfileReport, profile, share
from .summary import ModelSummary, shape_text
from .summary import inspect as inspect_summary
from .verify import VerifyReport, verify
from .version import __version__

EPILOG = (
    "Exit codes: 0 done; 1 some files of several failed; 2 bad command line, missing file or unusable reference "
    "data; 3 not a valid Keras model file, or too large to run; 4 unsupported layer or feature; 5 output not written; "
    "6 outputs differ from the reference; 70 internal error; 130 interrupted (Ctrl-C), 143 SIGTERM, 129 SIGHUP."
)

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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


def _error(message: str, code: int) -> typer.Exit:
    """Print one error line on stderr; returns the Exit to raise."""
    err_console.print(f"konverter: error: {_plain(message)}", markup=False)
    return typer.Exit(code)


def _fail(path: object, message: str, code: int) -> typer.Exit:
    return _error(f"{path}: {message}", code)


def _note(message: str) -> None:
    err_console.print(f"konverter: note: {_plain(message)}", markup=False)


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


def _cells(*values: str) -> list:
    """Table cells as plain text: names and paths with [brackets] are never read as rich markup."""
    return [Text(_plain(v)) for v in values]


@contextlib.contextmanager
def _one_line_errors(debug: bool = False) -> Iterator[None]:
    """Whatever goes wrong ends with one line and a documented exit code, never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except KonverterError as err:
        raise _error(str(err), err.exit_code) from None
    except RecursionError:
        raise _error("the model config is nested too deeply", EXIT_BAD_FILE) from None
    except MemoryError:
        raise _error("needs more memory than this machine can give", EXIT_BAD_FILE) from None
    except Exception as err:  # a bug in Konverter
        if debug:
            traceback.print_exc()
        detail = f"{type(err).__name__}: {str(err)[:200]}"
        hint = "" if debug else "; --debug shows details"
        raise _error(f"internal error, please report it ({detail}){hint}", EXIT_INTERNAL) from None


@app.callback(epilog=EPILOG)
def _group(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Konverter: Keras model files (.h5, .keras) to Python files that predict with NumPy alone, no TensorFlow.

    `konverter PATH...` is short for `konverter convert PATH...`; `konverter COMMAND --help` lists a command's options.
    """


# ----------------------------------------------------------------------------- convert
@app.command("convert", epilog=EPILOG)
def convert_command(
    paths: List[Path] = typer.Argument(
        ..., metavar="PATH...", help="Model files (.h5, .hdf5, .keras) and folders of them.", show_default=False
    ),
    output: Optional[str] = typer.Option(
        None,
        "--output",
        "-o",
        metavar="PATH",
        help="The .py file for one model; a folder for several (or a path ending in /). Default: next to each model.",
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Folders: include their subfolders."),
    force: bool = typer.Option(
        False, "--force", "-f", help="Convert even if the output is up to date; replace files Konverter did not write."
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=0, metavar="N", help="Several models: convert in N processes (0: one per CPU)."
    ),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Several models: start nothing new after a failure."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary (JSON) on stdout."),
    embed_check: Optional[Path] = typer.Option(
        None,
        "--embed-check",
        metavar="DATA.npz",
        help="An .npz (x0.., y0.., or x, y): store its first sample in the output and add self_check().",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only failures."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Several models: list every file, not only failures."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for internal errors."),
    weights: WeightStorage = typer.Option(
        WeightStorage.float32,
        "--weights",
        help=(
            "How the generated file stores the weights: float16 halves the file and its memory once imported "
            "(computed in float32 all the same; weights of 1 MiB or more are widened at each call: "
            "slower for one sample)."
        ),
    ),
) -> None:
    """Convert Keras model files into Python files that predict with NumPy only.

    No TensorFlow or Keras is needed. `konverter model.h5` writes model.py next to it;
    `konverter models/` converts every .h5/.hdf5/.keras file in the folder; several files and
    folders may be given. An output that is up to date (same model file, same Konverter version,
    same settings, unchanged since) is skipped. With several models only failures are listed,
    then the totals (--verbose lists every file).
    """
    # float32 storage is the default and is recorded as no setting, so earlier outputs stay up to date.
    options = {"weights": weights.value} if weights is not WeightStorage.float32 else None
    with _stop_signals():
        if len(paths) == 1 and not paths[0].is_dir():
            _convert_single(paths[0], output, force, options, embed_check, as_json, quiet, debug)
            return
        if embed_check is not None:
            raise _error("--embed-check needs a single model file, not several or a folder", EXIT_USAGE)
        raise typer.Exit(
            _convert_several(paths, output, recursive, force, jobs, fail_fast, as_json, quiet, verbose, debug, options)
        )


def _convert_single(
    path: Path,
    output: Optional[str],
    force: bool,
    options: Optional[dict],
    embed_check: Optional[Path],
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    with _one_line_errors(debug):
        require_regular_file(path)
        if embed_check is not None:
            require_regular_file(embed_check, "--embed-check")
        target = output_path(path, output)
    if not (quiet or as_json):
        if output is not None and not Path(output).suffix and target.name == Path(output).name + ".py":
            _note(f"writing {target}: added .py, the suffix Python imports")
        for note in output_notes(target):
            _note(note)
    outcome = convert_one(path, target, force=force, options=options, embed_check=embed_check, debug=debug)
    if as_json:
        _print_json(_summary_json([outcome]))
    if not outcome.ok:
        raise _fail(path, outcome.message, outcome.code)
    if outcome.message and not as_json:
        _note(f"{_plain(path)}: {outcome.message}")
    if not quiet and not as_json:
        detail = "up to date" if outcome.status == SKIPPED else f"{outcome.layers} layers, {outcome.seconds:.2f} s"
        out_console.print(f"{_plain(path)} -> {_plain(outcome.target)} ({detail})", markup=False)


_STOPPED: list = []  # the stop signal received (SIGINT, SIGTERM, SIGHUP), checked between files
_STOP_MESSAGES = {signal.SIGINT: "interrupted"}
_STOP_MESSAGES.update({s: f"stopped by {s.name}" for s in STOP_SIGNALS if s != signal.SIGINT})


def _check_interrupt() -> None:
    if _STOPPED:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end the run with one line, exit 128 + the signal number, and no partial
    file: the interrupt unwinds through write_atomically, which removes its temporary file, and folder runs
    end their worker processes the same way.

    Python silently drops a KeyboardInterrupt raised while a weakref callback or __del__ runs, so the
    signal is also recorded and checked between files and at the end. A second signal while stopping
    is ignored, so the workers' cleanup is never cut short.
    """

    def on_signal(signum, frame):
        if not _STOPPED:
            _STOPPED.append(signum)
            raise KeyboardInterrupt

    def unraisable(info) -> None:
        # Where Python drops the interrupt (a weakref callback, __del__) it would print a traceback:
        # keep the record instead, and the run stops at the next check.
        if not isinstance(info.exc_value, KeyboardInterrupt):
            previous_hook(info)

    previous = {}
    for signum in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: keep Python's own handling
            previous[signum] = signal.signal(signum, on_signal)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
        _check_interrupt()
    except KeyboardInterrupt:
        signum = _STOPPED[0] if _STOPPED else signal.SIGINT
        err_console.print(f"konverter: {_STOP_MESSAGES[signum]}", markup=False)
        raise typer.Exit(128 + signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _STOPPED.clear()


def _convert_several(
    paths: List[Path],
    output: Optional[str],
    recursive: bool,
    force: bool,
    jobs: int,
    fail_fast: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
    debug: bool,
    options: Optional[dict] = None,
) -> int:
    with _one_line_errors(debug):
        for path in paths:
            if not path.is_dir():
                require_regular_file(path)
        if output is not None and Path(output).exists() and not Path(output).is_dir():
            raise _error(f"-o {output}: with several models the output is a folder, and this is a file", EXIT_USAGE)
        work = plan(paths, output, recursive)
    for hint in work.hints:
        _note(hint)
    if not work.models:
        err_console.print(f"konverter: no .h5/.hdf5/.keras files in {_plain(', '.join(map(str, paths)))}", markup=False)
        if as_json:
            _print_json(_summary_json([]))
        return EXIT_SOME_FAILED
    finished = {model: refused_outcome(model, why) for model, why in work.refused.items()}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet or as_json or not err_console.is_terminal,  # a log gets no bar, not even a blank line
    ) as progress:
        task = progress.add_task("converting" if jobs == 1 else "converting in parallel", total=len(work.models))
        progress.advance(task, len(finished))

        def started(source: Path) -> None:
            _check_interrupt()
            progress.update(task, description=escape(f"converting {_plain(source.name)}"))

        for outcome in convert_many(
            work.targets, jobs=jobs, fail_fast=fail_fast, force=force, options=options, debug=debug, on_start=started
        ):
            finished[outcome.source] = outcome
            progress.advance(task)
        _check_interrupt()
    outcomes = [finished[m] for m in work.models]  # the order given, whatever order they finished in
    _report(outcomes, as_json, quiet, verbose)
    return EXIT_SOME_FAILED if any(o.status == FAILED for o in outcomes) else EXIT_OK


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


def _report(outcomes: List[Outcome], as_json: bool, quiet: bool, verbose: bool) -> None:
    """Failures one line each on stderr (also with --json), in full: the terminal wraps long paths, nothing is
    cut. Then, unless quiet or JSON, the totals as the last line; --verbose lists every other file first."""
    failed = [o for o in outcomes if o.status == FAILED]
    for o in outcomes:
        if o.status == FAILED:
            line = Text.assemble(("FAILED", "bold red"), f" {_plain(o.source)}: {_plain(o.message)}")
            err_console.print(line)
        elif verbose and not (quiet or as_json):
            out_console.print(_file_line(o), markup=False)
    if as_json:
        _print_json(_summary_json(outcomes))
    elif not quiet:
        counts = _summary_json(outcomes)
        parts = [f"{counts['converted']} converted"]
        labels = {"skipped": "up to date", "failed": "failed", "not_run": "not run (--fail-fast)"}
        parts += [f"{counts[key]} {label}" for key, label in labels.items() if counts[key]]
        totals = f"Konverter, {len(outcomes)} files: " + ", ".join(parts)
        (err_console if failed else out_console).print(totals, markup=False)


def _file_line(o: Outcome) -> str:
    if o.status == CONVERTED:
        return f"converted   {_plain(o.source)} -> {_plain(o.target)} ({o.layers} layers, {o.seconds:.2f} s)"
    if o.status == SKIPPED:
        return f"up to date  {_plain(o.source)} -> {_plain(o.target)}"
    return f"not run     {_plain(o.source)} (--fail-fast)"


# ----------------------------------------------------------------------------- inspect
@app.command("inspect", epilog=EPILOG)
def inspect_command(
    model: Path = typer.Argument(..., metavar="PATH", help="A model file (.h5, .hdf5, .keras).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for internal errors."),
) -> None:
    """Show a model's layers like Keras's model.summary(), and whether Konverter supports each one.

    Also the file format and the Keras version that wrote it. Needs no TensorFlow and works on models
    Konverter cannot convert. Exits 0 for any readable model file.
    """
    with _one_line_errors(debug):
        summary = inspect_summary(model)
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
    table.add_column("Layer (type)", overflow="fold")
    table.add_column("Output shape", overflow="fold")
    table.add_column("Param #", justify="right")
    table.add_column("Konverter", overflow="fold")
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
    model: Path = typer.Argument(..., metavar="MODEL", help="The Keras model file.", show_default=False),
    generated: Optional[Path] = typer.Argument(
        None,
        metavar="GENERATED.py",
        help="The generated file to check. Default: convert in memory.",
        show_default=False,
    ),
    reference: Optional[Path] = typer.Option(
        None,
        "--reference",
        metavar="DATA.npz",
        help="Inputs and expected outputs (x0.., y0.., or x and y): no Keras needed.",
    ),
    atol: Optional[float] = typer.Option(
        None, "--atol", min=0.0, help="Absolute tolerance. Default: 1e-5, or 2e-3 for float16 weights."
    ),
    rtol: Optional[float] = typer.Option(
        None, "--rtol", min=0.0, help="Relative tolerance. Default: 1e-4, or 1e-2 for float16 weights."
    ),
    samples: int = typer.Option(3, "--samples", min=1, help="Random samples when comparing with Keras."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs when comparing with Keras."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for internal errors."),
) -> None:
    """Check that the converted model computes what Keras computes.

    With TensorFlow/Keras installed, the model is loaded with Keras (tf_keras for Keras 2 files, keras
    for Keras 3 files) and both run on the same deterministic random inputs. Without it, give stored
    outputs with --reference. Every output is compared as a batch, per sample as a batch of 1, and per
    sample unbatched; exits 6 if any differs by more than atol + rtol * |reference|.
    """
    with _one_line_errors(debug):
        report = verify(model, generated, reference=reference, atol=atol, rtol=rtol, samples=samples, seed=seed)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_report(report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_MISMATCH)


def _print_report(r: VerifyReport) -> None:
    tolerance = r.tolerance or f"atol {r.atol:g}, rtol {r.rtol:g}"
    if r.tolerance == "tolerance given":
        tolerance = f"tolerance given: atol {r.atol:g}, rtol {r.rtol:g}"
    table = Table(title=Text(f"{r.model} vs {r.against}: {r.samples} samples, {tolerance}"), title_justify="left")
    for column in ("output", "mode", "max abs error", "max rel error", "result"):
        table.add_column(column, justify="right" if "error" in column else "left", overflow="fold")
    for c in r.checks:
        result = Text("ok") if c.ok else Text("DIFFERS", style="bold red")
        table.add_row(*_cells(text(c.output), c.mode, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}"), result)
    (out_console if r.ok else err_console).print(table)
    if r.ok:
        out_console.print("verify: ok", markup=False)
    else:
        err_console.print(f"verify: outputs differ beyond the tolerance ({tolerance})", markup=False)


# ----------------------------------------------------------------------------- profile
@app.command("profile", epilog=EPILOG)
def profile_command(
    model: Path = typer.Argument(..., metavar="MODEL", help="The Keras model file.", show_default=False),
    batch: int = typer.Option(0, "--batch", min=0, help="Profile a batch of this many samples. Default: one sample."),
    calls: int = typer.Option(20, "--calls", min=1, help="predict calls to time."),
    top: int = typer.Option(15, "--top", min=1, help="Slowest layer calls to list."),
    as_json: bool = typer.Option(False, "--json", help="Print every layer's time as JSON on stdout."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for internal errors."),
) -> None:
    """Show where the converted model's time goes, layer by layer.

    Converts the model in memory (nothing is written), runs predict on random inputs with a timer
    around each layer call, and lists the slowest calls and the time per layer function. Numbers
    are for this machine, with NumPy's BLAS threads as they are set (OPENBLAS_NUM_THREADS=1 for one).
    """
    with _one_line_errors(debug):
        report = profile(model, batch=batch, calls=calls)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_profile(report, top)


def _print_profile(r: ProfileReport, top: int) -> None:
    what = "one sample" if not r.batch else f"a batch of {r.batch}"
    shapes = ", ".join(str(tuple(s)) for s in r.inputs)
    inside = sum(t.seconds for t in r.layers)
    out_console.print(
        f"{text(r.model)}: {what} {shapes}, {r.seconds * 1e3:.3f} ms per predict call (mean of {r.calls}, "
        f"with timers; {inside * 1e3:.3f} ms inside the layer calls)",
        markup=False,
    )
    table = Table(title=Text(f"Slowest {min(top, len(r.layers))} layer calls"), title_justify="left")
    for column in ("ms", "share", "function", "layer"):
        table.add_column(column, justify="right" if column in ("ms", "share") else "left", overflow="fold")
    for t in sorted(r.layers, key=lambda t: -t.seconds)[:top]:
        table.add_row(*_cells(f"{t.seconds * 1e3:.3f}", share(t.seconds, r.seconds), t.function, text(t.layer)))
    out_console.print(table)
    table = Table(title=Text("Per layer function"), title_justify="left")
    for column in ("ms", "share", "function"):
        table.add_column(column, justify="right" if column != "function" else "left")
    for function, seconds in r.by_function().items():
        table.add_row(*_cells(f"{seconds * 1e3:.3f}", share(seconds, r.seconds), function))
    out_console.print(table)


COMMANDS = {"convert", "inspect", "verify", "profile"}
GROUP_OPTIONS = {"--help", "-h", "--version", "--install-completion", "--show-completion"}


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: `konverter PATH...` is short for `konverter convert PATH...`; `konverter help [COMMAND]`
    is `konverter [COMMAND] --help`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["help"]:
        args = [args[1], "--help"] if len(args) > 1 and args[1] in COMMANDS else ["--help"]
    elif args and args[0] not in COMMANDS and args[0] not in GROUP_OPTIONS:
        args.insert(0, "convert")
    try:
        app(args=args, prog_name="konverter")
    except KeyboardInterrupt:
        err_console.print("konverter: interrupted", markup=False)
        sys.exit(128 + signal.SIGINT)
