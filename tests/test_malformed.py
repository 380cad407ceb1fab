"""Broken and hostile model files: one clear line, a documented exit code, nothing written (issue 7, part 2).

The corpus comes from scripts/make_malformed.py (h5py/zipfile only), built afresh for this module.
Every case goes through the Python API; a representative subset also through `python -m konverter`.
A hypothesis test mutates valid files at random (bounded number of examples).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import pytest
from conftest import import_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import konverter
from konverter import KonverterError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_malformed  # noqa: E402

_CORPUS_DIR = Path(tempfile.mkdtemp(prefix="konverter-malformed-"))
atexit.register(shutil.rmtree, _CORPUS_DIR, True)
CASES = make_malformed.build_corpus(_CORPUS_DIR)
BY_NAME = {case.name: case for case in CASES}
# Reading a file may allocate at most this much (NumPy/Python memory, traced): a bomb fails before.
MEMORY_BOUND = 64 << 20
CLI_SUBSET = [
    "truncated_h5_512",
    "truncated_keras_2048",
    "flipped_keras_3",
    "config_units_huge",
    "config_deep_models",
    "config_not_utf8",
    "config_lambda_layer",
    "keras_custom",
    "graph_cycle",
    "weights_external_link",
    "weights_external_storage",
    "weights_gzip_bomb",
    "keras_traversal",
    "keras_zip_bomb",
    "keras_npz_weights",
    "weights_only",
    "heap_shifted",
    "empty",
]


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_api_refuses_cleanly(case, tmp_path):
    out = tmp_path / "out.py"
    tracemalloc.start()
    try:
        konverter.konvert(case.path, out)
        error = None
    except KonverterError as err:
        error = err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{case.name}: {peak} bytes allocated while refusing"
    if error is None:
        assert case.exit_code is None, f"{case.name} converted; it should fail with exit {case.exit_code}"
        import_file(out)  # damage that landed in plain weight bytes: still a working module
        return
    message = str(error)
    assert case.exit_code in (None, error.exit_code), f"{case.name}: exit {error.exit_code}: {message}"
    assert error.exit_code in (3, 4)
    assert "\n" not in message and "\r" not in message and 0 < len(message) < 500, message
    assert case.mentions.lower() in message.lower(), f"{case.name}: {message!r} should mention {case.mentions!r}"
    assert _leftovers(tmp_path) == [], f"{case.name} left files behind"


def test_corpus_covers_the_issue():
    """The corpus keeps every kind of damage the issue lists (a builder change cannot drop one silently)."""
    names = set(BY_NAME)
    kinds = ["truncated_", "flipped_", "graph_cycle", "graph_dangling_inbound", "config_units_huge"]
    kinds += ["config_negative_shape", "config_deep_json", "config_deep_models", "config_not_utf8"]
    kinds += ["weights_wrong_shape", "weights_string_dtype", "weights_missing", "weights_soft_link"]
    kinds += ["weights_external_link", "weights_external_storage", "keras_traversal", "keras_zip_bomb"]
    kinds += ["keras_npz_weights", "config_lambda_layer", "keras_custom", "weights_only", "config_unknown_class"]
    kinds += ["heap_shifted", "heap_zero_object", "group_soft_layer", "group_soft_root", "keras_layers_group_link"]
    for kind in kinds:
        assert any(n.startswith(kind) for n in names), kind
    assert sum(n.startswith("truncated_") for n in names) >= 20


@pytest.mark.parametrize("name", CLI_SUBSET)
def test_cli_one_line_and_exit_code(name, tmp_path):
    case = BY_NAME[name]
    out = tmp_path / "out.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "konverter", str(case.path), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,  # a hang guard, not a speed test
    )
    assert proc.returncode == case.exit_code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("konverter: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _leftovers(tmp_path) == []


def test_lambda_code_is_never_decoded(monkeypatch, tmp_path):
    """The Lambda's marshalled function is refused by class name: marshal/pickle/eval are never reached."""
    import builtins
    import marshal
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("model data was decoded as code")

    for module, name in (
        (marshal, "loads"),
        (pickle, "loads"),
        (pickle, "load"),
        (builtins, "eval"),
        (builtins, "exec"),
    ):
        monkeypatch.setattr(module, name, forbidden)
    for name in ("config_lambda_layer", "keras_lambda", "keras_npz_weights"):
        with pytest.raises(KonverterError) as info:
            konverter.konvert(BY_NAME[name].path, tmp_path / "out.py")
        assert info.value.exit_code == 4


# ----------------------------------------------------------------------------- property-based
SOURCES = [make_malformed.SEQ_H5, make_malformed.SEQ_KERAS, make_malformed.FUNC_H5]
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_paths(v, prefix + (i,))


def _mutate_json(config: dict, data) -> dict:
    paths = list(_json_paths(config))[1:]
    path = paths[data.draw(st.integers(0, len(paths) - 1), label="json node")]
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_value, label="new value")
    return config


def _mutated_file(source: Path, folder: Path, data) -> Path:
    blob = bytearray(source.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "flip", "shift", "json"]), label="mutation")
    target = folder / ("mutant" + source.suffix)
    if kind == "truncate":
        target.write_bytes(bytes(blob[: data.draw(st.integers(0, len(blob) - 1), label="cut")]))
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            blob[data.draw(st.integers(0, len(blob) - 1), label="offset")] ^= data.draw(st.integers(1, 255))
        target.write_bytes(bytes(blob))
    elif kind == "shift":  # bytes inserted or removed: everything after moves (this once hung libhdf5)
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        if data.draw(st.booleans(), label="insert"):
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        else:
            del blob[at : at + data.draw(st.integers(1, 8), label="removed")]
        target.write_bytes(bytes(blob))
    elif source.suffix == ".keras":
        with zipfile.ZipFile(io.BytesIO(bytes(blob))) as zin, zipfile.ZipFile(target, "w") as zout:
            for info in zin.infolist():
                member = zin.read(info)
                if info.filename == "config.json":
                    member = json.dumps(_mutate_json(json.loads(member), data)).encode()
                zout.writestr(info.filename, member)
    else:
        target.write_bytes(bytes(blob))
        with h5py.File(target, "r+") as f:
            f.attrs["model_config"] = json.dumps(_mutate_json(json.loads(f.attrs["model_config"]), data))
    return target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_mutated_files_convert_or_fail_cleanly(source, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mutant = _mutated_file(source, folder, data)
        out_dir = folder / "out"
        out_dir.mkdir()
        out = out_dir / "mutant.py"
        try:
            konverter.konvert(mutant, out)
        except KonverterError as err:
            assert err.exit_code in (3, 4) and "\n" not in str(err)
            assert _leftovers(out_dir) == []  # never a partial output
            return
        import_file(out)
