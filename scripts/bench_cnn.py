"""Time the small benchmark CNN: the generated file against hand-written NumPy forward passes.

The model is tests/fixtures/conv/cnn_classifier__k3keras.keras (28x28x1 -> Conv2D 16 3x3 relu ->
MaxPooling 2 -> Conv2D 32 3x3 relu -> GlobalAveragePooling -> Dense 10 softmax). Both hand-written
passes use the same weights, read from the file. Meant to be folded into scripts/benchmark.py.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python scripts/bench_cnn.py [--wall]

Timing uses process CPU time by default (steadier on a shared machine); --wall uses wall time.
Rounds alternate between the contenders so machine load hits all of them alike; medians are shown.
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

MODEL = ROOT / "tests" / "fixtures" / "conv" / "cnn_classifier__k3keras.keras"
as_strided = np.lib.stride_tricks.as_strided


def load_generated(folder: Path):
    path = konvert(MODEL, folder / "cnn.py")
    spec = importlib.util.spec_from_file_location("cnn_generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hand_written(weights: list):
    """The plain im2col forward pass anyone would write: strided windows, one matmul per conv."""
    k1, b1, k2, b2, kd, bd = weights
    k1, k2 = k1.reshape(-1, 16), k2.reshape(-1, 32)

    def forward(x):
        n, s = x.shape[0], x.strides
        w = as_strided(x, (n, 26, 26, 3, 3, 1), (s[0], s[1], s[2], s[1], s[2], s[3]))
        y = np.maximum(w.reshape(-1, 9) @ k1 + b1, 0.0).reshape(n, 26, 26, 16)
        y = y.reshape(n, 13, 2, 13, 2, 16).max(axis=(2, 4))
        s = y.strides
        w = as_strided(y, (n, 11, 11, 3, 3, 16), (s[0], s[1], s[2], s[1], s[2], s[3]))
        y = np.maximum(w.reshape(-1, 144) @ k2 + b2, 0.0).reshape(n, 121, 32).mean(axis=1)
        z = y @ kd + bd
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return forward


def hand_tuned(weights: list):
    """The same with every trick: merged (kw, C) window axis, in-place bias+ReLU, strided pooling."""
    k1, b1, k2, b2, kd, bd = weights
    k1, k2 = k1.reshape(-1, 16), k2.reshape(-1, 32)

    def forward(x):
        n, s = x.shape[0], x.strides
        y = as_strided(x, (n, 26, 26, 3, 3), (s[0], s[1], s[2], s[1], s[3])).reshape(-1, 9) @ k1
        y = y.reshape(n, 26, 26, 16)
        y = np.maximum(y[:, 0::2], y[:, 1::2])
        y = np.maximum(y[:, :, 0::2], y[:, :, 1::2])
        y += b1
        np.maximum(y, 0.0, out=y)
        s = y.strides
        y = as_strided(y, (n, 11, 11, 3, 48), (s[0], s[1], s[2], s[1], s[3])).reshape(-1, 144) @ k2
        y += b2
        np.maximum(y, 0.0, out=y)
        y = y.reshape(n, 121, 32).mean(axis=1)
        z = y @ kd + bd
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return forward


def seconds(fn, arg, repeats: int, clock) -> float:
    start = clock()
    for _ in range(repeats):
        fn(arg)
    return (clock() - start) / repeats


def main() -> None:
    clock = time.perf_counter if "--wall" in sys.argv else time.process_time
    model = read_model(MODEL)
    weights = [w for arrays in model.weights.values() for w in arrays]
    batch = np.random.default_rng(0).standard_normal((1000, 28, 28, 1)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        generated = load_generated(Path(folder))
        contenders = {
            "generated file": (generated.predict, batch[0]),
            "hand-written NumPy": (hand_written(weights), batch[:1]),
            "hand-tuned NumPy": (hand_tuned(weights), batch[:1]),
        }
        reference = generated.predict(batch)
        for fn, _ in contenders.values():
            assert np.allclose(fn(batch), reference, atol=1e-5, rtol=1e-4)
        times = {name: ([], []) for name in contenders}
        for _ in range(7):
            for name, (fn, one) in contenders.items():
                times[name][0].append(seconds(fn, batch, 3, clock))
                times[name][1].append(seconds(fn, one, 200, clock))
    kind = "wall" if clock is time.perf_counter else "CPU"
    print(f"{'':20s} {'batch of 1,000':>15s} {'one image':>12s}   ({kind} time, medians)")
    for name, (many, one) in times.items():
        print(f"{name:20s} {statistics.median(many) * 1e3:12.1f} ms {statistics.median(one) * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
