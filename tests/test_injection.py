"""Strings from a model file never become code (issue 7, part 1).

The corpus in tests/fixtures/hostile/ (built by scripts/fixtures_hostile.py from real Keras) holds
valid models whose layer, model, input and output names are code payloads, quotes, newlines,
right-to-left marks, keywords, the generated file's own identifiers and 10,000-character strings.
test_fixtures.py already checks that each one predicts like Keras; here we check that nothing from
the file reaches the generated module other than as an escaped literal or a sanitized comment.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, edit_keras_config, import_file, load_reference

import konverter
from konverter import KonverterError
from konverter.codegen import snake_case
from konverter.convert import generate_source
from konverter.layers import CONVERTERS

HOSTILE = FIXTURES / "hostile"
MODELS = sorted(p for p in HOSTILE.iterdir() if p.suffix in (".h5", ".keras"))
MARKER_FILE = "KONVERTER_PWNED"  # what every payload in the corpus tries to create
KONVERTER_SOURCE = Path(konverter.__file__).parent
# codegen's own numbered names: inputs, temporaries, batch flags, states, weights (and the parts of an
# augmented kernel), the one-sample buffers h/v/z and the batch workspaces r of a Dense chain.
NUMBERED = re.compile(r"^(x|t|b|s|h|v|z|r)\d+$")


def _konverter_vocabulary() -> set[str]:
    """Every identifier Konverter's own source could put into a generated file.

    The layer functions and runtime helpers are copied from konverter/layers and konverter/runtime.py;
    the module frame (predict, INPUT_SHAPES, ...) is written by codegen.py inside string literals.
    """
    words: set[str] = set(dir(builtins))
    for path in [
        KONVERTER_SOURCE / "runtime.py",
        KONVERTER_SOURCE / "codegen.py",
        *KONVERTER_SOURCE.glob("layers/**/*.py"),
    ]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                words.add(node.id)
            elif isinstance(node, ast.Attribute):
                words.add(node.attr)
            elif isinstance(node, ast.FunctionDef):
                words.add(node.name)
            elif isinstance(node, ast.ImportFrom) and node.module:
                words.add(node.module)  # runtime.quiet_fp_state imports inside the generated file
            elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
                words.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and path.name == "codegen.py":
                words.update(re.findall(r"[A-Za-z_]\w*", node.value))
    return words


VOCABULARY = _konverter_vocabulary()
# Weights are named the way Keras names layers, from the layer's class (a class Konverter converts,
# so its own word), a counter and a parameter of a layer function: `conv2d_1_kernel`.
_CLASSES = "|".join(sorted({re.escape(snake_case(c)) for c in CONVERTERS} | {"layer"}, key=len, reverse=True))
WEIGHT_NAME = re.compile(rf"^(?:{_CLASSES})(?:_\d+)?_(?P<param>[a-z][a-z0-9_]*?)(?:_\d+)?$")


def _konverter_word(name: str) -> bool:
    if name in VOCABULARY or NUMBERED.match(name):
        return True
    found = WEIGHT_NAME.match(name)
    # The parameter part: a parameter name, possibly with a list index or "_bias"/"_kernel" appended.
    return bool(found) and all(part.rstrip("0123456789") in VOCABULARY for part in found["param"].split("_"))


def _file_strings(model_path: Path) -> set[str]:
    """Every string stored in the model's config: names, class names, every other value and key."""
    if model_path.suffix == ".keras":
        with zipfile.ZipFile(model_path) as z:
            config = json.loads(z.read("config.json"))
    else:
        with h5py.File(model_path, "r") as f:
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    found: set[str] = set()

    def visit(value) -> None:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                found.add(k)
                visit(v)

    visit(config)
    return found


def _identifiers(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name for alias in node.names)
            if isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    return names


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run inside an empty folder with os.system/popen/subprocess replaced by recorders."""
    calls: list = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(("os.system", a)) or 0)
    monkeypatch.setattr(os, "popen", lambda *a, **k: calls.append(("os.popen", a)))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(("Popen", a)))
    yield tmp_path, calls
    assert not calls, f"a payload ran: {calls}"
    assert not list(tmp_path.rglob(MARKER_FILE)), "a payload created its marker file"


def test_corpus_is_complete():
    """Guard against the builder silently writing less than it should."""
    stems = {p.stem for p in MODELS}
    for case in ("payload_seq", "payload_func", "identifier_seq", "identifier_func", "keyword_func"):
        for fmt in ("k2h5", "k2keras", "k3h5", "k3keras"):
            assert f"{case}__{fmt}" in stems
    names = set().union(*(_file_strings(p) for p in MODELS))
    assert any(len(n) >= 10_000 for n in names)
    assert any("\u202e" in n for n in names) and any("\n" in n for n in names) and any('"""' in n for n in names)
    assert any("\x00" in n for n in names)


