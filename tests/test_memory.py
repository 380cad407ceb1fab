"""Memory of converting and importing (issue 13): the model is never held twice while converting,
and a `--weights float16` file keeps its large weights float16 in memory, widening each at the call
that uses it, with the very same results as widening them all at import.

The figures for a 210 MB model (peak RSS in fresh processes) come from scripts/bench_memory.py;
these tests check the mechanisms with small models and tracemalloc (which sees NumPy's buffers).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, import_file, load_reference

import konverter
from konverter import codegen
from konverter.graph import ModelInput, Program
from konverter.layers import core
from konverter.layers.base import Const, Op, Tensor
from konverter.rewrites import optimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_memory import write_dense_model, write_model  # noqa: E402  (Keras 2 HDF5 layout with h5py only)

rng = np.random.default_rng(13)


def weights(*shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def test_the_dense_chain_lets_each_original_kernel_and_bias_go():
    x, h, y = Tensor((6,)), Tensor((5,)), Tensor((3,))
    originals = [weights(6, 5), weights(5), weights(5, 3), weights(3)]
    data = weights(4, 6)
    k1, b1, k2, b2 = originals
    expected = np.maximum(data @ k1 + b1, 0.0) @ k2 + b2
    ops = [
        Op(core.dense_relu, (x, Const(k1), Const(b1)), {}, (h,)),
        Op(core.dense, (h, Const(k2), Const(b2)), {}, (y,)),
    ]
    program = Program("test", [ModelInput("x", x)], [y], ["y"], False, ops, len(ops))
    gone = [weakref.ref(a) for a in originals]
    del originals, k1, b1, k2, b2
    optimized, chain = optimize(program)
    gc.collect()
    assert chain is not None and len(chain.steps) == 2
    # Held by nothing now: not by the chain, not by the program the caller still has.
    assert [ref() for ref in gone] == [None] * 4
    # The caller's program still computes the same: its Consts are rows of the augmented kernels.
    k1, b1 = (a.array for a in ops[0].args[1:])
    k2, b2 = (a.array for a in ops[1].args[1:])
    assert k1.base is b1.base is chain.steps[0].kernel.array
    np.testing.assert_array_equal(np.maximum(data @ k1 + b1, 0.0) @ k2 + b2, expected)


def test_converting_a_dense_model_holds_its_weights_about_once(tmp_path):
    model = tmp_path / "dense.h5"
    weight_bytes = write_dense_model(model, (1024,) * 6 + (10,))  # 21 MB of float32
    gc.collect()
    tracemalloc.start()
    try:
        konverter.konvert(model, tmp_path / "dense.py")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Weights + one layer's augmented kernel (4 MB) + write buffers (~3 MB); 2.5x before (originals and
    # augmented kernels both alive).
    assert peak < 1.6 * weight_bytes, f"converting peaked at {peak / weight_bytes:.2f}x the weights"


# ----------------------------------------------------------------------------- float16 weights kept narrow
def convert(model: Path, out: Path, weights: str = "float16", narrow_bytes: int = codegen.NARROW_BYTES):
    """Convert and import; `narrow_bytes` above every weight's size: all widened at import (as before)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codegen, "NARROW_BYTES", narrow_bytes)
        return import_file(konverter.konvert(model, out, options={"weights": weights}))


def same_bits(got, want, what: str) -> None:
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape, what
    assert got.tobytes() == want.tobytes(), f"{what}: differs from widening at import"


def kept_narrow(module) -> list:
    return sorted(name for name, v in vars(module).items() if isinstance(v, np.ndarray) and v.dtype == np.float16)


