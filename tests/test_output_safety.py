"""Never lose a file (issue 7, part 4): atomic writes, --force, folder runs with bad files, Ctrl-C.
Issue 15: colliding outputs, planted outputs, FIFOs, SIGTERM/SIGHUP, stopping parallel runs."""

from __future__ import annotations

import json
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
from konverter.convert import file_hash, is_intact, read_header
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


def _stop_line(name: str) -> list:
    return ["konverter: " + ("interrupted" if name == "SIGINT" else f"stopped by {name}")]


def _stop_a_run(tmp_path: Path, signum: int, *options: str) -> tuple:
    """Convert a folder of 200 models; once the first output exists, send `signum` to the whole process group
    (as a terminal does for Ctrl-C or when it closes). Returns (process, stderr, seconds to exit, folder)."""
    folder = tmp_path / "models"
    folder.mkdir()
    source = FIXTURES / "core" / "benchmark__k3keras.keras"  # the largest core model: each takes a while
    for i in range(200):
        shutil.copy(source, folder / f"m{i:03d}.keras")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "konverter", str(folder), *options],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120  # a hang guard only
        while not list(folder.glob("*.py")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        sent = time.monotonic()
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
        return proc, err, time.monotonic() - sent, folder
    finally:
        if proc.poll() is None:
            proc.kill()


def test_interrupt_mid_folder_run_leaves_no_partial_files(tmp_path):
    proc, err, _, folder = _stop_a_run(tmp_path, signal.SIGINT, "-q")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "konverter: interrupted"
    assert _temp_files(tmp_path) == []
    written = sorted(folder.glob("*.py"))
    assert 0 < len(written) < 200
    for path in written:  # every output present is complete
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
        assert path.read_text(encoding="utf-8").endswith(END_LINE + "\n")


# ----------------------------------------------------------------------------- issue 15: colliding outputs
def _summary(proc: subprocess.CompletedProcess) -> dict:
    return {Path(f["source"]).name: f for f in json.loads(proc.stdout)["files"]}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_distinct_models_never_share_an_output(tmp_path, jobs):
    folder = tmp_path / "models"
    folder.mkdir()
    sources = {
        "m.h5": FIXTURES / "core" / "dense_relu__k2h5.h5",
        "m.H5": FIXTURES / "core" / "name_order__k3h5.h5",
        "m.keras": FIXTURES / "core" / "phone__k3keras.keras",
        "m_keras.keras": GOOD,
        "n.h5": GOOD_H5,
        "n.keras": GOOD,
    }
    for name, source in sources.items():
        shutil.copy(source, folder / name)
    proc = _cli(str(folder), "--json", "-j", jobs, cwd=tmp_path)
    files = _summary(proc)
    assert len(files) == 6
    converted = {name: f for name, f in files.items() if f["status"] == "converted"}
    # Every output reported as converted exists and comes from that model (nothing overwrote it) ...
    for name, f in converted.items():
        assert read_header(f["target"])["source_sha256"] == file_hash(folder / name), name
    assert len({f["target"].casefold() for f in converted.values()}) == len(converted)
    assert {Path(f["target"]).name for f in converted.values()} == {"m_keras.py", "n_h5.py", "n_keras.py"}
    # ... and the others are refused, saying why, in one line each on stderr.
    for name in ("m.h5", "m.H5", "m.keras"):
        assert files[name]["status"] == "failed" and "would also be the output of" in files[name]["message"]
    assert proc.returncode == 1 and proc.stderr.count("FAILED") == 3


# ----------------------------------------------------------------------------- issue 15: planted outputs
def _plant(target: Path, marker: Path) -> None:
    """Someone else's m.py with a Konverter header copied from a real output: importing it runs its code."""
    header = target.read_text(encoding="utf-8").split("\nimport ", 1)[0]
    target.write_text(f"{header}\nopen({str(marker)!r}, 'w').write('ran')\nfrom numpy import *\n", encoding="utf-8")


def test_a_planted_output_with_a_copied_header_is_never_up_to_date(tmp_path):
    model = shutil.copy(GOOD_H5, tmp_path / "m.h5")
    assert _cli(str(model), cwd=tmp_path).returncode == 0
    marker = tmp_path / "planted-code-ran"
    _plant(tmp_path / "m.py", marker)
    proc = _cli(str(model), "--json", cwd=tmp_path)
    assert proc.returncode == 0 and _summary(proc)["m.h5"]["status"] == "converted"
    assert "planted-code-ran" not in (tmp_path / "m.py").read_text()
    import_file(tmp_path / "m.py")
    assert not marker.exists()
    # Any edit, even of one weight character, makes the file no longer Konverter's.
    text = (tmp_path / "m.py").read_text()
    at = text.index("\n#:") + 20  # a character of the stored weights
    (tmp_path / "m.py").write_text(text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :])
    assert _summary(_cli(str(model), "--json", cwd=tmp_path))["m.h5"]["status"] == "converted"
    assert _summary(_cli(str(model), "--json", cwd=tmp_path))["m.h5"]["status"] == "skipped"


