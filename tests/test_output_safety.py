"""Never lose a file (issue 7, part 4): atomic writes, --force, folder runs with bad files, Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, import_file

import konverter
from konverter import KonverterError
from konverter.codegen import END_LINE, MARKER
from konverter.errors import OutputError

ROOT = Path(__file__).resolve().parent.parent
GOOD = FIXTURES / "core" / "dense_relu__k3keras.keras"
GOOD_H5 = FIXTURES / "core" / "dense_relu__k2h5.h5"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "konverter", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def _bad_files(folder: Path) -> list:
    """Three broken model files: empty, truncated, and a Lambda layer."""
    (folder / "empty.h5").write_bytes(b"")
    (folder / "truncated.keras").write_bytes(GOOD.read_bytes()[:500])
    blob = GOOD_H5.read_bytes().replace(b'"class_name": "Dense"', b'"class_name": "Lambda"', 1)
    (folder / "lambda.h5").write_bytes(blob)
    return [folder / "empty.h5", folder / "truncated.keras", folder / "lambda.h5"]


def _temp_files(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_failed_conversion_leaves_previous_output_untouched(tmp_path):
    out = konverter.konvert(GOOD, tmp_path / "model.py")
    before = out.read_bytes()
    broken = tmp_path / "broken.keras"
    broken.write_bytes(GOOD.read_bytes()[:-200])
    for force in (False, True):
        with pytest.raises(KonverterError):
            konverter.konvert(broken, out, force=force)
        assert out.read_bytes() == before
    assert _temp_files(tmp_path) == []


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = konverter.konvert(GOOD, tmp_path / "model.py")
    before = out.read_bytes()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError) as info:
        konverter.konvert(GOOD_H5, out)
    assert info.value.exit_code == 5 and "Permission denied" in str(info.value)
    assert out.read_bytes() == before and _temp_files(tmp_path) == []

    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        konverter.konvert(GOOD_H5, out)
    assert out.read_bytes() == before and _temp_files(tmp_path) == []


def test_foreign_file_needs_force(tmp_path):
    mine = tmp_path / "model.py"
    mine.write_text("print('my own code')\n")
    with pytest.raises(OutputError) as info:
        konverter.konvert(GOOD, mine)
    assert info.value.exit_code == 5 and "--force" in str(info.value)
    assert mine.read_text() == "print('my own code')\n"

    proc = _cli(str(GOOD), "-o", str(mine), cwd=tmp_path)
    assert proc.returncode == 5 and proc.stderr.count("\n") == 1 and "--force" in proc.stderr
    assert mine.read_text() == "print('my own code')\n"

    mine.write_text(f"print('mentions {MARKER} but is mine')\n")
    with pytest.raises(OutputError):
        konverter.konvert(GOOD, mine)

    proc = _cli(str(GOOD), "-o", str(mine), "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert MARKER in mine.read_text()
    # Konverter's own output is replaced without --force.
    assert _cli(str(GOOD_H5), "-o", str(mine), cwd=tmp_path).returncode == 0


def test_folder_run_finishes_when_half_the_files_are_bad(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    good = []
    for name in ("a.keras", "b.h5", "c.h5"):
        good.append(folder / name)
        shutil.copy(GOOD if name.endswith(".keras") else GOOD_H5, good[-1])
    bad = _bad_files(folder)
    proc = _cli(str(folder), cwd=tmp_path)
    assert proc.returncode == 1
    assert "6 files: 3 converted, 3 failed" in proc.stderr
    assert proc.stderr.count("FAILED") == 3 and "Traceback" not in proc.stderr
    for path in good:
        import_file(path.with_suffix(".py"))
    for path in bad:
        assert not path.with_suffix(".py").exists()
    assert _temp_files(tmp_path) == []


def test_interrupt_mid_folder_run_leaves_no_partial_files(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    source = FIXTURES / "core" / "benchmark__k3keras.keras"  # the largest core model: each takes a while
    for i in range(200):
        shutil.copy(source, folder / f"m{i:03d}.keras")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "konverter", str(folder), "-q"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # a hang guard only
        while not list(folder.glob("*.py")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "konverter: interrupted"
    assert _temp_files(tmp_path) == []
    written = sorted(folder.glob("*.py"))
    assert 0 < len(written) < 200
    for path in written:  # every output present is complete
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
        assert path.read_text(encoding="utf-8").endswith(END_LINE + "\n")