@pytest.mark.parametrize("model_path", MODELS, ids=[p.name for p in MODELS])
def test_names_never_become_code(model_path, sandbox):
    tmp, _ = sandbox
    source, model, program = generate_source(model_path)
    # Everything from the file is escaped: the generated module is pure printable ASCII.
    assert source.isascii()
    assert all(line.isprintable() for line in source.splitlines())
    tree = ast.parse(source)

    # Identifiers: only Konverter's own vocabulary and its numbered variables, whatever the file says.
    foreign = {n for n in _identifiers(tree) if not _konverter_word(n)}
    assert not foreign, f"identifiers that Konverter never writes: {sorted(foreign)[:5]}"

    # Top-level statements are Konverter's fixed frame: docstring, imports, assignments, defs, one del.
    for node in tree.body:
        assert isinstance(node, (ast.Expr, ast.Import, ast.Assign, ast.FunctionDef, ast.Delete)), ast.dump(node)[:200]
        if isinstance(node, ast.Expr):
            assert node is tree.body[0] and isinstance(node.value, ast.Constant)

    # A string from the file that is not a plain identifier shows up only inside string literals and comments.
    file_strings = {s for s in _file_strings(model_path) if not s.isidentifier() and len(s) >= 4}
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    code_only = _strip_literals_and_comments(source)
    for s in file_strings:
        assert s not in code_only, f"{s[:60]!r} appears in code"
    assert all("\n" not in c and "\r" not in c for c in comments)

    # The names round-trip exactly through the literals, and the module imports and predicts.
    out = tmp / "generated.py"
    out.write_text(source, encoding="utf-8")
    module = import_file(out)
    assert list(module.INPUT_NAMES) == [inp.name for inp in program.inputs]
    assert list(module.OUTPUT_NAMES) == list(program.output_names)
    assert set(module.INPUT_NAMES) | set(module.OUTPUT_NAMES) <= set(literals)
    xs, ys = load_reference(model_path.with_suffix(".npz"))
    got = module.predict(*xs)
    got = got if isinstance(got, list) else [got]
    for g, y in zip(got, ys):
        np.testing.assert_allclose(g, y, rtol=1e-4, atol=1e-5)


def _strip_literals_and_comments(source: str) -> str:
    """The module text with every string literal and comment removed: what Python actually executes."""
    kept = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT):
            continue
        if sys.version_info >= (3, 12) and tok.type in (
            tokenize.FSTRING_START,
            tokenize.FSTRING_MIDDLE,
            tokenize.FSTRING_END,
        ):
            continue
        kept.append(tok.string)
    return " ".join(kept)


def test_hostile_source_file_name(sandbox):
    """The model's own file name lands in the header comment and docstring: sanitized there too."""
    tmp, _ = sandbox
    name = f"m'); __import__('os').system('touch {MARKER_FILE}') #\n\"\"\"\u202e.keras"
    hostile = tmp / name
    shutil.copy(HOSTILE / "payload_seq__k3keras.keras", hostile)
    out = konverter.konvert(hostile, tmp / "generated.py")
    source = out.read_text(encoding="utf-8")
    assert source.isascii()
    header = [line for line in source.splitlines() if line.startswith("# Generated by Konverter")]
    assert len(header) == 1 and "touch" in header[0]  # shown, as text inside a one-line comment
    module = import_file(out)
    xs, ys = load_reference(HOSTILE / "payload_seq__k3keras.npz")
    np.testing.assert_allclose(module.predict(xs[0]), ys[0], rtol=1e-4, atol=1e-5)


PAYLOAD = f"relu'); __import__('os').system('touch {MARKER_FILE}') #\n"


def _set_activation(config):
    config["config"]["layers"][1]["config"]["activation"] = PAYLOAD


def _set_dtype(config):
    config["config"]["layers"][0]["config"]["dtype"] = PAYLOAD


def _set_class(config):
    config["config"]["layers"][1]["class_name"] = PAYLOAD


def _set_registered(config):
    layer = config["config"]["layers"][1]
    layer["registered_name"] = "evil>" + PAYLOAD
    layer["class_name"] = PAYLOAD
    layer["module"] = "os"


def _set_axis_string(config):
    config["config"]["layers"][5]["config"]["axis"] = PAYLOAD


@pytest.mark.parametrize(
    "mutate", [_set_activation, _set_dtype, _set_class, _set_registered, _set_axis_string], ids=lambda f: f.__name__
)
def test_hostile_config_values_are_refused_cleanly(mutate, sandbox):
    """Other config strings (activation, dtype, class names, axes) are checked, never pasted into code."""
    tmp, _ = sandbox
    bad = edit_keras_config(HOSTILE / "identifier_seq__k3keras.keras", tmp / "bad.keras", mutate)
    out = tmp / "out.py"
    with pytest.raises(KonverterError) as info:
        konverter.konvert(bad, out)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message and len(message) < 2000
    assert not out.exists()


def test_hostile_file_names_on_the_terminal(tmp_path):
    """File names reach the terminal escaped: no escape sequences, no rich markup, no crash."""
    folder = tmp_path / "models["  # with "x].h5" inside, the printed path holds the markup tag "[/x]"
    folder.mkdir()
    good = ["x].h5", "\x1b]0;evil title\x1b\\.keras", "new\nline\r.h5", "[link=https:x]y.keras", "[red]z.h5"]
    for name in good:
        source = "payload_seq__k3keras.keras" if name.endswith(".keras") else "payload_seq__k3h5.h5"
        shutil.copy(HOSTILE / source, folder / name)
    broken = folder / "\x1b[31mbroken].h5"
    broken.write_bytes(b"not a model")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    for args in ([str(folder)], [str(broken)], [str(folder / good[0]), "-o", str(tmp_path / "o.py")]):
        proc = subprocess.run(
            [sys.executable, "-m", "konverter", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        shown = proc.stdout + proc.stderr
        assert "\x1b" not in shown and "Traceback" not in shown, shown
        assert proc.returncode == (1 if args[0] == str(folder) else 3 if args[0] == str(broken) else 0), shown
    for name in good:
        assert (folder / name).with_suffix(".py").exists()
    assert not list(tmp_path.rglob(MARKER_FILE))
