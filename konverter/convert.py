"""The conversion pipeline: read the file, build the program, write one Python module atomically."""

from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import importlib.abc
import importlib.util
import json
import keyword
import os
import secrets
import stat
import sys
import types
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from . import pipeline
from .codegen import END_LINE, MARKER, SETTINGS_LINE, SOURCE_HASH_LINE, WEIGHT_DTYPES, Generated, SelfCheck, text
from .errors import BadModelFile, KonverterError, KonverterWarning, MismatchError, OutputError, UsageError
from .graph import Program
from .h5reader import MODEL_SUFFIXES, ModelFile
from .reference import read_reference, tolerance
from .version import __version__

# The conversion options of konvert/load/verify (`options=`) and the values each accepts; the first is the default.
OPTIONS = {"weights": WEIGHT_DTYPES}
# Records the SHA-256 of the rest of the file: an edited file, or someone else's file with a copied header,
# is never taken for an up-to-date output.
CONTENT_HASH_LINE = "# konverter-content-sha256: "


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_options(options: object) -> dict:
    """The options as a dict, or UsageError naming every unknown key (with a guess) or bad value."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise UsageError(f"options must be a dict such as {{'weights': 'float16'}}, not {type(options).__name__}")
    unknown = []
    for key in options:
        guess = difflib.get_close_matches(str(key), OPTIONS, n=1)
        unknown += [] if key in OPTIONS else [f"{key!r}" + (f" (did you mean {guess[0]!r}?)" if guess else "")]
    if unknown:
        raise UsageError(f"unknown option {', '.join(unknown)}; the options are: {', '.join(OPTIONS)}")
    for key, value in options.items():
        if not (isinstance(value, str) and value in OPTIONS[key]):
            allowed = " or ".join(repr(v) for v in OPTIONS[key])
            raise UsageError(f"option {key!r} must be {allowed}, not {value!r}")
    return dict(options)


def require_regular_file(path: str | os.PathLike, what: str = "") -> None:
    """UsageError unless `path` is an existing regular file (or a link to one).

    Opening a FIFO or a device would block or read forever: such paths are refused before anything opens them.
    """
    label = f"{what} " if what else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"{label}{os.fspath(path)}: no such file") from None
    except OSError as err:
        raise UsageError(f"{label}{os.fspath(path)}: cannot read it ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{label}{os.fspath(path)}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{label}{os.fspath(path)}: not a regular file (a FIFO, socket or device); refused")


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """Public API errors name the file they are about; too deep or too big is the file's fault, in one line."""
    try:
        yield
    except KonverterError as err:
        shown = os.fspath(path)
        message = str(err)
        raise type(err)(message if message.startswith(shown) else f"{shown}: {message}") from None
    except RecursionError:
        raise BadModelFile(f"{os.fspath(path)}: the model config is nested too deeply") from None
    except MemoryError:
        raise BadModelFile(f"{os.fspath(path)}: needs more memory than this machine can give") from None


def default_output(path: str | os.PathLike) -> Path:
    """model.h5 -> model.py next to it (a name Python can import when the stem allows it)."""
    return Path(path).with_suffix(".py")


def written_by_konverter(path: Path) -> bool:
    if not _is_regular(path):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    # Our header line starts with the marker; a mention elsewhere (a user's own file) does not count.
    return any(line.startswith(MARKER) for line in head.splitlines())


def settings_text(options: dict | None = None, embed_check: str | os.PathLike | None = None) -> str:
    """Non-default conversion settings as canonical JSON (empty when there are none), for the header."""
    settings = dict(options or {})
    if embed_check is not None:
        require_regular_file(embed_check, "--embed-check")
        settings["embed_check_sha256"] = file_hash(embed_check)
    return json.dumps(settings, sort_keys=True, default=str) if settings else ""


