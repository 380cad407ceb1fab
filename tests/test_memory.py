"""Memory of converting and importing (issue 13): the model is never held twice while converting.

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

import konverter
from konverter.graph import ModelInput, Program
from konverter.layers import core
from konverter.layers.base import Const, Op, Tensor
from konverter.rewrites import optimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_memory import write_dense_model  # noqa: E402  (Keras 2 HDF5 layout with h5py only)

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