def test_verify_never_imports_a_planted_file(tmp_path):
    model = shutil.copy(GOOD_H5, tmp_path / "m.h5")
    konverter.konvert(model)
    marker = tmp_path / "planted-code-ran"
    _plant(tmp_path / "m.py", marker)
    proc = _cli(
        "verify",
        str(model),
        str(tmp_path / "m.py"),
        "--reference",
        str(FIXTURES / "core/dense_relu__k2h5.npz"),
        cwd=tmp_path,
    )
    assert proc.returncode == 6 and "changed after Konverter wrote it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()


# ----------------------------------------------------------------------------- issue 15: FIFOs and other non-files
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")


def _cli_bounded(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Like _cli, but a run that blocks on a FIFO fails the test instead of hanging it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        return subprocess.run(
            [sys.executable, "-m", "konverter", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"konverter {' '.join(args)} blocked")


@needs_fifo
def test_fifo_inputs_and_outputs_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.h5")
    os.mkfifo(tmp_path / "pipe.py")
    os.mkfifo(tmp_path / "pipe.npz")
    cases = [
        (["pipe.h5"], 2, "not a regular file"),
        (["inspect", "pipe.h5"], 2, "not a regular file"),
        (["verify", "pipe.h5"], 2, "not a regular file"),
        ([str(GOOD_H5), "-o", "pipe.py"], 5, "not a regular file"),
        ([str(GOOD_H5), "-o", "m.py", "--embed-check", "pipe.npz"], 2, "not a regular file"),
        (["verify", str(GOOD_H5), "--reference", "pipe.npz"], 2, "not a regular file"),
        (["verify", str(GOOD_H5), "pipe.py"], 2, "not a regular file"),
    ]
    for args, code, message in cases:
        proc = _cli_bounded(*args, cwd=tmp_path)
        assert proc.returncode == code and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    # The Python API, in a separate process too: a call that blocked would hang the test run.
    api = f"""
import konverter
for call, args in [(konverter.konvert, ["pipe.h5"]), (konverter.load, ["pipe.h5"]), (konverter.inspect, ["pipe.h5"]),
                   (konverter.verify, ["pipe.h5"]), (konverter.konvert, [{str(GOOD_H5)!r}, "pipe.py"])]:
    try:
        call(*args)
    except konverter.KonverterError as err:
        print(type(err).__name__, err.exit_code, "not a regular file" in str(err))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run(
            [sys.executable, "-c", api], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the Python API blocked on a FIFO")
    assert done.stdout.splitlines() == ["UsageError 2 True"] * 4 + ["OutputError 5 True"], done.stderr


@needs_fifo
def test_a_folder_run_skips_fifos_and_never_writes_into_one(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    os.mkfifo(folder / "pipe.h5")  # named like a model: not a model file
    shutil.copy(GOOD_H5, folder / "a.h5")
    shutil.copy(GOOD_H5, folder / "b.h5")
    os.mkfifo(folder / "b.py")  # where b.h5's output would go
    proc = _cli_bounded(str(folder), "--json", "-j", "2", cwd=tmp_path)
    files = _summary(proc)
    assert sorted(files) == ["a.h5", "b.h5"] and files["a.h5"]["status"] == "converted"
    assert files["b.h5"]["status"] == "failed" and files["b.h5"]["code"] == 5
    assert proc.returncode == 1


# ----------------------------------------------------------------------------- issue 15: signals
_SIGNAL_DURING_WRITE = """
import os, signal, sys
import konverter.convert
from konverter.cli import main

real_replace = os.replace

def replace_after_a_signal(src, dst):  # the temporary file is written, not yet renamed into place
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    real_replace(src, dst)

konverter.convert.os.replace = replace_after_a_signal
main(sys.argv[2:])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_stop_signal_during_the_write_leaves_no_temporary_file(tmp_path, name, code):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_WRITE, name, str(GOOD_H5), "-o", str(tmp_path / "m.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines() == _stop_line(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _group_is_gone(pgid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_stopping_a_parallel_run_ends_every_worker_at_once(tmp_path, name, code):
    proc, err, seconds, folder = _stop_a_run(tmp_path, getattr(signal, name), "-j", "2")
    assert proc.returncode == code, err
    assert err.strip().splitlines() == _stop_line(name)
    assert seconds < 10  # the old pool converted on for many seconds (the rest of the folder)
    assert _group_is_gone(proc.pid)  # no worker left converting
    written = sorted(folder.glob("*.py"))
    assert 0 < len(written) < 50 and _temp_files(tmp_path) == []
    for path in written:  # every output present is complete and Konverter's
        assert is_intact(path), path
