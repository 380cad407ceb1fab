"""The Python API: konvert (with embed_check), load, inspect, verify, and the comparison they share."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, assert_close, edit_keras_config, import_file, load_reference

import konverter
from konverter.runtime import compare_outputs
from konverter.verify import keras_available, random_inputs

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "model.h5"
EXAMPLE_REF = ROOT / "examples" / "reference.npz"
CORE = FIXTURES / "core"


def edit_h5_config(source: Path, target: Path, edit) -> Path:
    """Copy a legacy .h5 model and change its stored model_config with h5py."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return target


def h5_param_count(path: Path) -> int:
    """Every weight value stored in a legacy .h5 file, counted with h5py alone."""
    total = 0

    def visit(_name, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj.size

    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(visit)
    return total


def unsupported_copy(tmp_path: Path) -> Path:
    """name_order__k2h5 with layer 2 made an unknown class and layer 4 a Lambda."""

    def edit(config):
        config["config"]["layers"][2]["class_name"] = "Frobnicate"
        config["config"]["layers"][4]["class_name"] = "Lambda"

    return edit_h5_config(CORE / "name_order__k2h5.h5", tmp_path / "unsupported.h5", edit)


# ----------------------------------------------------------------------------- load
def test_load_returns_a_working_model_and_writes_nothing(tmp_path):
    model_path = shutil.copy(EXAMPLE, tmp_path / "model.h5")
    model = konverter.load(model_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]
    xs, ys = load_reference(EXAMPLE_REF)
    assert_close(model.predict(xs[0]), ys[0], "load() batch")
    assert_close(model.predict(xs[0][1]), ys[0][1], "load() unbatched")
    assert model.INPUT_SHAPE == (None, 1) and model.OUTPUT_SHAPE == (None, 4)


def test_load_equals_the_written_file(tmp_path):
    written = import_file(konverter.konvert(CORE / "phone__k3keras.keras", tmp_path / "phone.py"))
    loaded = konverter.load(CORE / "phone__k3keras.keras")
    xs, _ = load_reference(CORE / "phone__k3keras.npz")
    assert np.array_equal(written.predict(xs[0]), loaded.predict(xs[0]))


def test_load_raises_one_line_errors(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a model")
    with pytest.raises(konverter.BadModelFile, match="not a Keras model file"):
        konverter.load(junk)
    with pytest.raises(konverter.UnsupportedModel, match="Frobnicate"):
        konverter.load(unsupported_copy(tmp_path))


# ----------------------------------------------------------------------------- embed_check / self_check
def test_embed_check_adds_a_passing_self_check(tmp_path):
    out = konverter.konvert(EXAMPLE, tmp_path / "m.py", embed_check=EXAMPLE_REF)
    module = import_file(out)
    assert "self_check" in module.__all__
    error = module.self_check()
    assert 0.0 <= error <= 1e-5
    plain = konverter.konvert(EXAMPLE, tmp_path / "plain.py")
    assert "self_check" not in plain.read_text()


def test_self_check_detects_a_damaged_file(tmp_path):
    out = konverter.konvert(EXAMPLE, tmp_path / "m.py", embed_check=EXAMPLE_REF)
    text = out.read_text()
    at = text.index("\n#:") + len("\n#:") + 4  # the weights: "#:" base64 comment lines at the end
    # Base64 character 4 holds the sign and top exponent bits of the first float32 weight: flip one of them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    flipped = alphabet[alphabet.index(text[at]) ^ 0b010000]
    damaged = text[:at] + flipped + text[at + 1 :]
    (tmp_path / "damaged.py").write_text(damaged)
    module = import_file(tmp_path / "damaged.py")
    with pytest.raises(AssertionError, match="differs from the stored reference"):
        module.self_check()


def test_embed_check_with_wrong_outputs_writes_nothing(tmp_path):
    xs, ys = load_reference(EXAMPLE_REF)
    np.savez(tmp_path / "wrong.npz", x0=xs[0], y0=ys[0] + 0.5)
    with pytest.raises(konverter.MismatchError, match="--embed-check"):
        konverter.konvert(EXAMPLE, tmp_path / "m.py", embed_check=tmp_path / "wrong.npz")
    np.savez(tmp_path / "two_inputs.npz", x0=xs[0], x1=xs[0], y0=ys[0])
    with pytest.raises(konverter.UsageError, match="2 inputs"):
        konverter.konvert(EXAMPLE, tmp_path / "m.py", embed_check=tmp_path / "two_inputs.npz")
    assert not (tmp_path / "m.py").exists()


def test_embedded_file_is_deterministic(tmp_path):
    a = konverter.konvert(EXAMPLE, tmp_path / "a.py", embed_check=EXAMPLE_REF).read_bytes()
    b = konverter.konvert(EXAMPLE, tmp_path / "b.py", embed_check=EXAMPLE_REF).read_bytes()
    assert a == b


# ----------------------------------------------------------------------------- inspect
def test_inspect_describes_a_nested_model():
    path = CORE / "nested_sequential__k2h5.h5"
    summary = konverter.inspect(path)
    assert (summary.format, summary.keras_version, summary.model_class) == ("h5", "2.21.0", "Sequential")
    assert summary.convertible and summary.problems == ()
    assert summary.total_params == h5_param_count(path)
    assert sum(row.params for row in summary.layers if row.depth == 0) == summary.total_params
    rows = {row.name: row for row in summary.layers}
    inner = rows["inner"]
    assert inner.class_name == "Sequential" and inner.depth == 0
    children = [row for row in summary.layers if row.path[:1] == ("inner",) and row.depth == 1]
    assert [row.class_name for row in children] == ["InputLayer", "Dense", "BatchNormalization", "Dense"]
    assert inner.params == sum(row.params for row in children)
    generated = konverter.load(path)
    assert summary.layers[-1].output_shapes == (generated.OUTPUT_SHAPE,)
    assert summary.inputs[0].shape == generated.INPUT_SHAPE
    assert all(row.supported for row in summary.layers)


def test_inspect_reports_every_unsupported_layer(tmp_path):
    summary = konverter.inspect(unsupported_copy(tmp_path))
    assert not summary.convertible
    assert len(summary.problems) == 2
    assert "Frobnicate" in summary.problems[0] and "Lambda" in summary.problems[1]
    by_class = {row.class_name: row for row in summary.layers}
    assert not by_class["Frobnicate"].supported and by_class["Frobnicate"].reason == "not supported"
    assert "never executes" in by_class["Lambda"].reason
    assert by_class["Frobnicate"].params == 5 * 7 + 5  # Dense(5) weights stay in the file
    shapes = [row.output_shape for row in summary.layers]
    # Known up to the first unsupported layer; a Keras 2 .h5 stores nothing to tell the rest.
    assert shapes == ["(None, 6)", "(None, 7)", "?", "?", "?", "?"]
    data = summary.to_dict()
    json.dumps(data)
    assert data["convertible"] is False and data["layers"][1]["output_shapes"] == [[None, 7]]


def test_inspect_takes_shapes_past_an_unsupported_layer_from_build_config(tmp_path):
    def edit(config):
        # The only PReLU: the other layers' class-based weight names in the archive stay the same.
        config["config"]["layers"][2]["class_name"] = "Frobnicate"

    path = edit_keras_config(CORE / "sequence_layers__k3keras.keras", tmp_path / "x.keras", edit)
    summary = konverter.inspect(path)
    reference = konverter.inspect(CORE / "sequence_layers__k3keras.keras")
    assert [row.class_name for row in summary.layers][2] == "Frobnicate"
    assert [row.output_shape for row in summary.layers] == [row.output_shape for row in reference.layers]
    assert "?" not in [row.output_shape for row in summary.layers]
    assert summary.outputs == reference.outputs and not summary.convertible


def test_inspect_refuses_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK but not really")
    with pytest.raises(konverter.BadModelFile):
        konverter.inspect(junk)


# ----------------------------------------------------------------------------- verify
def test_verify_against_reference_passes_in_all_modes():
    report = konverter.verify(EXAMPLE, reference=EXAMPLE_REF)
    assert report.ok and report.samples == 3
    assert [c.mode for c in report.checks] == ["batch", "batch of 1", "unbatched"]
    assert all(c.max_abs <= 1e-5 for c in report.checks)


def test_verify_against_wrong_reference_fails_with_the_size_of_the_error(tmp_path):
    xs, ys = load_reference(EXAMPLE_REF)
    np.savez(tmp_path / "off.npz", x0=xs[0], y0=ys[0] + np.float32(0.25))
    report = konverter.verify(EXAMPLE, reference=tmp_path / "off.npz")
    assert not report.ok
    assert all(abs(c.max_abs - 0.25) < 1e-4 for c in report.checks)


def test_verify_a_generated_file_checks_it_belongs_to_the_model(tmp_path):
    out = konverter.konvert(EXAMPLE, tmp_path / "m.py")
    assert konverter.verify(EXAMPLE, out, reference=EXAMPLE_REF).ok
    with pytest.raises(konverter.MismatchError, match="different model file"):
        konverter.verify(CORE / "dense_relu__k2h5.h5", out, reference=EXAMPLE_REF)
    (tmp_path / "other.py").write_text("print('not ours')\n")
    with pytest.raises(konverter.UsageError, match="not generated by Konverter"):
        konverter.verify(EXAMPLE, tmp_path / "other.py", reference=EXAMPLE_REF)


def test_verify_refuses_unusable_reference_data(tmp_path):
    np.savez(tmp_path / "no_y.npz", x0=np.zeros((2, 1), np.float32))
    with pytest.raises(konverter.UsageError, match="y0"):
        konverter.verify(EXAMPLE, reference=tmp_path / "no_y.npz")
    np.savez(tmp_path / "shape.npz", x0=np.zeros((2, 3), np.float32), y0=np.zeros((2, 4), np.float32))
    with pytest.raises(konverter.UsageError, match="do not fit"):
        konverter.verify(EXAMPLE, reference=tmp_path / "shape.npz")


@pytest.mark.skipif(keras_available(), reason="checks the message shown when Keras is absent")
def test_verify_without_keras_asks_for_a_reference():
    with pytest.raises(konverter.UsageError, match="--reference"):
        konverter.verify(EXAMPLE)


@pytest.mark.skipif(not keras_available(), reason="needs TensorFlow/Keras installed")
def test_verify_against_keras():
    for path in (EXAMPLE, CORE / "name_order__k3keras.keras"):
        report = konverter.verify(path, samples=2, seed=1)
        assert report.ok and report.against.startswith("Keras ")


def test_random_inputs_are_deterministic_and_typed():
    module = konverter.load(CORE / "phone__k2h5.h5")
    a = random_inputs(module, {}, 3, seed=5)
    b = random_inputs(module, {}, 3, seed=5)
    assert len(a) == 1 and a[0].dtype == np.float32 and a[0].shape == (3,) + module.INPUT_SHAPE[1:]
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], random_inputs(module, {}, 3, seed=6)[0])


