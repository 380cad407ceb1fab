"""The conversion pipeline: read the file, build the program, write one Python module atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from . import __version__
from .codegen import MARKER, generate
from .errors import BadModelFile, OutputError
from .graph import Program, build_program
from .h5reader import ModelFile, read_model


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_output(path: str | os.PathLike) -> Path:
    """model.h5 -> model.py next to it (a name Python can import when the stem allows it)."""
    return Path(path).with_suffix(".py")


def written_by_konverter(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    # Our header line starts with the marker; a mention elsewhere (a user's own file) does not count.
    return any(line.startswith(MARKER) for line in head.splitlines())


def generate_source(path: str | os.PathLike, options: dict | None = None) -> tuple[str, ModelFile, Program]:
    """Read and convert a model; return the generated module's text without writing anything."""
    try:
        model = read_model(path)
        program = build_program(model, options)
    except RecursionError:
        raise BadModelFile("the model config is nested too deeply") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        # A config value of an unexpected type that no check caught: still the file's fault, still one line.
        detail = str(err).splitlines()[0][:100] if str(err) else ""
        raise BadModelFile(f"the model config is inconsistent ({type(err).__name__}: {detail})") from None
    source = generate(program, Path(path).name, model.keras_version, file_hash(path), __version__)
    return source, model, program


def write_atomically(target: Path, text: str) -> None:
    """Write to a temporary file beside the target, then rename: no half-written output, ever.

    The temporary file (`.NAME.<random>.tmp`) is created inside the `try`, so an interrupt at any
    point (Ctrl-C included) either leaves the old target untouched with no temporary file, or the
    complete new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except FileExistsError:
        raise  # another writer's temporary file (a 64-bit random name): never ours to delete
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def convert_file(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    options: dict | None = None,
) -> tuple[Path, Program]:
    """Convert one model file and write the module; returns its path and the converted program."""
    target = Path(out) if out is not None else default_output(path)
    if target.is_dir():
        target = target / default_output(Path(path).name)
    if target.exists() and not force and not written_by_konverter(target):
        raise OutputError(f"{target} exists and was not written by Konverter; use --force to replace it")
    source, _, program = generate_source(path, options)
    try:
        write_atomically(target, source)
    except OSError as err:
        raise OutputError(f"cannot write {target} ({err.strerror or err})") from None
    return target, program


def konvert(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    options: dict | None = None,
) -> Path:
    """Convert one Keras model file into a NumPy-only Python module and return its path.

    `out` defaults to the model's path with a `.py` suffix (a folder puts it inside). An existing
    file that Konverter did not write is only replaced with `force=True`. Raises KonverterError
    with a one-line message; nothing is written when conversion fails.
    """
    return convert_file(path, out, force=force, options=options)[0]
