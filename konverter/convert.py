"""The conversion pipeline: read the file, build the program, write one Python module atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from . import __version__
from .codegen import MARKER, generate
from .errors import OutputError
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
    return MARKER in head


def generate_source(path: str | os.PathLike, options: dict | None = None) -> tuple[str, ModelFile, Program]:
    """Read and convert a model; return the generated module's text without writing anything."""
    model = read_model(path)
    program = build_program(model, options)
    source = generate(program, Path(path).name, model.keras_version, file_hash(path), __version__, options)
    return source, model, program


def write_atomically(target: Path, text: str) -> None:
    """Write to a temporary file beside the target, then rename: no half-written output, ever."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
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
