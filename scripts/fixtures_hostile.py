"""Injection corpus: small VALID models whose names are hostile strings (issue 7).

Layer names, model names and input/output names hold quotes, triple quotes, backslashes, newlines,
`#`, braces, right-to-left marks, Python keywords, the generated file's own identifiers, 10,000
characters, and code payloads. Konverter must convert each model to a file that imports, predicts
like Keras, and never runs any of it.

Keras refuses many of these names (tf-keras needs TensorFlow scope names, Keras 3 refuses "/",
HDF5 cannot store NUL in a name). Then the model is built and saved by Keras with placeholder names
and the stored strings are rewritten afterwards with h5py/zipfile: the math, the weights and the
reference outputs stay Keras's own.

Run with the fixture virtualenv: `cd scripts && /work/venv-keras/bin/python fixtures_hostile.py [--only NAME]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
from fixturelib import FIXTURES, FORMATS, ROOT, keras_for, rand, randomize, save

FAMILY = "hostile"
BATCH = 4
MARKER_FILE = "KONVERTER_PWNED"  # tests/test_injection.py checks that no payload ever creates it

PAYLOADS = {
    "call": f"'); __import__('os').system('touch {MARKER_FILE}') #",
    "dq_call": f'"); __import__("os").system("touch {MARKER_FILE}") #',
    "triple": f'"""\nimport os; os.system("touch {MARKER_FILE}")\n"""',
    "triple_single": f"'''\nimport os; os.system('touch {MARKER_FILE}')\n'''",
    "backslash": "ends with a backslash\\",
    "newlines": f"line one\nimport os; os.system('touch {MARKER_FILE}')\r\nthird\rline",
    "hash_braces": "# {braces} {0} %s %(x)s {{}} ${HOME}",
    "unicode": "\u202eevil\u202c \u200fright-to-left\u200e \u540d\u524d \U0001f600 \u2028sep\u2029 \ufeffbom",
    "keyword_lambda": "lambda",
    "keyword_import": "import",
    "keyword_none": "None",
    "f_string": "{__import__('os').system('touch " + MARKER_FILE + "')}",
}
# Names the generated module itself uses: a name from the file must never shadow them.
IDENTIFIERS = [
    "predict",
    "np",
    "x",
    "x0",
    "t0",
    "t1",
    "_w0",
    "_w1",
    "as_batch",
    "math",
    "base64",
    "INPUT_SHAPE",
    "OUTPUT_NAMES",
    "unpack_weights",
    "dense",
    "batched",
    "__all__",
    "__import__",
]
LONG = "L" * 10_000
# Only JSON can hold these (HDF5 strings cannot hold NUL); used as model names, never in weight paths.
JSON_ONLY = "nul\x00byte \udc80lone-surrogate"


def _sequential(K, names: list, model_name: str):
    L = K.layers
    layers = [
        L.Dense(6, activation="tanh", name=names[0]),
        L.Dense(5, name=names[1]),
        L.Activation("relu", name=names[2]),
        L.Dense(4, name=names[3]),
        L.BatchNormalization(name=names[4]),
        L.Dense(3, activation="softmax", name=names[5]),
    ]
    model = K.Sequential([K.Input(shape=(5,), name=names[6])] + layers, name=model_name)
    return model, [rand((BATCH, 5), 21)]


def _functional(K, names: list, model_name: str):
    L = K.layers
    inp = K.Input(shape=(4,), name=names[0])
    h = L.Dense(6, activation="relu", name=names[1])(inp)
    h = L.Dropout(0.5, name=names[2])(h)
    a = L.Dense(3, name=names[3])(h)
    b = L.Dense(2, activation="sigmoid", name=names[4])(h)
    c = L.Dense(1, name=names[5])(a)
    model = K.Model(inp, [a, b, c], name=model_name)
    return model, [rand((BATCH, 4), 22)]


# name -> (builder, names used for layers/inputs/outputs, model name, formats)
CASES = {
    "payload_seq": (
        _sequential,
        [PAYLOADS[k] for k in ("call", "dq_call", "triple", "triple_single", "backslash", "newlines", "f_string")],
        PAYLOADS["call"],
    ),
    "payload_func": (
        _functional,
        [PAYLOADS[k] for k in ("call", "newlines", "hash_braces", "unicode", "triple", "backslash")],
        PAYLOADS["triple_single"],
    ),
    "identifier_seq": (_sequential, IDENTIFIERS[:7], "predict"),
    "identifier_func": (_functional, ["x0", "t0", "np", "_w0", "predict", "INPUT_SHAPE"], "np"),
    "keyword_func": (
        _functional,
        ["lambda", "import", "None", "__all__", "unpack_weights", "__import__"],
        "class",
    ),
    "long_seq": (_sequential, [LONG, "b", "c", "d", "e", "f", LONG[:-1] + "g"], LONG),
    "unicode_func": (
        _functional,
        [PAYLOADS["unicode"], "\u05e9\u05dc\u05d5\u05dd", "a/b", "sl/ash/", "\\x41\\n", "\u200f"],
        JSON_ONLY,
    ),
}


def placeholder(i: int) -> str:
    return f"zqph{i}zq"  # valid as a TensorFlow scope and Keras 3 name; never a substring of another


def build(case: str, fmt: str):
    """(model, inputs, rewrites): rewrites maps each placeholder Keras saw to the hostile name."""
    builder, names, model_name = CASES[case]
    K = keras_for(fmt)
    try:
        if JSON_ONLY in [model_name, *names]:
            raise ValueError("a name only JSON can hold")
        K.utils.set_random_seed(77)
        model, inputs = builder(K, names, model_name)
        return model, inputs, {}
    except ValueError:
        pass
    K.backend.clear_session()
    K.utils.set_random_seed(77)
    wanted = [*names, model_name]
    ph = [placeholder(i) for i in range(len(wanted))]
    model, inputs = builder(K, ph[:-1], ph[-1])
    return model, inputs, dict(zip(ph, wanted))


def _replace(text: str, rewrites: dict) -> str:
    for old, new in rewrites.items():
        text = text.replace(old, new)
    return text


def _deep_replace(value, rewrites: dict):
    if isinstance(value, str):
        return _replace(value, rewrites)
    if isinstance(value, list):
        return [_deep_replace(v, rewrites) for v in value]
    if isinstance(value, dict):
        return {_replace(k, rewrites): _deep_replace(v, rewrites) for k, v in value.items()}
    return value


def _rewrite_json(text, rewrites: dict) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    # Keras writes ASCII-only JSON (json.dumps default); so do we: every name survives exactly.
    return json.dumps(_deep_replace(json.loads(text), rewrites))


def _rewrite_attrs(obj, rewrites: dict) -> None:
    for key in list(obj.attrs):
        value = obj.attrs[key]
        if isinstance(value, (bytes, str)):
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            if key in ("model_config", "training_config"):
                obj.attrs[key] = _rewrite_json(text, rewrites)
            elif any(p in text for p in rewrites):
                obj.attrs[key] = _replace(text, rewrites)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "SO":
            items = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.ravel()]
            if any(p in s for s in items for p in rewrites):
                new = [_replace(s, rewrites).encode("utf-8") for s in items]
                obj.attrs[key] = np.array(new, dtype=h5py.string_dtype("utf-8") if value.dtype.kind == "O" else None)


def _rename_links(group, rewrites: dict) -> None:
    """Rename every link whose name holds a placeholder, deepest first; '/' in a name nests groups, like Keras."""
    for key in list(group.keys()):
        child = group[key]
        if isinstance(child, h5py.Group):
            _rename_links(child, rewrites)
        _rewrite_attrs(child, rewrites)
        new = _replace(key, rewrites)
        if new != key:
            parts = [p for p in new.split("/") if p]
            parent = group
            for part in parts[:-1]:
                parent = parent.require_group(part)
            parent.move(f"{group.name}/{key}" if parent is not group else key, parts[-1])


def rewrite_h5(path: Path, rewrites: dict) -> None:
    with h5py.File(path, "r+") as f:
        _rewrite_attrs(f, rewrites)
        _rename_links(f, rewrites)


def rewrite_keras(path: Path, rewrites: dict) -> None:
    tmp = path.with_suffix(".rewrite")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                data = _rewrite_json(data, rewrites).encode("utf-8")
            elif info.filename.endswith(".h5"):
                data = _rewrite_weights_h5(data, rewrites)
            dst.writestr(info, data)
    tmp.replace(path)


def _rewrite_weights_h5(data: bytes, rewrites: dict) -> bytes:
    """Keras >= 3.6 names each vars group in an attribute; HDF5 text holds no NUL or lone surrogate."""
    storable = {k: v.replace("\0", "").encode("utf-8", "replace").decode("utf-8") for k, v in rewrites.items()}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.weights.h5"
        weights.write_bytes(data)
        rewrite_h5(weights, storable)
        return weights.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the hostile-name fixtures with real Keras.")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS))
    args = parser.parse_args()
    for case in CASES:
        if args.only and case not in args.only:
            continue
        for seed, fmt in enumerate(args.formats):
            model, inputs, rewrites = build(case, fmt)
            randomize(model, 3000 + seed)
            path = save(FAMILY, case, fmt, model, inputs)
            how = "rewritten after saving" if rewrites else "named by Keras"
            if rewrites:
                (rewrite_h5 if path.suffix == ".h5" else rewrite_keras)(path, rewrites)
            print(f"wrote {path.relative_to(ROOT)} ({how})", file=sys.stderr)
    _check_no_placeholders()


def _strings_of(f) -> list:
    found = []

    def visit(name, obj):
        found.append(name)
        found.extend(repr(v) for v in obj.attrs.values())

    found.extend(repr(v) for v in f.attrs.values())
    f.visititems(visit)
    return found


def _check_no_placeholders() -> None:
    """A placeholder left anywhere means the rewrite missed a place where Keras stores names."""
    for path in sorted((FIXTURES / FAMILY).glob("*")):
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
                found = [z.read("config.json").decode()]
                weights = Path(tmp) / "w.h5"
                weights.write_bytes(z.read("model.weights.h5"))
                with h5py.File(weights) as f:
                    found += _strings_of(f)
        elif path.suffix == ".h5":
            with h5py.File(path) as f:
                found = _strings_of(f)
        else:
            continue
        if any("zqph" in s for s in found):
            raise SystemExit(f"{path.name}: a placeholder name survived the rewrite")
    shutil.rmtree(ROOT / "scripts" / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
