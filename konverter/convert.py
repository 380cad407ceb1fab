"""The conversion pipeline: read the file, build the program, write one Python module atomically."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.util
import json
import os
import secrets
import types
from pathlib import Path
from typing import Iterable

from . import __version__
from .codegen import MARKER, SETTINGS_LINE, SOURCE_HASH_LINE, Generated, SelfCheck, generate, text
from .errors import BadModelFile, MismatchError, OutputError, UsageError
from .graph import Program, build_program
from .h5reader import ModelFile, read_model
from .reference import read_reference


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


def settings_text(options: dict | None = None, embed_check: str | os.PathLike | None = None) -> str:
    """Non-default conversion settings as canonical JSON (empty when there are none), for the header."""
    settings = dict(options or {})
    if embed_check is not None:
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
    try:
        model = read_model(path)
        program = build_program(model, options)
    except RecursionError:
        raise BadModelFile("the model config is nested too deeply") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        # A config value of an unexpected type that no check caught: still the file's fault, still one line.
        detail = str(err).splitlines()[0][:100] if str(err) else ""
        raise BadModelFile(f"the model config is inconsistent ({type(err).__name__}: {detail})") from None
    check = None
    if embed_check is not None:
        reference = read_reference(embed_check)
        if (len(reference.inputs), len(reference.outputs)) != (len(program.inputs), len(program.outputs)):
            raise UsageError(
                f"{os.fspath(embed_check)}: has {len(reference.inputs)} inputs and {len(reference.outputs)} outputs, "
                f"the model {len(program.inputs)} and {len(program.outputs)}"
            )
        first = reference.first_sample()
        check = SelfCheck(Path(embed_check).name, first.inputs, first.outputs)
    source = generate(
        program,
        Path(path).name,
        model.keras_version,
        file_hash(path),
        __version__,
        options,
        settings=settings_text(options, embed_check),
        check=check,
        stream=True,
    )
    if check is not None:
        _run_self_check(source.text(), embed_check)
    return source, model, program


def _run_self_check(source: str, embed_check: str | os.PathLike) -> None:
    """Run the new module's self_check() before anything is written: a wrong vector is refused now."""
    module = module_from_source(source, "konverter_self_check")
    try:
        module.self_check()
    except AssertionError as err:
        raise MismatchError(f"--embed-check {os.fspath(embed_check)}: {err}") from None
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


def module_from_source(source: str, name: str) -> types.ModuleType:
    """Import generated module text (ours, never text from a model file) as a fresh module, from memory."""
    loader = _GeneratedSource(source, f"<konverter: {name}>")
    spec = importlib.util.spec_from_loader(name, loader, origin=loader.filename)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def load(
    path: str | os.PathLike,
    *,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> types.ModuleType:
    """Convert a model in memory and return it as a module object; nothing is written to disk.

    The result has everything a generated file has: `predict(x)`, `INPUT_SHAPE`, `OUTPUT_SHAPE`,
    `INPUT_NAMES`, ... (and `self_check()` with `embed_check`). Raises KonverterError like `konvert`.
    """
    source, _, _ = generate_source(path, options, embed_check)
    return module_from_source(source, f"konverter_model_{Path(path).stem}")


def read_header(target: str | os.PathLike) -> dict:
    """The provenance lines of a generated file: {"version", "source_sha256", "settings"}; {} if not ours."""
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
    for line in lines[i + 1 : i + 4]:
        if line.startswith(SOURCE_HASH_LINE):
            header["source_sha256"] = line[len(SOURCE_HASH_LINE) :].strip()
        elif line.startswith(SETTINGS_LINE):
            header["settings"] = line[len(SETTINGS_LINE) :].strip()
    return header


def is_up_to_date(
    path: str | os.PathLike,
    target: str | os.PathLike,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> bool:
    """True when `target` was generated from this exact model file, by this Konverter, with these settings."""
    header = read_header(target)
    if header.get("version") != __version__ or "source_sha256" not in header:
        return False
    # The settings line was written through codegen.text, so compare in that form.
    return header["source_sha256"] == file_hash(path) and header["settings"] == text(
        settings_text(options, embed_check), 2000
    )


def write_atomically(target: Path, text: str | Iterable[str]) -> None:
    """Write to a temporary file beside the target, then rename: no half-written output, ever.

    The temporary file (`.NAME.<random>.tmp`) is created inside the `try`, so an interrupt at any
    point (Ctrl-C included) either leaves the old target untouched with no temporary file, or the
    complete new one.
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
    """Where the module for `path` goes: `out`, inside `out` when it is a folder, else next to the model."""
    target = Path(out) if out is not None else default_output(path)
    if target.is_dir():
        target = target / default_output(Path(path).name)
    return target


def convert_file(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    options: dict | None = None,
    embed_check: str | os.PathLike | None = None,
) -> tuple[Path, Program]:
    """Convert one model file and write the module; returns its path and the converted program."""
    target = output_path(path, out)
    if target.exists() and not force and not written_by_konverter(target):
        raise OutputError(f"{target} exists and was not written by Konverter; use --force to replace it")
    source, _, program = _generate(path, options, embed_check)
    try:
        write_atomically(target, source.chunks())
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

    `out` defaults to the model's path with a `.py` suffix (a folder puts it inside). An existing
    file that Konverter did not write is only replaced with `force=True`. `embed_check` names an
    .npz (x0.., y0..) whose first sample is stored in the module together with a `self_check()`
    function; it is run once before writing. Raises KonverterError with a one-line message;
    nothing is written when conversion fails.
    """
    return convert_file(path, out, force=force, options=options, embed_check=embed_check)[0]
