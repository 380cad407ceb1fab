"""Weights stored as "#:" base64 comment lines at the end of the generated file, read at import.

They are never compiled (the .pyc holds none of them), written a block at a time, and read back
line by line into each array's own buffer; these tests check the format, every way a module can be
loaded, and the clear errors for a damaged or cut-off file. Memory and time: scripts/bench_memory.py.
"""

from __future__ import annotations

import marshal
import runpy

import numpy as np
import pytest
from conftest import FIXTURES, import_file, load_reference

import konverter
from konverter.codegen import BLOB_LINE, END_LINE, WEIGHT_BLOCK, WEIGHTS_LINE, Generated, weight_table
from konverter.convert import CONTENT_HASH_LINE, _generate, generate_source

SEED = FIXTURES / "core" / "benchmark__k2h5.h5"  # 1.9 MB of weights


def test_weights_are_comment_lines_after_the_code_and_not_in_the_compiled_module(tmp_path):
    path = konverter.konvert(SEED, tmp_path / "m.py")
    text = path.read_text(encoding="utf-8")
    code, _, rest = text.partition(WEIGHTS_LINE + "\n")
    lines = rest.splitlines()
    # The weight lines, then the content hash of the whole file (written as it streams), then END_LINE.
    assert lines[-1] == END_LINE and lines[-2].startswith(CONTENT_HASH_LINE)
    weights = lines[:-2]
    assert weights and all(line.startswith("#:") for line in weights)
    assert all(len(line) == 2 + BLOB_LINE for line in weights[:-1]) and len(weights[-1]) <= 2 + BLOB_LINE
    compiled = len(marshal.dumps(compile(text, str(path), "exec")))
    assert compiled < 0.05 * len(text), "the weights went into the compiled code"
    module = import_file(path)
    xs, ys = load_reference(SEED.with_suffix(".npz"))
    np.testing.assert_allclose(module.predict(xs[0]), ys[0], rtol=1e-4, atol=1e-5)
    arrays = [v for v in vars(module).values() if isinstance(v, np.ndarray)]
    assert arrays and not any(a.flags.writeable for a in arrays)


def test_streamed_chunks_are_the_text_and_blocks_stay_small():
    generated, _, _ = _generate(SEED, None, None)
    chunks = list(generated.chunks())
    assert "".join(chunks) == generated.text() == generate_source(SEED)[0]
    assert max(len(c) for c in chunks[1:]) <= WEIGHT_BLOCK // 3 * 4 // BLOB_LINE * (BLOB_LINE + 3)
    assert len(chunks) > 3


@pytest.mark.parametrize("weights", ["float32", "float16"])
def test_every_array_layout_reads_back_exactly(tmp_path, weights):
    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal((700, 300)).astype(np.float32),  # spans several blocks
        np.zeros((0, 4), np.float32),  # empty, in the middle
        rng.standard_normal(5).astype(">f4"),  # big-endian input, stored little-endian
        np.array([1.0e6, -3.0], np.float32),  # does not fit float16: stays float32
        np.arange(7, dtype=np.int64),
        np.array([[True, False]]),
        np.zeros((3, 0), np.float32),  # empty, last
    ]
    table, size = weight_table(arrays, weights)
    code = f"TABLE = {table!r}\nARRAYS = read_weights(globals(), TABLE, {size})\n{WEIGHTS_LINE}\n"
    path = tmp_path / "w.py"
    path.write_text("from konverter.runtime import read_weights\n" + Generated(code, arrays, table).text())
    module = import_file(path)
    for got, want in zip(module.ARRAYS, arrays):
        assert got.shape == want.shape and not got.flags.writeable
        if weights == "float16" and want.dtype.kind == "f" and np.abs(want).max(initial=0) < 6e4:
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(got, want)


def test_every_way_of_loading_the_module_finds_its_weights(tmp_path):
    xs, ys = load_reference(SEED.with_suffix(".npz"))
    path = konverter.konvert(SEED, tmp_path / "m.py")
    in_memory = konverter.load(SEED)  # from memory: the loader's get_data
    as_script = runpy.run_path(str(path))  # like `python m.py`: no __spec__, only __file__
    crlf = tmp_path / "crlf.py"  # line ends converted, e.g. by a checkout on Windows
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    for predict in (in_memory.predict, as_script["predict"], import_file(crlf).predict):
        np.testing.assert_allclose(predict(xs[0]), ys[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda text: text[: text.index("\n#:") + 1] + END_LINE + "\n", "cut off"),
        (lambda text: text.replace("\n#:", "\n# ", 1), "cut off"),
        (lambda text: text[: text.rindex("\n#:")] + "\n" + END_LINE + "\n", "cut off"),
        (lambda text: text.replace("\n#:", "\n#:AAAA", 1), "damaged"),
        (lambda text: text.replace("\n#:", "\n#:A", 1), "damaged"),
    ],
)
def test_a_damaged_or_cut_off_file_fails_to_import_with_a_clear_error(tmp_path, damage, message):
    text = konverter.konvert(SEED, tmp_path / "m.py").read_text(encoding="utf-8")
    bad = tmp_path / "bad.py"
    bad.write_text(damage(text), encoding="utf-8")
    with pytest.raises(ImportError, match=message):
        import_file(bad)
