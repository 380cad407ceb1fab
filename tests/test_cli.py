"""The `konverter` command: convert (files and folders), inspect, verify; exit codes and JSON output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, import_file, load_reference
from test_api import EXAMPLE, EXAMPLE_REF, unsupported_copy

import konverter
from konverter.cli import main

CORE = FIXTURES / "core"
GOOD = ["dense_relu__k2h5.h5", "name_order__k3h5.h5", "phone__k3keras.keras"]


def run(capsys, *args) -> tuple[int, str, str]:
    """Run the command in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


def model_folder(tmp_path: Path, broken: bool = False) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(CORE / name, folder / name)
    if broken:
        (folder / "a_broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n but truncated")
    return folder


def statuses(summary: dict) -> dict:
    return {Path(f["source"]).name: f["status"] for f in summary["files"]}


# ----------------------------------------------------------------------------- convert, one file
def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"konverter {konverter.__version__}"


def test_convert_is_the_default_command_and_skips_when_up_to_date(tmp_path, capsys):
    model = shutil.copy(EXAMPLE, tmp_path / "model.h5")
    code, out, _ = run(capsys, model)
    assert code == 0 and "2 layers" in out
    code, out, _ = run(capsys, model)
    assert code == 0 and "up to date" in out
    code, out, _ = run(capsys, model, "--force")
    assert code == 0 and "2 layers" in out


def test_embed_check_from_the_command_line(tmp_path, capsys):
    code, out, _ = run(capsys, EXAMPLE, "-o", tmp_path / "m.py", "--embed-check", EXAMPLE_REF, "--json")
    assert code == 0
    assert json.loads(out)["converted"] == 1
    assert import_file(tmp_path / "m.py").self_check() <= 1e-5
    # Adding the check changes the settings recorded in the header: not "up to date" any more.
    code, out, _ = run(capsys, EXAMPLE, "-o", tmp_path / "m.py", "--json")
    assert statuses(json.loads(out)) == {"model.h5": "converted"}
    assert "self_check" not in (tmp_path / "m.py").read_text()


def test_embed_check_needs_a_single_file(tmp_path, capsys):
    code, _, err = run(capsys, model_folder(tmp_path), "--embed-check", EXAMPLE_REF)
    assert code == 2 and "single model file" in err