# ----------------------------------------------------------------------------- the shared comparison
def test_compare_outputs_tolerance_nan_and_shape():
    want = np.array([1.0, 100.0, 0.0])
    ((abs_err, rel_err, ok),) = compare_outputs([want + [0, 0.005, 0]], [want], 1e-5, 1e-4)
    assert ok and abs(abs_err - 0.005) < 1e-12 and abs(rel_err - 5e-5) < 1e-12
    ((_, _, ok),) = compare_outputs([want + [0, 0.02, 0]], [want], 1e-5, 1e-4)
    assert not ok
    nan = np.array([math.nan, 1.0], np.float32)
    assert compare_outputs([nan], [nan], 1e-5, 1e-4)[0][2]
    assert compare_outputs([np.array([1.0, 1.0])], [nan], 1e-5, 1e-4)[0] == (math.inf, 0.0, False)
    assert compare_outputs([np.zeros(2)], [np.zeros(3)], 1e-5, 1e-4)[0] == (math.inf, math.inf, False)


# ----------------------------------------------------------------------------- no TensorFlow, ever
def test_conversion_imports_neither_tensorflow_nor_keras(tmp_path):
    script = f"""
import sys
import konverter
from konverter.cli import main
konverter.konvert({str(CORE / "name_order__k3keras.keras")!r}, {str(tmp_path / "a.py")!r})
konverter.load({str(CORE / "nested_sequential__k2h5.h5")!r})
konverter.inspect({str(CORE / "phone__k2keras.keras")!r})
konverter.verify({str(EXAMPLE)!r}, reference={str(EXAMPLE_REF)!r})
try:
    main(["convert", {str(CORE / "dense_relu__k3h5.h5")!r}, "-o", {str(tmp_path / "b.py")!r}, "-q"])
except SystemExit as done:
    assert done.code in (0, None), done.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(loaded)
"""
    # Decoy packages first on the path: importing any of them (even inside a try) leaves a mark.
    decoys = tmp_path / "decoys"
    for name in ("tensorflow", "keras", "tf_keras"):
        (decoys / name).mkdir(parents=True)
        (decoys / name / "__init__.py").write_text(
            f"open({str(tmp_path / ('imported-' + name))!r}, 'w').close()\nraise ImportError('decoy')\n"
        )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(decoys), str(ROOT)]))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert not list(tmp_path.glob("imported-*")), "conversion tried to import TensorFlow/Keras"
    assert (tmp_path / "a.py").exists() and (tmp_path / "b.py").exists()
