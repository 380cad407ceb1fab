"""Phones without h5py (issue 7, part 6): the reader falls back to pyfive and says so once.

The whole suite also runs with KONVERTER_FORCE_PYFIVE=1 in CI (.ci/run), so every fixture, corpus
and refusal is checked with both backends; here the real fallback (h5py not importable) is checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, import_file, load_reference

pytest.importorskip("pyfive")
ROOT = Path(__file__).resolve().parent.parent
NOTE = "reading HDF5 with pyfive"
# h5py made unimportable, as on a phone where it has no wheel.
WITHOUT_H5PY = "import sys; sys.modules['h5py'] = None; from konverter.cli import main; main()"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KONVERTER_FORCE_PYFIVE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_H5PY, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_fallback_converts_and_says_so_once(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    names = ["dense_relu__k2h5.h5", "dense_relu__k3keras.keras", "nested_sequential__k3h5.h5"]
    for name in names:
        shutil.copy(FIXTURES / "core" / name, folder / name)
    proc = _run(str(folder), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(NOTE) == 1
    for name in names:
        module = import_file((folder / name).with_suffix(".py"))
        xs, ys = load_reference(FIXTURES / "core" / Path(name).with_suffix(".npz"))
        got = module.predict(*xs)
        assert abs(got - ys[0]).max() <= 1e-5 + 1e-4 * abs(ys[0]).max()


def test_fallback_keeps_the_refusals(tmp_path):
    """A soft link in place of a weight is refused under pyfive too, as one line with exit 3."""
    import h5py

    bad = tmp_path / "soft.h5"
    shutil.copy(FIXTURES / "core" / "dense_relu__k2h5.h5", bad)
    with h5py.File(bad, "r+") as f:
        del f["model_weights/dense/dense/kernel:0"]
        f["model_weights/dense/dense/kernel:0"] = h5py.SoftLink("/model_weights/dense_1/dense_1/kernel:0")
    proc = _run(str(bad), "-o", str(tmp_path / "out.py"), cwd=tmp_path)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and NOTE in lines[0] and "links are not followed" in lines[1]
    assert not (tmp_path / "out.py").exists()