# ----------------------------------------------------------------------------- convert, folders
def test_folder_in_parallel_with_json_summary(tmp_path, capsys):
    folder = model_folder(tmp_path)
    code, out, _ = run(capsys, folder, "--jobs", "2", "--json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["total"], summary["converted"], summary["failed"]) == (3, 3, 0)
    assert [Path(f["source"]).name for f in summary["files"]] == sorted(GOOD)
    for name in GOOD:
        stem = name.rsplit(".", 1)[0]
        module = import_file(folder / f"{stem}.py")
        xs, ys = load_reference(CORE / f"{stem}.npz")
        assert_close(module.predict(*xs), ys[0], f"{name} converted by a worker process")


def test_second_run_skips_up_to_date_models(tmp_path, capsys):
    folder = model_folder(tmp_path)
    run(capsys, folder, "--json")
    code, out, _ = run(capsys, folder, "--json", "-j", "2")
    assert code == 0
    summary = json.loads(out)
    assert summary["skipped"] == 3 and summary["converted"] == 0
    # A changed model file (different bytes under the same name) is converted again.
    shutil.copy(CORE / "dense_relu__k3h5.h5", folder / "dense_relu__k2h5.h5")
    code, out, _ = run(capsys, folder, "--json")
    assert statuses(json.loads(out)) == {
        "dense_relu__k2h5.h5": "converted",
        "name_order__k3h5.h5": "skipped",
        "phone__k3keras.keras": "skipped",
    }
    code, out, _ = run(capsys, folder)
    assert code == 0 and "3 up to date" in out


def test_folder_with_a_bad_file_converts_the_rest(tmp_path, capsys):
    folder = model_folder(tmp_path, broken=True)
    code, out, _ = run(capsys, folder, "--json", "-j", "2")
    assert code == 1
    summary = json.loads(out)
    assert (summary["converted"], summary["failed"]) == (3, 1)
    bad = summary["files"][0]
    assert bad["status"] == "failed" and bad["code"] == 3 and bad["target"] is None and bad["message"]
    assert not (folder / "a_broken.py").exists()
    code, _, err = run(capsys, folder, "--force")
    assert code == 1 and "FAILED" in err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_fail_fast_stops_after_the_first_failure(tmp_path, capsys, jobs):
    folder = model_folder(tmp_path, broken=True)
    code, out, _ = run(capsys, folder, "--fail-fast", "--json", "--jobs", jobs)
    assert code == 1
    summary = json.loads(out)
    assert summary["failed"] == 1
    assert summary["converted"] + summary["not_run"] == 3
    if jobs == "1":  # in order: nothing after the broken first file starts
        assert summary["not_run"] == 3
        assert sorted(p.name for p in folder.glob("*.py")) == []


def test_empty_folder(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path)
    assert code == 1 and "no .h5/.hdf5/.keras files" in err


# ----------------------------------------------------------------------------- inspect
def test_inspect_table(capsys):
    code, out, _ = run(capsys, "inspect", EXAMPLE)
    assert code == 0
    assert "legacy HDF5 (.h5), written by Keras 2.21.0" in out
    for text in ("dense (Dense)", "(None, 16)", "(None, 4)", "32", "68", "Total params: 100", "can convert"):
        assert text in out


def test_inspect_json(capsys):
    code, out, _ = run(capsys, "inspect", CORE / "nested_sequential__k3keras.keras", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "keras" and data["keras_version"].startswith("3.")
    assert data["convertible"] is True
    assert data["total_params"] == konverter.inspect(CORE / "nested_sequential__k3keras.keras").total_params
    assert [row["depth"] for row in data["layers"]].count(1) == 4


def test_inspect_unsupported_layer(tmp_path, capsys):
    path = unsupported_copy(tmp_path)
    code, out, _ = run(capsys, "inspect", path, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["convertible"] is False
    assert [row["supported"] for row in data["layers"]] == [True, True, False, True, False, True]
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and "no: not supported" in out and "cannot convert this model" in out
    # Converting the same file names both problems in one line.
    code, _, err = run(capsys, path, "-o", tmp_path / "u.py")
    assert code == 4 and "Frobnicate" in err and "Lambda" in err and not (tmp_path / "u.py").exists()


def test_inspect_bad_file(tmp_path, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"hello")
    code, out, err = run(capsys, "inspect", junk)
    assert code == 3 and out == "" and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- verify
def test_verify_reference_pass(capsys):
    code, out, _ = run(capsys, "verify", EXAMPLE, "--reference", EXAMPLE_REF)
    assert code == 0 and "verify: ok" in out and "unbatched" in out


def test_verify_reference_fail_and_tolerance(tmp_path, capsys):
    xs, ys = load_reference(EXAMPLE_REF)
    np.savez(tmp_path / "off.npz", x0=xs[0], y0=ys[0] + np.float32(1e-3))
    code, _, err = run(capsys, "verify", EXAMPLE, "--reference", tmp_path / "off.npz")
    assert code == 6 and "DIFFERS" in err
    code, out, _ = run(capsys, "verify", EXAMPLE, "--reference", tmp_path / "off.npz", "--atol", "2e-3", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True and len(report["checks"]) == 3


def test_verify_generated_file(tmp_path, capsys):
    out_file = tmp_path / "m.py"
    run(capsys, EXAMPLE, "-o", out_file)
    code, _, _ = run(capsys, "verify", EXAMPLE, out_file, "--reference", EXAMPLE_REF)
    assert code == 0
    code, _, err = run(capsys, "verify", CORE / "dense_relu__k2h5.h5", out_file, "--reference", EXAMPLE_REF)
    assert code == 6 and "different model file" in err


def test_verify_bad_reference_and_missing_files(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    code, _, err = run(capsys, "verify", EXAMPLE, "--reference", tmp_path / "bad.npz")
    assert code == 2 and "cannot read reference data" in err
    code, _, err = run(capsys, "verify", EXAMPLE, "--reference", tmp_path / "missing.npz")
    assert code == 2 and "no such file" in err


def test_names_from_files_are_never_rich_markup(tmp_path, capsys, monkeypatch):
    def edit(config):
        config["config"]["name"] = "[red]styled[/red]"

    from test_api import edit_h5_config

    path = edit_h5_config(EXAMPLE, tmp_path / "[bold]m.h5", edit)
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and "Model [red]styled[/red] (Sequential)" in out
    (tmp_path / "[blink]broken.h5").write_bytes(b"junk")
    monkeypatch.chdir(tmp_path)  # short paths: the table is not wide enough for pytest's
    code, _, err = run(capsys, ".")
    assert code == 1 and "[blink]broken.h5" in err