def test_a_large_dense_kernel_stays_float16_and_every_path_gives_the_same_bits(tmp_path):
    model = tmp_path / "dense.h5"
    write_dense_model(model, (64, 1024, 640, 10))  # 1024x640 (+ bias): 1.3 MB as float16, the rest small
    narrow = convert(model, tmp_path / "narrow.py")
    wide = convert(model, tmp_path / "wide.py", narrow_bytes=1 << 40)
    # The augmented kernel and its two views (the kernel rows, the bias row) of the batch path.
    assert kept_narrow(narrow) == ["dense_1_bias", "dense_1_kernel", "dense_1_kernel_bias"]
    assert kept_narrow(wide) == []
    assert "widen(dense_1_kernel_bias)" in (tmp_path / "narrow.py").read_text()
    x = np.random.default_rng(1).normal(size=(600, 64)).astype(np.float32)  # 600 rows: three chunks of 256
    for what, sample in [("one sample", x[0]), ("(1, n)", x[:1]), ("batch", x[:7]), ("chunked batch", x)]:
        same_bits(narrow.predict(sample), wide.predict(sample), what)
    # And that is float32 math on the float16-rounded weights.
    k0, k1, k2 = (wide.dense_kernel_bias, wide.dense_1_kernel_bias, wide.dense_2_kernel_bias)
    h = np.maximum(x[:7] @ k0[:-1] + k0[-1], 0)
    h = np.maximum(h @ k1[:-1] + k1[-1], 0)
    np.testing.assert_allclose(narrow.predict(x[:7]), h @ k2[:-1] + k2[-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(narrow.dense_1_kernel_bias.astype(np.float32), k1)


def test_a_large_conv_kernel_stays_float16_with_the_same_bits(tmp_path):
    model = tmp_path / "conv.h5"
    conv = {"filters": 256, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same", "activation": "relu"}
    layers = [
        ("Conv2D", "conv", {**conv, "dilation_rate": [1, 1], "groups": 1}, (3, 3, 256, 256)),  # 1.2 MB float16
        ("Flatten", "flatten", {}, None),
        ("Dense", "dense", {"units": 10, "activation": "softmax"}, (5 * 5 * 256, 10)),
    ]
    write_model(model, "conv", (5, 5, 256), layers)
    narrow = convert(model, tmp_path / "narrow.py")
    wide = convert(model, tmp_path / "wide.py", narrow_bytes=1 << 40)
    assert kept_narrow(narrow) == ["conv2d_kernel"]
    x = np.random.default_rng(2).normal(size=(3, 5, 5, 256)).astype(np.float32)
    for what, sample in [("one sample", x[0]), ("batch", x)]:
        same_bits(narrow.predict(sample), wide.predict(sample), what)


# Every float16 weight kept narrow (the threshold lowered to 0): layer families with weights of every kind.
FAMILIES = [
    FIXTURES / "core" / "phone__k2h5.h5",  # a Dense chain: one-sample path and row chunks
    FIXTURES / "conv" / "cnn_flatten__k3keras.keras",
    FIXTURES / "conv" / "mobile_blocks__k3keras.keras",  # depthwise, BatchNorm folded, squeeze-excite
    FIXTURES / "recurrent" / "benchmark_gru__k3keras.keras",
    FIXTURES / "functional" / "attention_layers__k3keras.keras",
    FIXTURES / "breadth" / "convnext_small__k2h5.h5",
]


@pytest.mark.parametrize("model", FAMILIES, ids=[p.stem for p in FAMILIES])
def test_every_weight_kept_narrow_gives_the_same_bits(model, tmp_path):
    narrow = convert(model, tmp_path / "narrow.py", narrow_bytes=0)
    wide = convert(model, tmp_path / "wide.py")
    assert kept_narrow(narrow) and not kept_narrow(wide)
    xs, _ = load_reference(model.with_suffix(".npz"))
    for what, args in [("batch", xs), ("one sample", [x[0] for x in xs])]:
        got, want = narrow.predict(*args), wide.predict(*args)
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            same_bits(g, w, what)


def test_a_float16_file_imports_in_about_half_the_memory(tmp_path, monkeypatch):
    model = tmp_path / "dense.h5"
    write_dense_model(model, (2048,) * 4 + (10,))  # three 16.8 MB float32 kernels
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # the usual import: the .pyc exists
    peaks = {}
    for weights in ("float32", "float16"):
        path = konverter.konvert(model, tmp_path / f"m_{weights}.py", options={"weights": weights})
        import_file(path)  # writes the .pyc
        gc.collect()
        tracemalloc.start()
        try:
            import_file(path)
            _, peaks[weights] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # float32: its 50 MB of arrays and ~4 MB of reading buffers; float16: half the arrays (read in place).
    assert peaks["float16"] < 0.6 * peaks["float32"], peaks


def test_a_float16_file_runs_a_large_batch_in_larger_chunks(tmp_path, monkeypatch):
    # Its large weights are widened once per chunk: chunks of at least 1/WIDENED_SHARE of their values.
    monkeypatch.setattr(codegen, "WIDENED_SHARE", 2)  # a small model shows it: 4.7 M / 2 / 2304 -> 1,024 rows
    model = tmp_path / "dense.h5"
    write_dense_model(model, (64, 2048, 2304, 10))  # 4.7 M values in one kernel (9.4 MB as float16)
    texts = {}
    for weights in ("float32", "float16"):
        konverter.konvert(model, tmp_path / f"{weights}.py", options={"weights": weights})
        texts[weights] = (tmp_path / f"{weights}.py").read_text()
    rows = {w: int(t.split("# A batch, ")[1].split(" rows")[0]) for w, t in texts.items()}
    assert rows == {"float32": 256, "float16": 1024}  # float32: 2**19 floats / 2304 widest
    narrow = import_file(tmp_path / "float16.py")
    wide = convert(model, tmp_path / "wide.py", narrow_bytes=1 << 40)  # float16 weights widened at import
    x = np.random.default_rng(3).normal(size=(2100, 64)).astype(np.float32)
    np.testing.assert_allclose(narrow.predict(x), wide.predict(x), rtol=1e-6, atol=1e-6)