def generate_source(
    path: str | os.PathLike,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> tuple[str, ModelFile, Program]:
    """Read and convert a model; return the generated module's text without writing anything.

    `embed_check`: an .npz (x0.., y0..) whose first sample is stored in the module with a `self_check()`.
    """
    generated, model, program = _generate(path, options, embed_check)
    return generated.text(), model, program


def _generate(
    path: str | os.PathLike, options: dict | None, embed_check: str | os.PathLike | None
) -> tuple[Generated, ModelFile, Program]:
    """generate_source, with the module as a Generated (written piece by piece: its weights are never one string)."""
    options = check_options(options) or None
    model = pipeline.read(path)
    program = pipeline.build(model, options)
    # The program holds every weight it uses now. Letting the reader's arrays go means a rewrite that
    # replaces a weight (a Dense kernel stacked with its bias) frees the original: the model is never
    # in memory twice. (The ModelFile returned below has no weights.)
    model.weights.clear()
    check = None
    if embed_check is not None:
        reference = read_reference(embed_check)
        if (len(reference.inputs), len(reference.outputs)) != (len(program.inputs), len(program.outputs)):
            raise UsageError(
                f"{os.fspath(embed_check)}: has {len(reference.inputs)} inputs and {len(reference.outputs)} outputs, "
                f"the model {len(program.inputs)} and {len(program.outputs)}"
            )
        first = reference.first_sample()
        atol, rtol, _ = tolerance(options)
        check = SelfCheck(Path(embed_check).name, first.inputs, first.outputs, atol, rtol)
    optimized = pipeline.optimize(program)
    settings = settings_text(options, embed_check)
    source = pipeline.emit(
        optimized, model, path, file_hash(path), options, settings=settings, check=check, stream=True
    )
    if check is not None:
        _run_self_check(source.text(), embed_check, options)
    return source, model, program


def _run_self_check(source: str, embed_check: str | os.PathLike, options: dict | None) -> None:
    """Run the new module's self_check() before anything is written: a wrong vector is refused now."""
    module = module_from_source(source, "konverter_self_check")
    try:
        module.self_check()
    except AssertionError as err:
        raise MismatchError(f"--embed-check {os.fspath(embed_check)}: {err} ({tolerance(options)[2]})") from None
    except ValueError as err:  # predict refused the stored inputs (wrong shape)
        raise UsageError(f"{os.fspath(embed_check)}: does not fit the model ({str(err)[:160]})") from None


class _GeneratedSource(importlib.abc.SourceLoader):
    """Imports a generated module from memory, exactly as if it had been written to a file."""

    def __init__(self, source: str, filename: str) -> None:
        self.source, self.filename = source, filename

    def get_filename(self, fullname: str) -> str:
        return self.filename

    def get_data(self, path: str) -> bytes:
        return self.source.encode("utf-8")


def module_from_source(
    source: str, name: str, tree: ast.Module | None = None, namespace: dict | None = None
) -> types.ModuleType:
    """Import generated module text (ours, never text from a model file) as a fresh module, from memory.

    `tree`: that text parsed and changed by Konverter (profile's timers), run instead of the text, with
    `namespace` added to the module first; the module still reads its weights from `source`."""
    loader = _GeneratedSource(source, f"<konverter: {name}>")
    spec = importlib.util.spec_from_loader(name, loader, origin=loader.filename)
    module = importlib.util.module_from_spec(spec)
    if tree is None:
        loader.exec_module(module)
    else:
        module.__dict__.update(namespace or {})
        exec(compile(tree, loader.filename, "exec"), module.__dict__)  # Konverter's own text, changed by it
    return module


def load(
    path: str | os.PathLike,
    *,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> types.ModuleType:
    """Convert a model in memory and return it as a module object; nothing is written to disk.

    The result has everything a generated file has: `predict(x)`, `INPUT_SHAPE`, `OUTPUT_SHAPE`,
    `INPUT_NAMES`, ... (and `self_check()` with `embed_check`). `options` as for `konvert`.
    Raises KonverterError like `konvert`.
    """
    with naming(path):
        require_regular_file(path)
        source, _, _ = generate_source(path, options, embed_check)
        return module_from_source(source, f"konverter_model_{Path(path).stem}")


def read_header(target: str | os.PathLike) -> dict:
    """The provenance lines of a generated file: {"version", "source_sha256", "settings"}; {} if not ours."""
    if not _is_regular(target):
        return {}
    try:
        with open(target, encoding="utf-8", errors="replace") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return {}
    lines = head.splitlines()
    i = next((n for n, line in enumerate(lines) if line.startswith(MARKER + " ")), None)
    if i is None:
        return {}
    header = {"version": lines[i][len(MARKER) + 1 :].split(" ", 1)[0], "settings": ""}
    for line in lines[i + 1 : i + 1 + _header_length(lines[i + 1 :])]:
        if line.startswith(SOURCE_HASH_LINE):
            header["source_sha256"] = line[len(SOURCE_HASH_LINE) :].strip()
        elif line.startswith(SETTINGS_LINE):
            header["settings"] = line[len(SETTINGS_LINE) :].strip()
    return header


def _header_length(lines: list) -> int:
    """How many provenance lines (`# konverter-...`) follow the marker line."""
    n = 0
    while n < len(lines) and lines[n].startswith("# konverter-"):
        n += 1
    return n


def _is_regular(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def sealed(chunks: Iterable[str]) -> Iterator[str]:
    """The generated text, a chunk at a time, with one more line just before the closing END_LINE:
    the SHA-256 of the file without that line (computed as the chunks go by, never all in memory)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        if chunk == END_LINE + "\n":
            digest.update(chunk.encode("utf-8"))
            yield f"{CONTENT_HASH_LINE}{digest.hexdigest()}\n"
        else:
            digest.update(chunk.encode("utf-8"))
        yield chunk


def is_intact(target: str | os.PathLike) -> bool:
    """True when the file's content hash line matches the rest of it: nothing was edited or planted.

    It tells a Konverter-written file from an edited one or a copied header; someone able to write
    the folder could still forge it, as they could replace the model file (docs/security.md).
    """
    if not _is_regular(target):
        return False
    key = CONTENT_HASH_LINE.encode()
    digest, recorded = hashlib.sha256(), None
    with open(target, "rb") as handle:
        for line in handle:  # the weights' lines are 4 KB: streamed, constant memory
            if recorded is None and line.startswith(key):
                recorded = line[len(key) :].strip().decode("ascii", "replace")
            else:
                digest.update(line)
    return recorded is not None and digest.hexdigest() == recorded


def is_up_to_date(
    path: str | os.PathLike,
    target: str | os.PathLike,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> bool:
    """True when `target` was generated from this exact model file, by this Konverter, with these settings,
    and has not been changed since (its content hash matches)."""
    header = read_header(target)
    if header.get("version") != __version__ or "source_sha256" not in header:
        return False
    # The settings line was written through codegen.text, so compare in that form.
    return (
        header["source_sha256"] == file_hash(path)
        and header["settings"] == text(settings_text(options, embed_check), 2000)
        and is_intact(target)
    )


def write_atomically(target: Path, text: str | Iterable[str]) -> None:
    """Write to a temporary file beside the target, then rename: no half-written output, ever.

    The temporary file (`.NAME.<random>.tmp`) is created inside the `try`, so an interrupt at any
    point (Ctrl-C, or SIGTERM/SIGHUP turned into one by the command) either leaves the old target
    untouched with no temporary file, or the complete new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as handle:
            handle.writelines([text] if isinstance(text, str) else text)  # a Generated's chunks, one at a time
        os.replace(tmp, target)
    except FileExistsError:
        raise  # another writer's temporary file (a 64-bit random name): never ours to delete
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def output_path(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Where the module for `path` goes.

    None: next to the model (model.h5 -> model.py). An existing folder, or a path ending in a
    separator (`out/`, created when written): inside it. Otherwise the file named, with `.py` added
    when it has no suffix. A model-file suffix is refused: the output is Python, never a model file.
    """
    if out is None:
        return default_output(path)
    raw = os.fspath(out)
    target = Path(raw)
    if raw.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)) or target.is_dir():
        return target / default_output(Path(path).name)
    if target.suffix.lower() in MODEL_SUFFIXES:
        raise UsageError(f"output {raw}: a model-file name; the output is Python, give it a .py name")
    return target if target.suffix else target.with_name(target.name + ".py")


def output_notes(target: Path) -> list[str]:
    """Warnings about an output name that `import` cannot load, or that would hide another module."""
    stem = target.name[: -len(".py")] if target.name.endswith(".py") else None
    if stem is None:
        return [f"{target.name} does not end in .py, so `import` cannot load it (rename it to end in .py)"]
    if not stem.isidentifier() or keyword.iskeyword(stem):
        better = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
        better = (f"_{better}" if better[:1].isdigit() else better) + ("_model" if keyword.iskeyword(stem) else "")
        return [
            f"`import {stem}` is not valid Python: load it with importlib.import_module({stem!r}), "
            f"or name the output {better}.py"
        ]
    if stem == "numpy" or stem in getattr(sys, "stdlib_module_names", ()):
        return [f"{target.name} has the name of the module {stem!r}, which it would hide: choose another name"]
    return []


def check_target(source: str | os.PathLike, target: Path, force: bool) -> None:
    """OutputError unless `target` may be written: never the model itself, never a FIFO or device,
    and a file Konverter did not write only with `force`."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return  # nothing there (a write problem shows when writing)
    if not stat.S_ISREG(mode):
        raise OutputError(f"{target} exists and is not a regular file (a folder, FIFO or device); refused")
    if os.path.samefile(source, target):
        raise OutputError(f"{target} is the model file itself; refusing to write over it")
    if not force and not written_by_konverter(target):
        raise OutputError(f"{target} exists and was not written by Konverter; use --force to replace it")


def convert_file(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> tuple[Path, Program]:
    """Convert one model file and write the module; returns its path and the converted program."""
    require_regular_file(path)
    if embed_check is not None:
        require_regular_file(embed_check, "--embed-check")
    target = output_path(path, out)
    check_target(path, target, force)
    source, _, program = _generate(path, options, embed_check)
    try:
        write_atomically(target, sealed(source.chunks()))
    except OSError as err:
        raise OutputError(f"cannot write {target} ({err.strerror or err})") from None
    return target, program


def konvert(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> Path:
    """Convert one Keras model file into a NumPy-only Python module and return its path.

    `out` defaults to the model's path with a `.py` suffix; an existing folder, or a path ending in
    a separator, puts it inside; `.py` is added to a name without a suffix. The model file itself is
    never overwritten, and an existing file that Konverter did not write only with `force=True`.

    `options` (a dict; unknown keys and values raise UsageError):
        "weights": "float32" (default) or "float16" -- how the weights are stored in the file
            (float16 halves it; the math is float32 either way, results within about 1e-3). A float16
            file also imports in half the memory: weights of 1 MiB or more stay float16 and predict
            widens each to float32 at the call that uses it (bit-identical results; slower for one sample).

    `embed_check` names an .npz (x0.., y0.. or x, y) whose first sample is stored in the module
    together with a `self_check()` function; it is run once before writing (float16 weights are
    checked with a tolerance that fits them). Raises KonverterError with a one-line message that
    names the file; nothing is written when conversion fails.
    """
    with naming(path):
        target, program = convert_file(path, out, force=force, options=options, embed_check=embed_check)
    for note in program.notes:
        warnings.warn(f"{os.fspath(path)}: {note}", KonverterWarning, stacklevel=2)
    return target
