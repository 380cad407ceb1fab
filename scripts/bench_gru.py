"""GRU speed: Konverter's generated file vs a tight hand-written NumPy GRU with the same weights.

Model (tests/fixtures/recurrent/benchmark_gru__k3keras.keras): input (20, 8) -> GRU 32 ->
Dense 16 relu -> Dense 4 softmax. Run single-threaded for stable numbers:
    OPENBLAS_NUM_THREADS=1 python scripts/bench_gru.py
Prints medians for a batch of 1,000 sequences and for one sequence (unbatched predict).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from konverter import konvert  # noqa: E402
from konverter.h5reader import read_model  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "recurrent" / "benchmark_gru__k3keras.keras"


def hand_written(weights: list):
    """The straightforward NumPy GRU (reset_after=True) + Dense layers: one input matmul, one per step."""
    (kernel, recurrent, bias), (k1, b1), (k2, b2) = weights
    u = recurrent.shape[0]

    def predict(x):
        xw = x @ kernel + bias[0]
        h = np.zeros((x.shape[0], u), np.float32)
        for t in range(x.shape[1]):
            hu = h @ recurrent + bias[1]
            xt = xw[:, t]
            zr = 1.0 / (1.0 + np.exp(-(xt[:, : 2 * u] + hu[:, : 2 * u])))
            z, r = zr[:, :u], zr[:, u:]
            hh = np.tanh(xt[:, 2 * u :] + r * hu[:, 2 * u :])
            h = z * h + (1.0 - z) * hh
        a = np.maximum(h @ k1 + b1, 0.0) @ k2 + b2
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return predict


def median_seconds(fn, arg, repeats: int) -> float:
    for _ in range(min(repeats, 20)):
        fn(arg)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = konvert(MODEL, Path(tmp) / "gru_model.py")
        spec = importlib.util.spec_from_file_location("gru_model", out)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    reference = hand_written(list(read_model(MODEL).weights.values()))
    x = np.random.RandomState(0).normal(size=(1000, 20, 8)).astype(np.float32)
    assert np.allclose(module.predict(x), reference(x), atol=1e-5, rtol=1e-4)
    print(f"{'':14s} {'batch of 1000':>14s} {'one sequence':>14s}")
    for name, fn, one in (("konverter", module.predict, x[0]), ("hand-written", reference, x[:1])):
        batch = median_seconds(fn, x, 30)
        single = median_seconds(fn, one, 2000)
        print(f"{name:14s} {batch * 1e3:11.2f} ms {single * 1e6:11.1f} us")


if __name__ == "__main__":
    main()
