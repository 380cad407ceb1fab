"""Daily use (issue 14): what a new user trips over on the command line and in the Python API."""

from __future__ import annotations

import importlib
import json
import os
import pydoc
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, edit_keras_config, import_file, load_reference
from test_api import EXAMPLE, EXAMPLE_REF
from test_cli import model_folder, run

import konverter
from konverter.convert import read_header

ROOT = Path(__file__).resolve().parent.parent
CORE = FIXTURES / "core"
PHONE = CORE / "phone__k2h5.h5"  # the phone.h5: float16 weights are 4e-4 off on its first sample
PHONE_REF = CORE / "phone__k2h5.npz"


def cli(*args, cwd: Path, **env) -> subprocess.CompletedProcess:
    """The command as a user runs it: a separate process, output through pipes (not a terminal)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "konverter", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


# ----------------------------------------------------------------------------- commands and help
def test_help_lists_every_command(capsys):
    for args in (["--help"], ["-h"], ["help"]):
        code, out, _ = run(capsys, *args)
        assert code == 0, args
        for command in ("convert", "inspect", "verify"):  # a row of the command list, plain or in a panel
            assert re.search(rf"^\W*{command}\s{{2,}}\w", out, re.MULTILINE), (args, out)
        assert "Exit codes" in out
    code, out, _ = run(capsys, "help", "verify")
    assert code == 0 and "konverter verify" in out and "--reference" in out
    code, out, _ = run(capsys, "convert", "--help")
    assert code == 0 and "PATH" in out and "--verbose" in out


def test_shell_completion_is_offered(capsys):
    code, out, _ = run(capsys, "--help")
    assert "--install-completion" in out and "--show-completion" in out
    done = cli("--show-completion", "bash", cwd=ROOT)
    assert done.returncode == 0 and "_konverter_completion" in done.stdout


@pytest.mark.parametrize("command", [[], ["inspect"], ["verify"]])
def test_a_missing_file_is_a_usage_error(tmp_path, capsys, command):
    code, out, err = run(capsys, *command, tmp_path / "missing.h5")
    assert code == 2 and out == ""
    assert err.strip() == f"konverter: error: {tmp_path / 'missing.h5'}: no such file"


def test_several_paths_files_and_folders(tmp_path, capsys):
    folder = model_folder(tmp_path)
    single = shutil.copy(EXAMPLE, tmp_path / "single.h5")
    other = shutil.copy(CORE / "dense_relu__k3h5.h5", tmp_path / "other.h5")
    code, out, _ = run(capsys, single, other, folder, "--json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["total"], summary["converted"]) == (5, 5)
    assert [Path(f["source"]).name for f in summary["files"]][:2] == ["single.h5", "other.h5"]
    assert import_file(tmp_path / "single.py").predict([0.5]).shape == (4,)
    # The same model named twice is converted once.
    code, out, _ = run(capsys, single, single, "--json", "--force")
    assert json.loads(out)["total"] == 1


def test_several_paths_into_an_output_folder(tmp_path, capsys):
    folder = model_folder(tmp_path)
    code, _, _ = run(capsys, EXAMPLE, folder, "-o", tmp_path / "out")
    assert code == 0
    expected = ["dense_relu__k2h5.py", "model.py", "name_order__k3h5.py", "phone__k3keras.py"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == expected
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, EXAMPLE, folder, "-o", tmp_path / "afile")
    assert code == 2 and "output is a folder" in err


def test_a_folder_with_models_only_in_subfolders_hints_recursive(tmp_path, capsys):
    (tmp_path / "top" / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "top" / "sub" / "m.h5")
    code, _, err = run(capsys, tmp_path / "top")
    assert code == 1 and "--recursive" in err and "only in subfolders" in err
    code, _, _ = run(capsys, tmp_path / "top", "--recursive")
    assert code == 0 and (tmp_path / "top" / "sub" / "m.py").exists()


# ----------------------------------------------------------------------------- what a folder run prints
def test_a_folder_run_lists_failures_then_the_totals(tmp_path, capsys):
    folder = model_folder(tmp_path, broken=True)
    code, out, err = run(capsys, folder)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"FAILED {folder / 'a_broken.h5'}: ")
    assert lines[-1] == "Konverter, 4 files: 3 converted, 1 failed"  # totals last
    assert len(lines) == 2 and out == ""  # the converted files are a count, not rows
    # A second run: nothing up to date is listed either.
    code, out, err = run(capsys, folder)
    assert err.strip().splitlines()[-1] == "Konverter, 4 files: 0 converted, 3 up to date, 1 failed"
    assert "dense_relu" not in out + err
    # --verbose lists every file; -q only the failures.
    code, out, err = run(capsys, folder, "--verbose")
    assert out.count("up to date  ") == 3 and "dense_relu__k2h5.h5 -> " in out
    code, out, err = run(capsys, folder, "-q")
    assert code == 1 and out == "" and err.strip().splitlines() == lines[:1]


def test_long_paths_are_never_cut_on_a_narrow_terminal(tmp_path):
    folder = tmp_path / ("a-folder-with-a-long-name-" * 3)
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "good.h5")
    bad = folder / ("the-model-that-failed-" * 4 + ".h5")
    bad.write_bytes(b"not a model")
    done = cli(folder, cwd=tmp_path, COLUMNS="60")
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {bad}: not a Keras model file")
    assert "…" not in done.stderr + done.stdout


def test_json_mode_also_reports_errors_on_stderr(tmp_path, capsys):
    folder = model_folder(tmp_path, broken=True)
    (folder / "b_broken.keras").write_bytes(b"PK but not a zip")
    code, out, err = run(capsys, folder, "--json", "-j", "2")
    assert code == 1 and json.loads(out)["failed"] == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("FAILED ") for line in lines)
    assert "a_broken.h5" in lines[0] and "b_broken.keras" in lines[1]


def test_failed_is_coloured_on_a_terminal_only(tmp_path):
    folder = model_folder(tmp_path, broken=True)
    plain = cli(folder, cwd=tmp_path)
    assert "FAILED" in plain.stderr and "\x1b[" not in plain.stderr
    coloured = cli(folder, cwd=tmp_path, FORCE_COLOR="1")
    assert "\x1b[1;31mFAILED\x1b[0m" in coloured.stderr


# ----------------------------------------------------------------------------- single files
def test_the_input_model_is_never_overwritten(tmp_path, capsys):
    victim = shutil.copy(EXAMPLE, tmp_path / "victim.h5")
    before = victim.read_bytes()
    code, _, err = run(capsys, victim, "-o", victim, "--force")
    assert code == 2 and "give it a .py name" in err
    # A name that leads to the model another way (a hard link): refused too.
    os.link(victim, tmp_path / "alias.py")
    code, _, err = run(capsys, victim, "-o", tmp_path / "alias.py", "--force")
    assert code == 5 and "is the model file itself" in err
    with pytest.raises(konverter.OutputError, match="model file itself"):
        konverter.konvert(victim, tmp_path / "alias.py", force=True)
    assert victim.read_bytes() == before


def test_output_path_ending_in_a_separator_is_a_folder(tmp_path, capsys):
    code, out, _ = run(capsys, EXAMPLE, "-o", f"{tmp_path / 'mydir'}{os.sep}")
    assert code == 0 and (tmp_path / "mydir" / "model.py").is_file()
    assert konverter.konvert(EXAMPLE, f"{tmp_path / 'api'}/") == tmp_path / "api" / "model.py"


def test_output_without_a_suffix_gets_py(tmp_path, capsys):
    code, out, err = run(capsys, EXAMPLE, "-o", tmp_path / "model")
    assert code == 0 and (tmp_path / "model.py").is_file() and not (tmp_path / "model").exists()
    assert "added .py" in err


def test_names_import_cannot_load_are_warned_with_the_way_to_import(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, EXAMPLE, "-o", tmp_path / "my-model.py")
    assert code == 0 and "importlib.import_module('my-model')" in err and "my_model.py" in err
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.import_module("my-model").predict([0.5]).shape == (4,)  # the advice works
    code, _, err = run(capsys, EXAMPLE, "-o", tmp_path / "class.py")
    assert code == 0 and "importlib.import_module('class')" in err
    code, _, err = run(capsys, EXAMPLE, "-o", tmp_path / "json.py")
    assert code == 0 and "would hide" in err
    code, _, err = run(capsys, EXAMPLE, "-o", tmp_path / "fine.py")
    assert code == 0 and err == ""


def test_a_missing_embed_check_file_is_a_usage_error_even_with_an_existing_output(tmp_path, capsys):
    model = shutil.copy(EXAMPLE, tmp_path / "phone.h5")
    assert run(capsys, model)[0] == 0
    code, _, err = run(capsys, model, "--embed-check", tmp_path / "missing.npz")
    assert code == 2 and err.strip() == f"konverter: error: --embed-check {tmp_path / 'missing.npz'}: no such file"
    with pytest.raises(konverter.UsageError, match="no such file"):
        konverter.konvert(model, embed_check=tmp_path / "missing.npz")


def test_float16_weights_are_checked_with_a_tolerance_that_fits_them(tmp_path, capsys):
    out = tmp_path / "phone.py"
    code, _, err = run(capsys, PHONE, "-o", out, "--weights", "float16", "--embed-check", PHONE_REF)
    assert code == 0, err
    assert 1e-5 < import_file(out).self_check() <= 2e-3  # beyond the float32 promise, within float16's
    code, stdout, _ = run(capsys, "verify", PHONE, out, "--reference", PHONE_REF)
    assert code == 0 and "tolerance for float16 weights: atol 0.002, rtol 0.01" in stdout
    report = konverter.verify(PHONE, out, reference=PHONE_REF)
    assert report.ok and (report.atol, report.rtol) == (2e-3, 1e-2) and "float16" in report.tolerance
    # An explicit tolerance still wins, and says so.
    code, _, err = run(capsys, "verify", PHONE, out, "--reference", PHONE_REF, "--atol", "1e-5", "--rtol", "1e-4")
    assert code == 6 and "tolerance given: atol 1e-05, rtol 0.0001" in err
    # A wrong reference is still caught with the float16 tolerance.
    xs, ys = load_reference(PHONE_REF)
    np.savez(tmp_path / "wrong.npz", x0=xs[0], y0=ys[0] + np.float32(0.05))
    with pytest.raises(konverter.MismatchError, match="float16"):
        konverter.konvert(PHONE, tmp_path / "w.py", options={"weights": "float16"}, embed_check=tmp_path / "wrong.npz")


def test_verify_reference_takes_x_and_y(tmp_path, capsys):
    xs, ys = load_reference(EXAMPLE_REF)
    np.savez(tmp_path / "ref.npz", x=xs[0], y=ys[0])
    code, out, _ = run(capsys, "verify", EXAMPLE, "--reference", tmp_path / "ref.npz")
    assert code == 0 and "verify: ok" in out
    assert run(capsys, EXAMPLE, "-o", tmp_path / "m.py", "--embed-check", tmp_path / "ref.npz")[0] == 0
    np.savez(tmp_path / "both.npz", x=xs[0], x0=xs[0], y=ys[0])
    code, _, err = run(capsys, "verify", EXAMPLE, "--reference", tmp_path / "both.npz")
    assert code == 2 and "both x and x0" in err


# ----------------------------------------------------------------------------- the Python API
def test_unknown_options_are_named_with_a_guess(tmp_path):
    with pytest.raises(konverter.UsageError) as caught:
        konverter.konvert(EXAMPLE, tmp_path / "m.py", options={"wieghts": "float16"})
    message = str(caught.value)
    assert message.startswith(f"{EXAMPLE}: ") and "'wieghts' (did you mean 'weights'?)" in message
    with pytest.raises(konverter.UsageError, match="'speed'"):
        konverter.load(EXAMPLE, options={"speed": 1})
    assert not (tmp_path / "m.py").exists()


def test_bad_option_values_are_konverter_errors_naming_the_file(tmp_path):
    for bad in ("float64", None, 16):
        with pytest.raises(konverter.KonverterError) as caught:
            konverter.konvert(EXAMPLE, tmp_path / "m.py", options={"weights": bad})
        assert isinstance(caught.value, konverter.UsageError)
        assert str(caught.value).startswith(str(EXAMPLE)) and "'float32' or 'float16'" in str(caught.value)
    with pytest.raises(konverter.UsageError, match="must be a dict"):
        konverter.load(EXAMPLE, options=["weights"])


def test_api_errors_name_the_file(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a model")
    for call in (konverter.konvert, konverter.load, konverter.inspect, konverter.verify):
        with pytest.raises(konverter.BadModelFile) as caught:
            call(junk)
        assert str(caught.value).startswith(f"{junk}: not a Keras model file"), call


def test_help_of_konvert_lists_the_options():
    page = pydoc.render_doc(konverter.konvert, renderer=pydoc.plaintext)
    assert "options" in page and '"weights": "float32" (default) or "float16"' in page
    assert "weights" in pydoc.render_doc(konverter, renderer=pydoc.plaintext)
    assert konverter.OPTIONS == {"weights": ("float32", "float16")}


def test_the_header_records_a_content_hash(tmp_path):
    out = konverter.konvert(EXAMPLE, tmp_path / "m.py")
    assert read_header(out)["version"] == konverter.__version__
    assert "# konverter-content-sha256: " in out.read_text()


# ----------------------------------------------------------------------------- documented exits, never a traceback
def _deeply_nested(tmp_path: Path) -> Path:
    """A functional model whose first call carries keyword arguments nested 890 levels deep (issue 15)."""

    def edit(config):
        deep: dict = {}
        for _ in range(890):
            deep = {"k": deep}
        node = next(layer for layer in config["config"]["layers"] if layer.get("inbound_nodes"))
        node["inbound_nodes"][0]["kwargs"]["deep"] = deep

    source = FIXTURES / "functional" / "call_kwargs__k3keras.keras"
    return edit_keras_config(source, tmp_path / "deep.keras", edit)


def test_deeply_nested_configs_exit_3_in_one_line(tmp_path, capsys):
    deep = _deeply_nested(tmp_path)
    for command in (["inspect"], [], ["verify"]):
        code, out, err = run(capsys, *command, deep)
        assert code == 3 and out == "", command
        assert err.strip() == f"konverter: error: {deep}: the model config is nested too deeply"
    with pytest.raises(konverter.BadModelFile, match="nested too deeply"):
        konverter.inspect(deep)


def test_verify_on_a_model_too_large_to_run_exits_3_in_one_line(tmp_path, capsys):
    def edit(config):  # a 20,000 x 20,000 image into the same small CNN (its weights do not depend on the size)
        shape = config["config"]["layers"][0]["config"]["batch_shape"]
        shape[1:3] = [20000, 20000]

    big = edit_keras_config(FIXTURES / "conv" / "cnn_classifier__k3keras.keras", tmp_path / "big.keras", edit)
    code, out, err = run(capsys, "verify", big)
    assert code == 3 and out == ""
    assert err.startswith(f"konverter: error: {big}: too large to run here") and err.count("\n") == 1
    assert "4.5 GiB" in err


def test_an_internal_error_in_inspect_is_one_line_with_exit_70(tmp_path, capsys, monkeypatch):
    def broken(path):
        raise AttributeError("a bug")

    monkeypatch.setattr(konverter.summary, "inspect_model", broken)
    code, _, err = run(capsys, "inspect", EXAMPLE)
    assert code == 70 and err.count("\n") == 1 and "internal error, please report it (AttributeError: a bug)" in err
