"""Hostile inputs for the reader, second round (issue 15): crashes, memory, time, layouts, false refusals.

Files come from scripts/make_hostile2.py (built at test time) and the fuzzer's regression corpus in
tests/fixtures/hostile/fuzz/ (mutants on which libhdf5 itself crashes with SIGSEGV). Memory is measured
in a subprocess under an address-space limit (RLIMIT_AS): its own peak RSS and its reader process's.
CI runs this module with h5py and again with pyfive (KONVERTER_FORCE_PYFIVE=1).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, import_file

import konverter
from konverter import KonverterError
from konverter.errors import BadModelFile, UnsupportedModel
from konverter.h5reader import hdf5, isolate, rawcheck, read_here, read_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import fuzz_reader  # noqa: E402
import make_hostile2 as hostile  # noqa: E402

CORPUS = sorted((FIXTURES / "hostile" / "fuzz").glob("*.h5"))
PYFIVE = hdf5.BACKEND == "pyfive"
MIB = 1 << 20
posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="measured with fork and RLIMIT_AS (POSIX)")

# Runs in a subprocess: limits its address space, reads (or converts) one file, reports JSON.
MEASURE = r"""
import json, os, resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
import konverter
from konverter.h5reader import isolate, read_model
def mapped():
    return int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
config = json.loads(sys.argv[3])
for name, value in config.get("isolate", {}).items():
    setattr(isolate, name, value)
resource.setrlimit(resource.RLIMIT_AS, (mapped() + config["limit"], resource.RLIM_INFINITY))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
result = {}
try:
    if config.get("convert"):
        konverter.konvert(sys.argv[2], config["convert"])
    else:
        model = read_model(sys.argv[2])
        result["arrays"] = sum(len(a) for a in model.weights.values())
        result["distinct"] = len({id(a) for arrays in model.weights.values() for a in arrays})
    result["outcome"] = "read"
except konverter.KonverterError as err:
    result.update(outcome=type(err).__name__, code=err.exit_code, message=str(err))
except MemoryError:
    result["outcome"] = "MemoryError"
result["seconds"] = time.perf_counter() - start
for thread in threading.enumerate():  # the reader process is reaped in the background: wait for it
    if thread.name == "konverter-reader-reaper":
        thread.join()
result["base"] = base
result["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result["child_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(result))
"""


def measure(path: Path, limit: int = 1536 * MIB, **config) -> dict:
    """Read `path` in a fresh process allowed `limit` bytes more address space; what happened, and its peaks
    (bytes above what the process held before reading; the reader process's peak counts from the same base)."""
    config["limit"] = limit
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ROOT), str(path), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["grew"] = result["peak"] - result["base"]
    result["child_grew"] = max(0, result["child_peak"] - result["base"])
    return result


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "konverter", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
    )


def one_line(err: Exception) -> None:
    message = str(err)
    assert message and "\n" not in message and len(message) < 500, message


# ----------------------------------------------------------------------------- 0. crashes
def test_corpus_is_there():
    assert len(CORPUS) >= 8


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_fuzzed_files_that_crash_libhdf5_fail_cleanly(path):
    """Each of these makes libhdf5 segfault when read in-process; through the reader process: one line, exit 3."""
    try:
        read_model(path)
    except KonverterError as err:
        assert err.exit_code in ((3, 4) if PYFIVE else (3,))
        one_line(err)
        if not PYFIVE:
            assert "crashed" in str(err) or "damaged" in str(err)


@pytest.mark.skipif(PYFIVE, reason="libhdf5 crashes; pyfive does not")
def test_the_corpus_still_crashes_libhdf5_in_process():
    """The corpus keeps its value only while libhdf5 still crashes on it (a newer libhdf5 may not)."""
    code = "import sys; from konverter.h5reader import read_here; read_here(sys.argv[1])"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    crashed = 0
    for path in CORPUS[:3]:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, env=env, timeout=120)
        crashed += proc.returncode == -signal.SIGSEGV
    if not crashed:
        pytest.skip("this libhdf5 no longer crashes on the corpus")
    assert crashed >= 1


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_folder_goes_on_after_a_file_that_crashes_libhdf5(tmp_path, jobs):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("dense_relu__k2h5.h5", "dense_relu__k3keras.keras"):
        (folder / name).write_bytes((FIXTURES / "core" / name).read_bytes())
    (folder / "crash.h5").write_bytes(CORPUS[0].read_bytes())
    proc = cli(str(folder), "--json", "-j", jobs, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    status = {Path(f["source"]).name: (f["status"], f["code"]) for f in summary["files"]}
    assert status["dense_relu__k2h5.h5"] == ("converted", 0)
    assert status["dense_relu__k3keras.keras"] == ("converted", 0)
    assert status["crash.h5"] in ({("failed", 3), ("failed", 4), ("converted", 0)} if PYFIVE else {("failed", 3)})


def test_single_file_and_inspect_give_one_line_and_exit_3(tmp_path):
    if PYFIVE:
        pytest.skip("pyfive reads these mutants without crashing")
    for command in ([str(CORPUS[0]), "-o", str(tmp_path / "out.py")], ["inspect", str(CORPUS[0])]):
        proc = cli(*command, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 3 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "out.py").exists()


def _crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(*args, **kwargs):
    while True:
        time.sleep(1)


def _hog(*args, **kwargs):
    hog = []
    while True:
        hog.append(np.ones(MIB // 8))


def _bug(*args, **kwargs):
    raise SystemError("a bug in the reader")


@posix_only
@pytest.mark.parametrize("failure", ["crash", "hang", "hog", "bug"])
def test_the_reader_process_contains_every_failure(monkeypatch, failure):
    """Whatever the reading does in the reader process (here made to fail on purpose), this process
    survives: a crash or a stall is one BadModelFile, running out of its memory allowance too, and a bug
    in the reader is an internal error carrying the reader's traceback."""
    import konverter.h5reader as reader

    monkeypatch.setattr(reader, "load", {"crash": _crash, "hang": _hang, "hog": _hog, "bug": _bug}[failure])
    monkeypatch.setattr(isolate, "STALL_SECONDS", 2.0)
    monkeypatch.setattr(isolate, "BASE_ALLOWANCE", 64 * MIB)
    path = FIXTURES / "core" / "dense_relu__k2h5.h5"
    if failure == "bug":
        with pytest.raises(isolate.ReaderError, match="a bug in the reader") as info:
            read_model(path)
        assert "Traceback" in info.value.__notes__[0]
        return
    with pytest.raises(BadModelFile) as info:
        read_model(path)
    expected = {"crash": "crashed reading it (SIGSEGV)", "hang": "no progress", "hog": "more than the"}[failure]
    assert expected in str(info.value)


def test_spawned_reader_process_works(tmp_path):
    """Where fork is not used (Windows, macOS) the reader is `python -m konverter.h5reader.isolate`."""
    good = cli(
        str(FIXTURES / "core" / "dense_relu__k3keras.keras"),
        "-o",
        str(tmp_path / "m.py"),
        cwd=tmp_path,
        env={"KONVERTER_READER": "spawn"},
    )
    assert good.returncode == 0, good.stderr
    bad = cli(str(CORPUS[0]), "-o", str(tmp_path / "bad.py"), cwd=tmp_path, env={"KONVERTER_READER": "spawn"})
    assert bad.returncode in ((0, 3, 4) if PYFIVE else (3,)) and "Traceback" not in bad.stderr, bad.stderr


def test_isolated_reading_gives_the_same_model_and_costs_little():
    path = FIXTURES / "recurrent" / "text_classifier__k2h5.h5"
    here, there = read_here(path), read_model(path)
    assert there.config == here.config and there.weight_names == here.weight_names
    for key, arrays in here.weights.items():
        for a, b in zip(arrays, there.weights[key]):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)

    def best(read, n=7):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            read(path)
            times.append(time.perf_counter() - start)
        return min(times)

    overhead = best(read_model) - best(read_here)
    print(f"reader process overhead: {overhead * 1000:.1f} ms")
    assert overhead < 0.15  # ~5-15 ms measured with fork; a generous bound for busy CI machines


@posix_only
def test_fuzzer_finds_nothing(tmp_path):
    """A bounded fuzzing run (CI): every mutant reads or fails cleanly through the reader process."""
    sources = [fuzz_reader.SOURCES[name] for name in ("batchnorm", "lstm", "keras")]
    assert fuzz_reader.fuzz(sources, cases=90, seed=20260501) == []


def test_fuzzer_is_deterministic():
    source = fuzz_reader.SOURCES["lstm"]
    assert fuzz_reader.mutant(source, 3, 412) == fuzz_reader.mutant(source, 3, 412)
    assert fuzz_reader.mutant(source, 3, 412) != fuzz_reader.mutant(source, 3, 413)


# ----------------------------------------------------------------------------- 3. memory
@posix_only
@pytest.mark.parametrize("build", ["repeated_weight_names", "hard_links_h5", "hard_links_keras"])
def test_a_weight_reached_many_times_is_read_once(tmp_path, build):
    """20,000 names or hard links for one 1 MiB weight: read once (it took 20 GB), shared by reference."""
    path = getattr(hostile, build)(tmp_path / f"m{'.keras' if 'keras' in build else '.h5'}")
    result = measure(path)
    assert result["outcome"] == "read", result
    assert result["arrays"] > 20_000 - 10 and result["distinct"] <= 4
    assert result["grew"] < 64 * MIB and result["child_grew"] < 128 * MIB, result


@posix_only
def test_declared_but_unwritten_weights_are_refused_before_reading(tmp_path):
    result = measure(hostile.unwritten_weights(tmp_path / "m.h5"))
    assert result["outcome"] == "BadModelFile" and result["code"] == 3, result
    assert "declare 5.9 GiB" in result["message"] and "stores only" in result["message"]
    assert result["grew"] < 64 * MIB and result["child_grew"] < 128 * MIB, result


@posix_only
def test_one_element_chunks_read_in_bounded_memory(tmp_path):
    """A 1 MiB weight in 262,144 one-element chunks (libhdf5 took 1 GB reading it in one go)."""
    path, values = hostile.one_element_chunks(tmp_path / "m.h5", side=512, libver="earliest" if PYFIVE else "latest")
    result = measure(path)
    assert result["outcome"] == "read", result
    bound = (300 if PYFIVE else 64) * MIB  # pyfive indexes every chunk in Python objects
    assert result["grew"] < 64 * MIB and result["child_grew"] < bound, result
    kernel = read_model(path).weights[("dense",)][0]
    assert np.array_equal(kernel, values[hostile.KERNEL])


@posix_only
def test_vlen_attribute_in_a_shared_heap_stops_at_the_allowance(tmp_path):
    """20,000 names that are one 1 MiB heap object: 20 GB once read; the reader process stops at its allowance."""
    path = hostile.vlen_shared_heap(tmp_path / "m.h5")
    result = measure(path, isolate={"BASE_ALLOWANCE": 96 * MIB})
    assert result["outcome"] == "BadModelFile" and result["code"] == 3, result
    assert "memory" in result["message"]
    assert result["grew"] < 64 * MIB and result["child_grew"] < 256 * MIB, result


@posix_only
def test_amplified_config_is_refused_before_parsing(tmp_path):
    path = hostile.amplified_config(tmp_path / "m.keras")  # 64 MiB of JSON, 90x compressed (parsed: >1 GB)
    result = measure(path)
    assert result["outcome"] == "BadModelFile" and "config.json" in result["message"], result
    assert result["grew"] < 64 * MIB and result["child_grew"] < 64 * MIB, result


@posix_only
def test_inflating_weights_member(tmp_path):
    """A weights member inflating 190x is a zip bomb; one inflating 40x is read with the weights once in memory."""
    bomb = measure(hostile.inflating_weights(tmp_path / "bomb.keras", mib=64, ratio=190))
    assert bomb["outcome"] == "BadModelFile" and "would inflate" in bomb["message"], bomb
    fine = measure(hostile.inflating_weights(tmp_path / "fine.keras", mib=64, ratio=40))
    assert fine["outcome"] == "read", fine
    # The 64 MiB padding dataset is not a weight: nothing of it is held; the member goes to disk, not memory.
    assert fine["grew"] < 32 * MIB and fine["child_grew"] < 48 * MIB, fine


@pytest.fixture(scope="module")
def gzip_99x(tmp_path_factory) -> Path:
    return hostile.gzip_weight(tmp_path_factory.mktemp("gzip") / "m.h5", mib=64, ratio=99)


@posix_only
def test_compressed_weight_costs_its_size_once(gzip_99x):
    """A 64 MiB weight stored gzip-compressed 99x (just under the bound) costs 64 MiB here, pieces there."""
    result = measure(gzip_99x)
    assert result["outcome"] == "read", result
    assert result["grew"] < 64 * MIB + 24 * MIB, result
    assert result["child_grew"] < (96 if PYFIVE else 48) * MIB, result


@posix_only
def test_more_than_the_machine_can_give_is_a_clean_refusal(gzip_99x, tmp_path):
    """Under a 48 MiB allowance the 64 MiB weight is refused before anything is allocated: exit 3, with figures."""
    path = gzip_99x
    result = measure(path, limit=48 * MIB)
    assert result["outcome"] == "BadModelFile" and result["code"] == 3, result
    assert "needs 64.3 MiB of memory, more than the" in result["message"], result
    converted = measure(path, limit=48 * MIB, convert=str(tmp_path / "out.py"))
    assert converted["outcome"] == "BadModelFile" and converted["code"] == 3, converted


def test_expansion_bound_is_for_the_whole_model(tmp_path):
    """Many small fill-value weights add up: the bound is on their sum, not on each."""
    path = hostile.unwritten_weights(tmp_path / "m.h5", count=40)  # 40 MiB declared, nothing stored
    with pytest.raises(BadModelFile, match="fill-value bomb"):
        read_model(path)
    small = hostile.unwritten_weights(tmp_path / "small.h5", count=4)  # 4 MiB: within the allowance
    assert len(read_model(small).weights[("dense",)]) == 4


def test_group_linked_twice_in_keras_archive_is_refused(tmp_path):
    """Hard links make a DAG of groups whose walk doubles per level (2^40 visits here)."""
    path = hostile.keras_group_dag(tmp_path / "m.keras", depth=40)
    start = time.perf_counter()
    with pytest.raises(BadModelFile, match="linked more than once"):
        read_model(path)
    assert time.perf_counter() - start < 10


# ----------------------------------------------------------------------------- 2. time
def test_global_heap_check_is_linear(tmp_path):
    """Overlapping heap collections: checking 10x the bytes takes about 10x the time (it was quadratic)."""
    small = hostile.heap_collections(tmp_path / "small.h5", region=100_000)
    large = hostile.heap_collections(tmp_path / "large.h5", region=1_000_000)

    def seconds(path):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            rawcheck.check_file(path, "the file")
            best = min(best, time.perf_counter() - start)
        return best

    t_small, t_large = seconds(small), seconds(large)
    assert t_large < 5, t_large
    assert t_large < 25 * t_small + 0.05, (t_small, t_large)  # linear: ~10x; quadratic: ~100x
    assert read_model(large).weights  # and the model itself is read


def _collection(objects: bytes, size: int | None = None) -> bytes:
    body = b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", size or 16 + len(objects)) + objects
    return body


def _objects(*items) -> bytes:
    return b"".join(
        struct.pack("<HHIQ", index, 1, 0, size) + bytes((size + 7) & ~7 if index else 0) for index, size in items
    )


@pytest.mark.parametrize(
    "objects, loops",
    [
        (_objects((1, 5), (2, 16)), False),
        (_objects((1, 5)) + bytes(8), False),  # an 8-byte remainder: free space, not an object
        (_objects((1, 5), (0, 32)) + bytes(16), False),  # the free-space object takes the rest exactly
        (_objects((1, 5), (0, 0)), True),  # a free-space object of size 0: libhdf5 never moves on
        (_objects((1, 5)) + struct.pack("<HHIQ", 3, 1, 0, (1 << 64) - 16), True),  # 16 + size wraps to 0
        (_objects((1, 5)) + struct.pack("<HHIQ", 0, 1, 0, (1 << 64) - 32), True),  # goes backwards
        (_objects((1, 5)) + struct.pack("<HHIQ", 2, 1, 0, 1 << 40), False),  # past the end: libhdf5 stops
    ],
)
def test_heap_walk_refuses_exactly_the_endless_loop(objects, loops):
    raw = bytes(100) + _collection(objects) + bytes(50)
    found = rawcheck._endless_heap_object(raw, 0, len(raw), 8)
    assert (found is not None) == loops


def test_collection_past_the_end_is_not_walked():
    """libhdf5 reads a collection whole; one running past the end is an error there, never a loop."""
    raw = bytes(100) + _collection(_objects((0, 0)), size=1 << 30)
    assert rawcheck._endless_heap_object(raw, 0, len(raw), 8) is None


# ----------------------------------------------------------------------------- 5. false refusals
def _predicts_like_the_original(path: Path, tmp_path: Path) -> None:
    module = import_file(konverter.konvert(path, tmp_path / (path.stem + "_out.py")))
    data = np.load(FIXTURES / "core" / "dense_relu__k2h5.npz")
    got = module.predict(data["x0"])
    assert np.allclose(got, data["y0"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("userblock", [512, 4096])
def test_user_block_h5_converts(tmp_path, userblock):
    """With a user block every address moves (the global heap to byte 6144): a valid file all the same."""
    path = hostile.with_userblock(hostile.BASE_H5, tmp_path / "ub.h5", userblock)
    _predicts_like_the_original(path, tmp_path)


def test_user_block_inside_keras_converts(tmp_path):
    path = hostile.keras_with_userblock(tmp_path / "ub.keras")
    model = read_model(path)
    reference = read_model(hostile.BASE_KERAS)
    for key, arrays in reference.weights.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, model.weights[key]))


def test_weight_bytes_that_look_like_a_heap_are_data(tmp_path):
    path = hostile.heap_lookalike_weights(tmp_path / "m.h5")
    kernel = read_model(path).weights[("dense",)][0]
    assert kernel.tobytes()[64:68] == b"GCOL"


# ----------------------------------------------------------------------------- 1. storage layouts
PYFIVE_CANNOT = {"lzf": "LZF", "scaleoffset": "filter 6", "latest_format_chunked": "pyfive cannot read"}


@pytest.mark.parametrize("name", sorted(hostile.LAYOUTS))
def test_storage_layout_reads_the_stored_numbers(tmp_path, name):
    """Each way HDF5 stores a dataset gives back exactly the numbers h5py reads (and a working model)."""
    path = tmp_path / f"{name}.h5"
    stored, values = hostile.layout(path, name)
    if PYFIVE and name in PYFIVE_CANNOT and not (name == "lzf" and _has_lzf()):
        with pytest.raises(UnsupportedModel, match=PYFIVE_CANNOT[name]):
            read_model(path)
        return
    kernel = read_model(path).weights[("dense",)][0]
    assert kernel.dtype == stored.dtype and kernel.shape == stored.shape
    assert np.array_equal(kernel, stored)
    module = import_file(konverter.konvert(path, tmp_path / "out.py"))
    x = np.random.default_rng(1).standard_normal((5, 8)).astype("f4")
    hidden = np.maximum(x @ stored.astype("f4") + values[hostile.BIAS], 0)
    expected = (
        hidden @ values["model_weights/dense_1/dense_1/kernel:0"] + values["model_weights/dense_1/dense_1/bias:0"]
    )
    assert np.allclose(module.predict(x), expected, atol=1e-4, rtol=1e-4)


def _has_lzf() -> bool:
    try:
        import lzf  # noqa: F401  (pyfive-mode reads LZF with python-lzf installed)
    except ImportError:
        return False
    return True


def test_layouts_cover_the_issue():
    names = set(hostile.LAYOUTS)
    for kind in (
        "contiguous",
        "compact",
        "chunked_one_element",
        "gzip",
        "shuffle",
        "fletcher32",
        "lzf",
        "scaleoffset",
        "fill",
    ):
        assert any(kind in n for n in names), kind


def test_damaged_fletcher32_chunk_is_refused(tmp_path):
    import h5py

    path = tmp_path / "m.h5"
    hostile.layout(path, "fletcher32")
    raw = bytearray(path.read_bytes())
    with h5py.File(path, "r") as f:
        offset = f[hostile.KERNEL].id.get_chunk_info(0).byte_offset
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BadModelFile):
        read_model(path)


def test_bfloat16_weight_is_read_as_float32(tmp_path):
    """Keras stores bfloat16 as 16-bit words tagged dtype="bfloat16": they are the high halves of float32."""

    def kernel(group, name, values):
        words = (values.view(np.uint32) >> 16).astype(np.uint16)
        group.create_dataset(name, data=words).attrs["dtype"] = "bfloat16"

    values = hostile.dense_model(tmp_path / "m.h5", kernel=kernel)
    read = read_model(tmp_path / "m.h5").weights[("dense",)][0]
    expected = ((values[hostile.KERNEL].view(np.uint32) >> 16) << 16).view(np.float32)
    assert read.dtype == np.float32 and np.array_equal(read, expected)
