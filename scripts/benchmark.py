"""Benchmark Konverter's generated files against the fastest hand-written NumPy and other runtimes.

    python scripts/benchmark.py                 # NumPy only: generated files vs hand-written NumPy
    /path/to/venv-with-tensorflow/bin/python scripts/benchmark.py --markdown results.md
    ... scripts/benchmark.py --models cnn --cnn --profile --memory   # + real CNNs vs LiteRT, a 210 MB model

Models: the seed's benchmark MLP (Dense 1-512-512-256-128-128-128-64-64-64-1), the phone MLP
(Dense 103-204-128-64-1), a GRU (20x8 -> GRU 32 -> Dense 16 relu -> Dense 4 softmax) and a small
CNN (28x28x1 -> Conv2D 16 -> MaxPool -> Conv2D 32 -> GlobalAveragePooling -> Dense 10 softmax).
The MLPs are the test fixtures; the GRU and CNN files live in scripts/bench_models/ (rebuilt with
`--build-models`, which needs TensorFlow + tf_keras). A model Konverter cannot convert yet is
skipped with a note.

For each model: one batch (10,000 samples for the MLPs, 1,000 for GRU/CNN) and a loop of single
predictions, both as x[i:i+1] and as unbatched x[i]. All contenders run interleaved in the same
repeats; the table shows medians and the median of the per-repeat ratios to the fastest
hand-written NumPy. Contenders: the generated file; hand-written NumPy; Keras model(x) /
predict_on_batch / predict and LiteRT when TensorFlow is importable (timed in a process of their
own, interleaved: see TensorFlowServer); ONNX Runtime when onnx and onnxruntime are installed
(MLPs only). BLAS runs on ONE thread: the *_NUM_THREADS variables are set below, before NumPy is
imported.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse  # noqa: E402
import atexit  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's konverter

from konverter import KonverterError, konvert  # noqa: E402
from konverter.h5reader import config as cfgmod  # noqa: E402
from konverter.h5reader import read_model  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "core"
BENCH_MODELS = Path(__file__).resolve().parent / "bench_models"
_counter = itertools.count()
_SCRATCH = Path(tempfile.mkdtemp(prefix="konverter-bench-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def scratch() -> Path:
    """A new empty folder, removed when the benchmark exits."""
    return Path(tempfile.mkdtemp(dir=_SCRATCH))


# ----------------------------------------------------------------------------- model files
def build_models(folder: Path) -> None:
    """Write gru.h5 / cnn.h5 (tf_keras, legacy HDF5) and small Keras references next to them."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tf_keras as K
    from fixturelib import randomize

    folder.mkdir(parents=True, exist_ok=True)
    K.utils.set_random_seed(7)
    gru = K.Sequential(
        [
            K.Input(shape=(20, 8)),
            K.layers.GRU(32),
            K.layers.Dense(16, activation="relu"),
            K.layers.Dense(4, activation="softmax"),
        ],
        name="bench_gru",
    )
    cnn = K.Sequential(
        [
            K.Input(shape=(28, 28, 1)),
            K.layers.Conv2D(16, 3, activation="relu"),
            K.layers.MaxPooling2D(2),
            K.layers.Conv2D(32, 3, activation="relu"),
            K.layers.GlobalAveragePooling2D(),
            K.layers.Dense(10, activation="softmax"),
        ],
        name="bench_cnn",
    )
    for seed, (name, model) in enumerate((("gru", gru), ("cnn", cnn))):
        randomize(model, 500 + seed)
        path = folder / f"{name}.h5"
        model.save(str(path))
        x = sample_inputs(name, 5, seed=11)
        np.savez(folder / f"{name}.npz", x0=x, y0=np.asarray(model(x, training=False)))
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


def sample_inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    shape = {"benchmark": (1,), "phone": (103,), "gru": (20, 8), "cnn": (28, 28, 1)}[name]
    return np.random.RandomState(seed).normal(size=(n,) + shape).astype(np.float32)


def layer_weights(path: Path) -> list:
    """[(class name, config, [arrays])] for the layers of a Sequential model file, in order."""
    model = read_model(path)
    out = []
    for entry in cfgmod.sublayers(model.config):
        if cfgmod.class_of(entry) == "InputLayer":
            continue
        arrays = [np.asarray(a, dtype=np.float32) for a in model.layer_weights((cfgmod.name_of(entry),))]
        out.append((cfgmod.class_of(entry), cfgmod.config_of(entry), arrays))
    return out


# ----------------------------------------------------------------------------- hand-written NumPy
def softmax_rows(y: np.ndarray) -> np.ndarray:
    y -= y.max(axis=-1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)
    return y


class HandMLP:
    """Dense chain (ReLU hidden layers, linear last), written for speed by hand.

    One sample: 1-D vectors in preallocated buffers that end with 1.0, each kernel stored with its
    bias as last row, so a layer is one np.dot into the next buffer plus one np.maximum against a
    zero vector. Batch: product, in-place bias add and ReLU on fresh arrays (`batch`), or the same
    through preallocated 1,024-row workspaces (`batch_chunked`).
    """

    def __init__(self, layers: list) -> None:
        self.kernels = [w[0] for _, _, w in layers]
        self.biases = [w[1] for _, _, w in layers]
        self.augmented = [np.ascontiguousarray(np.vstack([k, b[None]])) for k, b in zip(self.kernels, self.biases)]
        widths = [k.shape[0] for k in self.kernels]
        self.full = [np.ones(n + 1, np.float32) for n in widths]
        self.views = [f[:-1] for f in self.full]
        self.row = self.full[0][None, :-1]
        zeros = [np.zeros(n, np.float32) for n in widths]
        self.plan = [(self.full[k], self.augmented[k], self.views[k + 1], zeros[k + 1]) for k in range(len(widths) - 1)]
        self.last = (self.full[-1], self.augmented[-1])
        self.workspaces: dict = {}

    def one(self, x: np.ndarray) -> np.ndarray:
        """x: one sample, shape (n,) or (1, n); returns shape (units,)."""
        self.row[...] = x  # setitem is cheaper than np.copyto; the (1, n) row view takes both shapes
        for source, kernel, out, zeros in self.plan:
            np.dot(source, kernel, out=out)
            np.maximum(out, zeros, out=out)
        source, kernel = self.last
        return np.dot(source, kernel)

    def batch(self, x: np.ndarray) -> np.ndarray:
        for kernel, bias in zip(self.kernels[:-1], self.biases[:-1]):
            x = x @ kernel
            x += bias
            np.maximum(x, 0.0, out=x)
        y = x @ self.kernels[-1]
        y += self.biases[-1]
        return y

    def batch_chunked(self, x: np.ndarray, rows: int = 1024) -> np.ndarray:
        n = len(x)
        out = np.empty((n, self.kernels[-1].shape[1]), np.float32)
        spaces = self.workspaces.get(rows)
        if spaces is None:
            spaces = self.workspaces[rows] = [np.empty((rows, k.shape[1]), np.float32) for k in self.kernels[:-1]]
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            h = x[start:stop]
            for kernel, bias, space in zip(self.kernels[:-1], self.biases[:-1], spaces):
                o = space[: stop - start]
                np.matmul(h, kernel, out=o)
                o += bias
                np.maximum(o, 0.0, out=o)
                h = o
            np.matmul(h, self.kernels[-1], out=out[start:stop])
            out[start:stop] += self.biases[-1]
        return out


class HandGRU:
    """GRU(32, reset_after=True) -> Dense relu -> Dense softmax, written for speed by hand.

    The z and r columns of the input and recurrent kernels are negated once, so sigmoid is
    exp, +1, reciprocal in place; the recurrent bias is the recurrent kernel's last row (the state
    vector ends with 1.0); the input projection of all time steps is one product before the loop.
    """

    def __init__(self, layers: list) -> None:
        (_, gcfg, (kernel, recurrent, bias)), (_, _, (w1, b1)), (_, _, (w2, b2)) = layers
        if not gcfg.get("reset_after", True) or bias.shape[0] != 2:
            raise ValueError("HandGRU implements reset_after=True only")
        u = recurrent.shape[0]
        self.u = u
        sign = np.ones(3 * u, np.float32)
        sign[: 2 * u] = -1.0
        self.k_zr = np.ascontiguousarray((kernel * sign)[:, : 2 * u])
        self.b_zr = np.ascontiguousarray((bias[0] * sign)[: 2 * u])
        self.k_h = np.ascontiguousarray(kernel[:, 2 * u :])
        self.b_h = np.ascontiguousarray(bias[0][2 * u :])
        self.rec = np.ascontiguousarray(np.vstack([recurrent, bias[1][None]]) * sign)
        self.rec_kernel, self.rec_bias = self.rec[:-1], self.rec[-1]
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2
        self.state = np.ones(u + 1, np.float32)
        self.h = self.state[:u]
        self.hu = np.empty(3 * u, np.float32)
        self.hu_zr, self.hu_h = self.hu[: 2 * u], self.hu[2 * u :]
        self.zr = np.empty(2 * u, np.float32)
        self.z, self.r = self.zr[:u], self.zr[u:]
        self.c = np.empty(u, np.float32)
        self.d = np.empty(u, np.float32)
        self.zeros = np.zeros(w1.shape[1], np.float32)
        self.hidden = np.empty(w1.shape[1], np.float32)

    def one(self, x: np.ndarray) -> np.ndarray:
        xzr = np.dot(x, self.k_zr)
        xzr += self.b_zr
        xh = np.dot(x, self.k_h)
        xh += self.b_h
        h, hu, hu_zr, hu_h, zr, z, r, c, d = (
            self.h,
            self.hu,
            self.hu_zr,
            self.hu_h,
            self.zr,
            self.z,
            self.r,
            self.c,
            self.d,
        )
        h[:] = 0.0
        for t in range(len(x)):
            np.dot(self.state, self.rec, out=hu)
            np.add(xzr[t], hu_zr, out=zr)  # minus the gates' pre-activations
            np.exp(zr, out=zr)
            zr += 1.0
            np.reciprocal(zr, out=zr)  # sigmoid
            np.multiply(r, hu_h, out=c)
            c += xh[t]
            np.tanh(c, out=c)
            np.subtract(h, c, out=d)  # h = z*h + (1-z)*c = c + z*(h - c)
            d *= z
            np.add(c, d, out=h)
        np.dot(h, self.w1, out=self.hidden)
        self.hidden += self.b1
        np.maximum(self.hidden, self.zeros, out=self.hidden)
        y = np.dot(self.hidden, self.w2)
        y += self.b2
        return softmax_rows(y)

    def batch(self, x: np.ndarray) -> np.ndarray:
        n, steps, _ = x.shape
        u = self.u
        xzr = x @ self.k_zr
        xzr += self.b_zr
        xh = x @ self.k_h
        xh += self.b_h
        h = np.zeros((n, u), np.float32)
        hu = np.empty((n, 3 * u), np.float32)
        zr = np.empty((n, 2 * u), np.float32)
        c = np.empty((n, u), np.float32)
        d = np.empty((n, u), np.float32)
        z, r, hu_zr, hu_h = zr[:, :u], zr[:, u:], hu[:, : 2 * u], hu[:, 2 * u :]
        for t in range(steps):
            np.matmul(h, self.rec_kernel, out=hu)
            hu += self.rec_bias
            np.add(xzr[:, t], hu_zr, out=zr)
            np.exp(zr, out=zr)
            zr += 1.0
            np.reciprocal(zr, out=zr)
            np.multiply(r, hu_h, out=c)
            c += xh[:, t]
            np.tanh(c, out=c)
            np.subtract(h, c, out=d)
            d *= z
            np.add(c, d, out=h)
        y = h @ self.w1
        y += self.b1
        np.maximum(y, 0.0, out=y)
        y = y @ self.w2
        y += self.b2
        return softmax_rows(y)


def _patch_index(height: int, width: int, channels: int, k: int) -> np.ndarray:
    """Flat indices of every k x k x channels patch of a (height, width, channels) image ("valid")."""
    rows, cols = height - k + 1, width - k + 1
    i, j, di, dj, ch = np.ix_(np.arange(rows), np.arange(cols), np.arange(k), np.arange(k), np.arange(channels))
    flat = ((i + di) * width + (j + dj)) * channels + ch
    return flat.reshape(rows * cols, k * k * channels)


class HandCNN:
    """Conv2D 3x3 relu -> MaxPool 2 -> Conv2D 3x3 relu -> GAP -> Dense softmax, as fast as I can write it.

    im2col with channels innermost (the first convolution, one channel: a gather of precomputed
    patch indices; the second: one copy of the strided window view, runs of 3 x 16 contiguous
    values), kernels reshaped to (kh * kw * C, F), one product per layer into a preallocated
    workspace, max pooling BEFORE bias and ReLU (4x fewer values; exact, both are monotone), the
    pooling as a row-pair maximum (long contiguous rows) then a column-pair maximum, biases repeated
    over the whole map (no broadcasting), ReLU as np.maximum against preallocated zeros (against a scalar
    it is not vectorized on NumPy 2, and np.clip costs ~2 us more per call), the average pooling as a
    product with ones (its 1/121 folded into the Dense kernel). Batches run 64
    images at a time through the same workspaces; one image uses workspaces for one.
    """

    def __init__(self, layers: list, shape=(28, 28, 1), rows: int = 64) -> None:
        (_, _, (k1, b1)), _, (_, _, (k2, b2)), _, (_, _, (wd, bd)) = layers
        h, w, ch = shape
        c1, c2 = k1.shape[-1], k2.shape[-1]
        self.h1, self.w1 = h - 2, w - 2  # 26 x 26 after the first convolution
        self.ph, self.pw = self.h1 // 2, self.w1 // 2  # 13 x 13 after pooling
        self.h2, self.w2 = self.ph - 2, self.pw - 2  # 11 x 11 after the second convolution
        self.idx1 = _patch_index(h, w, ch, 3)
        self.k1 = np.ascontiguousarray(k1.reshape(-1, c1))
        self.k2 = np.ascontiguousarray(k2.reshape(-1, c2))
        self.b1_map = np.tile(b1, (self.ph, self.pw, 1))  # (13, 13, 16): added to pooled maps
        self.b2_map = np.tile(b2, (self.h2, self.w2, 1))  # (11, 11, 32)
        self.wd = np.ascontiguousarray(wd / np.float32(self.h2 * self.w2))
        self.ones = np.ones(self.h2 * self.w2, np.float32)
        self.bd = bd
        self.rows = rows
        self.spaces = {n: self._workspaces(n, ch, c1, c2) for n in (1, rows)}
        self.one_space = tuple(self.spaces[1].values())  # one image: no per-call slicing of the workspaces
        self.one_out = np.empty((1, bd.shape[0]), np.float32)

    def _workspaces(self, n: int, ch: int, c1: int, c2: int) -> dict:
        f32 = np.float32
        return {
            "p1": np.empty((n,) + self.idx1.shape, f32),
            "y1": np.empty((n, self.h1, self.w1, c1), f32),
            "r1": np.empty((n, self.ph, self.w1, c1), f32),
            "q1": np.empty((n, self.ph, self.pw, c1), f32),
            "z1": np.zeros((n, self.ph, self.pw, c1), f32),
            "p2": np.empty((n, self.h2, self.w2, 3, 3 * c1), f32),
            "y2": np.empty((n, self.h2, self.w2, c2), f32),
            "z2": np.zeros((n, self.h2, self.w2, c2), f32),
            "g": np.empty((n, c2), f32),
        }

    def _forward(self, x: np.ndarray, ws: dict, n: int, out: np.ndarray) -> None:
        """x: (n, 28, 28, 1) float32; writes the n softmax rows into out."""
        p1, y1, r1, q1, z1, p2, y2, z2, g = (ws[k][:n] for k in ("p1", "y1", "r1", "q1", "z1", "p2", "y2", "z2", "g"))
        self._layers(x, n, out, p1, y1, r1, q1, z1, p2, y2, z2, g)

    def _layers(self, x, n, out, p1, y1, r1, q1, z1, p2, y2, z2, g) -> None:
        np.take(x.reshape(n, -1), self.idx1, axis=1, out=p1, mode="wrap")  # "raise" buffers `out`: 1.6x slower
        np.matmul(p1.reshape(-1, p1.shape[-1]), self.k1, out=y1.reshape(-1, y1.shape[-1]))
        np.maximum(y1[:, 0::2], y1[:, 1::2], out=r1)  # row pairs: runs of 26 x 16 values
        pairs = r1.reshape(n, self.ph, self.pw, 2, -1)
        np.maximum(pairs[:, :, :, 0], pairs[:, :, :, 1], out=q1)
        q1 += self.b1_map
        np.maximum(q1, z1, out=q1)
        s = q1.strides
        windows = np.ndarray(p2.shape, np.float32, q1, 0, (s[0], s[1], s[2], s[1], s[3]))
        np.copyto(p2, windows)
        np.matmul(p2.reshape(-1, self.k2.shape[0]), self.k2, out=y2.reshape(-1, y2.shape[-1]))
        y2 += self.b2_map
        np.maximum(y2, z2, out=y2)
        np.matmul(self.ones, y2.reshape(n, -1, y2.shape[-1]), out=g)  # a product: 8x faster than add.reduce
        np.matmul(g, self.wd, out=out)
        out += self.bd
        softmax_rows(out)

    def one(self, x: np.ndarray) -> np.ndarray:
        """One image, (28, 28, 1) or (1, 28, 28, 1); returns (10,)."""
        out = self.one_out
        self._layers(x, 1, out, *self.one_space)
        return out[0].copy()  # the caller owns its result (the generated file's is new too)

    def batch(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.bd.shape[0]), np.float32)
        ws = self.spaces[self.rows]
        for start in range(0, len(x), self.rows):
            stop = min(start + self.rows, len(x))
            self._forward(x[start:stop], ws, stop - start, out[start:stop])
        return out


# ----------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    name: str
    batch: Optional[Callable] = None
    one_slice: Optional[Callable] = None  # called with x[i:i+1]
    one_vector: Optional[Callable] = None  # called with x[i]
    single_calls: Optional[int] = None  # fewer single calls for slow contenders
    hand: bool = False
    any_batch_size: bool = True  # False: batch() only takes the benchmark's batch size
    remote: Optional[TensorFlowServer] = None  # timed in the TensorFlow process (its batch/one_* are unused)


@dataclass
class Result:
    times: dict = field(default_factory=dict)  # (contender, mode) -> [seconds per call, per repeat]


def import_file(path: Path):
    name = f"konverter_bench_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def keras_contenders(model_path: Path, tf, keras_model) -> list:
    out = [
        Contender(
            "Keras model(x)",
            batch=lambda x: keras_model(x, training=False),
            one_slice=lambda x: keras_model(x, training=False),
            single_calls=200,
        ),
        Contender(
            "Keras predict_on_batch",
            batch=keras_model.predict_on_batch,
            one_slice=keras_model.predict_on_batch,
            single_calls=200,
        ),
        Contender(
            "Keras predict",
            batch=lambda x: keras_model.predict(x, verbose=0, batch_size=len(x)),
            one_slice=lambda x: keras_model.predict(x, verbose=0),
            single_calls=20,
        ),
    ]
    return out


def interpreter_call(interp) -> Callable:
    """x -> y through a LiteRT (TFLite) interpreter with one input and one output."""
    interp.allocate_tensors()
    i_in, i_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def call(x):
        set_tensor(i_in, x)
        invoke()
        return get_tensor(i_out)

    return call


def litert_contender(tf, keras_model, batch_size: int) -> tuple[Optional[Contender], str]:
    """LiteRT through TensorFlow's converter and interpreter (tf.lite), 1 thread, fixed input shapes."""
    sample = list(keras_model.input_shape[1:])

    def interpreter(rows: int):
        fn = tf.function(lambda x: keras_model(x, training=False))
        concrete = fn.get_concrete_function(tf.TensorSpec([rows] + sample, tf.float32))
        flat = tf.lite.TFLiteConverter.from_concrete_functions([concrete], keras_model).convert()
        return interpreter_call(tf.lite.Interpreter(model_content=flat, num_threads=1))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one, batch = interpreter(1), interpreter(batch_size)
    except Exception as err:  # optional extra: any failure is a note, not an error
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, f"LiteRT skipped: {type(err).__name__}: {first[:120]}"
    return Contender("LiteRT (tf.lite)", batch=batch, one_slice=one, any_batch_size=False), ""


def timed_remotely(*_):
    """The batch/one_slice of a contender timed in the TensorFlow process: never called here."""
    raise RuntimeError("this contender runs in the TensorFlow process")


class TensorFlowServer:
    """Keras and LiteRT (tf.lite) contenders of one model, timed in a child process with TensorFlow.

    This process never imports TensorFlow: timed in the same process, after TensorFlow's calls, the
    generated files measured 10-40 % slower against the hand-written NumPy than in a process without
    it (the small CNN's one image 1.13-1.48x instead of 1.06-1.09x; the hand-written pass, which
    allocates nothing, was not affected), and a user's NumPy-only process is what the generated file
    is for. The child times each loop itself when asked, so the rounds still interleave with this
    process's contenders and all see the same machine load."""

    def __init__(self, name: str, singles: int) -> None:
        command = [sys.executable, __file__, "--serve", name, "--singles", str(singles)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the TensorFlow process stopped (see its messages above)")
        return json.loads(line)

    def time(self, name: str, mode: str, lo: int, hi: int) -> float:
        """Seconds the child spent on `name`: one batch call, or calls lo..hi of the single samples."""
        self.process.stdin.write(json.dumps({"name": name, "mode": mode, "lo": lo, "hi": hi}) + "\n")
        self.process.stdin.flush()
        return float(self._read()["seconds"])

    def contenders(self) -> list:
        return [
            Contender(
                c["name"],
                batch=timed_remotely,
                one_slice=timed_remotely if c["slice"] else None,
                single_calls=c["single_calls"],
                any_batch_size=False,
                remote=self,
            )
            for c in self.hello["contenders"]
        ]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def serve(name: str, singles: int) -> None:
    """The child of TensorFlowServer: load the model with tf_keras, build its contenders, say hello
    (contenders, reference outputs, notes), then time what the parent asks, one JSON line each."""
    channel = os.fdopen(os.dup(1), "w")  # the protocol; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import tensorflow as tf
    import tf_keras

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    path, batch_size = MODELS[name]
    x_batch, x_single = sample_inputs(name, batch_size, seed=1), sample_inputs(name, singles, seed=2)
    keras_model = tf_keras.models.load_model(str(path), compile=False)
    contenders = keras_contenders(path, tf, keras_model)
    notes = [
        f"Keras and LiteRT: TensorFlow {tf.__version__} (tf_keras {tf_keras.__version__}) in a process of their own"
        ", 1 intra-op and 1 inter-op thread"
    ]
    reference = np.asarray(keras_model(x_batch[:64], training=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lite, note = litert_contender(tf, keras_model, batch_size)
    if lite is not None:
        error = float(np.max(np.abs(np.asarray(lite.one_slice(x_batch[:1])) - reference[:1])))
        if error > 1e-4 + 1e-3 * float(np.max(np.abs(reference))):
            raise SystemExit(f"{name}: LiteRT disagrees with Keras (max |error| {error:.2e})")
        contenders.append(lite)
    else:
        notes.append(note)
    by_name = {c.name: c for c in contenders}
    hello = {
        "contenders": [
            {"name": c.name, "slice": c.one_slice is not None, "single_calls": c.single_calls} for c in contenders
        ],
        "reference": reference.tolist(),
        "notes": notes,
    }
    channel.write(json.dumps(hello) + "\n")
    channel.flush()
    for line in sys.stdin:
        ask = json.loads(line)
        c = by_name[ask["name"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            if ask["mode"] == "batch":
                c.batch(x_batch)
            else:
                for i in range(ask["lo"], ask["hi"]):
                    c.one_slice(x_single[i : i + 1])
            seconds = time.perf_counter() - start
        channel.write(json.dumps({"seconds": seconds}) + "\n")
        channel.flush()


def onnx_contender(layers: list, batch_size: int) -> tuple[Optional[Contender], str]:
    """ONNX Runtime on an ONNX graph built from the same weights (MatMul + Add + Relu), 1 thread."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None, "ONNX Runtime skipped: onnx/onnxruntime not installed (pip install onnx onnxruntime)"
    nodes, inits = [], []
    name = "x"
    for k, (_, cfg, (kernel, bias)) in enumerate(layers):
        inits += [numpy_helper.from_array(kernel, f"W{k}"), numpy_helper.from_array(bias, f"b{k}")]
        nodes += [
            helper.make_node("MatMul", [name, f"W{k}"], [f"m{k}"]),
            helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"]),
        ]
        name = f"a{k}"
        if cfg.get("activation") == "relu":
            nodes.append(helper.make_node("Relu", [name], [f"r{k}"]))
            name = f"r{k}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", layers[0][2][0].shape[0]])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", layers[-1][2][0].shape[1]])],
        inits,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx.helper.make_model(graph).SerializeToString(), options)

    def call(x):
        return session.run(None, {"x": x})[0]

    return Contender("ONNX Runtime", batch=call, one_slice=call), ""


# ----------------------------------------------------------------------------- timing
SETTLE = 0.02  # seconds of quiet before each timed loop (see time_contenders)


def time_contenders(
    contenders: list, x_batch: np.ndarray, x_single: np.ndarray, repeats: int, blocks: int = 8
) -> Result:
    """Every contender in every repeat; the single-prediction loops alternate between contenders in
    `blocks` blocks so that all of them see the same machine load, in an order that rotates. Each
    timed loop starts after a SETTLE pause, so that no runtime's worker threads are still busy
    with their last call. TensorFlow's contenders are timed in their own process (TensorFlowServer)."""
    result = Result()
    n = len(x_single)
    edges = np.linspace(0, n, blocks + 1).astype(int)
    for r in range(repeats):
        # A different contender goes first in each repeat: the first big batch after the single-sample
        # loops pays for growing the heap again (page faults), and that should not always be the same one.
        for c in contenders[r % len(contenders) :] + contenders[: r % len(contenders)]:
            if c.remote is not None:
                time.sleep(SETTLE)
                result.times.setdefault((c.name, "batch"), []).append(c.remote.time(c.name, "batch", 0, 0))
            elif c.batch is not None:
                time.sleep(SETTLE)
                start = time.perf_counter()
                c.batch(x_batch)
                result.times.setdefault((c.name, "batch"), []).append(time.perf_counter() - start)
        for mode in ("slice", "vector"):
            spent: dict = {}
            calls: dict = {}
            for b in range(blocks):
                first = (r + b) % len(contenders)  # the order rotates too
                for c in contenders[first:] + contenders[:first]:
                    fn = c.one_slice if mode == "slice" else c.one_vector
                    if fn is None:
                        continue
                    lo, hi = int(edges[b]), int(edges[b + 1])
                    if c.single_calls is not None:
                        hi = lo + max(1, c.single_calls // blocks)
                    time.sleep(SETTLE)
                    if c.remote is not None:
                        spent[c.name] = spent.get(c.name, 0.0) + c.remote.time(c.name, mode, lo, hi)
                        calls[c.name] = calls.get(c.name, 0) + hi - lo
                        continue
                    start = time.perf_counter()
                    if mode == "slice":
                        for i in range(lo, hi):
                            fn(x_single[i : i + 1])
                    else:
                        for i in range(lo, hi):
                            fn(x_single[i])
                    spent[c.name] = spent.get(c.name, 0.0) + time.perf_counter() - start
                    calls[c.name] = calls.get(c.name, 0) + hi - lo
            for name, seconds in spent.items():
                result.times.setdefault((name, mode), []).append(seconds / calls[name])
    return result


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def speed_table(result: Result, contenders: list, hand_names: list) -> list:
    """Markdown rows: median time per mode, and the median per-repeat ratio to the best hand-written."""
    modes = ("batch", "slice", "vector")
    best: dict = {}
    for mode in modes:
        series = [result.times[(h, mode)] for h in hand_names if (h, mode) in result.times]
        if series:
            best[mode] = np.min(np.array(series), axis=0)  # per repeat: the fastest hand-written
    rows = [
        "| contender | batch | ratio | x[i:i+1] | ratio | x[i] | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in contenders:
        cells = [c.name]
        for mode in modes:
            t = result.times.get((c.name, mode))
            if t is None:
                cells += ["–", "–"]
                continue
            cells.append(fmt_time(float(np.median(t))))
            if mode in best and len(best[mode]) == len(t):
                cells.append(f"{float(np.median(np.array(t) / best[mode])):.2f}×")
            elif mode in best:
                cells.append(f"{float(np.median(t) / np.median(best[mode])):.0f}×")
            else:
                cells.append("–")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


# ----------------------------------------------------------------------------- process measurements
def child(code: str, python: str = sys.executable, pyc: bool = False) -> tuple[float, str]:
    """Wall time of a fresh Python process running `code`, and its stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    if pyc:
        del env["PYTHONDONTWRITEBYTECODE"]
    start = time.perf_counter()
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT))
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "child failed")
    return elapsed, done.stdout


def child_cli(args: list, python: str = sys.executable) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    done = subprocess.run([python, "-m", "konverter", *args], capture_output=True, text=True, env=env, cwd=str(ROOT))
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip() or "konverter failed").splitlines()[-1])
    return time.perf_counter() - start


# Peak resident memory of this process in KiB (VmHWM: unlike ru_maxrss it does not carry over the
# parent's size across fork + exec).
MAXRSS = "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def process_rows(model: Path, generated: Path, x: np.ndarray, repeats: int, python: str) -> list:
    """Conversion and import times, peak memory, sizes; markdown bullet lines."""
    lines = []
    out = scratch() / "converted.py"
    start = [child("pass", python)[0] for _ in range(repeats)]
    numpy_start = [child("import numpy", python)[0] for _ in range(repeats)]
    api = [
        child(f"import konverter; konverter.konvert({str(model)!r}, {str(out)!r}, force=True)", python)[0]
        for _ in range(repeats)
    ]
    lines.append(
        f"- Converting the seed model, whole process (Python start included), median of {repeats}: "
        f'**{fmt_time(float(np.median(api)))}** with `python -c "import konverter; konverter.konvert(...)"`'
    )
    try:
        cli = [child_cli([str(model), "-o", str(out), "--force", "-q"], python) for _ in range(repeats)]
        lines.append(f"  and **{fmt_time(float(np.median(cli)))}** with `python -m konverter model.h5 -o out.py`")
    except RuntimeError as err:
        lines.append(f"  (the command line could not run here: {err})")
    lines.append(
        f"  (for scale: `python -c pass` takes {fmt_time(float(np.median(start)))}, "
        f'`python -c "import numpy"` {fmt_time(float(np.median(numpy_start)))})'
    )
    # Import time with NumPy already imported: from source (no .pyc, as on first import) and with
    # the .pyc that Python writes on first import.
    timing = (
        "import sys, time, numpy\n"
        "sys.path.insert(0, {folder!r})\n"
        "t = time.perf_counter()\n"
        "import seedmodel\n"
        "print(time.perf_counter() - t)"
    )
    fresh, cached = scratch(), scratch()
    for folder in (fresh, cached):
        (folder / "seedmodel.py").write_bytes(generated.read_bytes())
    child(timing.format(folder=str(cached)), python, pyc=True)  # writes __pycache__
    first = [float(child(timing.format(folder=str(fresh)), python)[1]) for _ in range(repeats)]
    again = [float(child(timing.format(folder=str(cached)), python, pyc=True)[1]) for _ in range(repeats)]
    lines.append(
        f"- Importing its generated file (NumPy already imported), median of {repeats} fresh processes: "
        f"**{fmt_time(float(np.median(first)))}** from source (first import: Python compiles the "
        f"{generated.stat().st_size / 1e6:.1f} MB file), **{fmt_time(float(np.median(again)))}** with its .pyc"
    )
    np.save(out.with_suffix(".npy"), x)
    base = int(child(f"import numpy; x = numpy.load({str(out.with_suffix('.npy'))!r}); {MAXRSS}", python)[1])
    peak = int(
        child(
            "import numpy, importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('m', {str(generated)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"x = numpy.load({str(out.with_suffix('.npy'))!r}); m.predict(x)\n{MAXRSS}",
            python,
        )[1]
    )
    conv_peak = int(
        child(f"import konverter; konverter.konvert({str(model)!r}, {str(out)!r}, force=True)\n{MAXRSS}", python)[1]
    )
    lines.append(
        f"- Peak memory (max RSS): importing the generated file and predicting a batch of {len(x):,}: "
        f"{peak / 1024:.0f} MB ({(peak - base) / 1024:.0f} MB above a process that only loads NumPy and the "
        f"input); converting: {conv_peak / 1024:.0f} MB"
    )
    return lines


def raw_weight_bytes(model: Path) -> int:
    return sum(4 * int(np.prod(a.shape)) for arrays in read_model(model).weights.values() for a in arrays)


def run_script(script: Path, arguments: list, python: str = sys.executable) -> list:
    """Another benchmark script's markdown report (its stdout), as lines; its progress goes to stderr."""
    done = subprocess.run([python, str(script), *arguments], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return [f"{script.name} failed (exit {done.returncode})", ""]
    return done.stdout.rstrip("\n").splitlines() + [""]


# ----------------------------------------------------------------------------- main
MODELS = {
    "benchmark": (FIXTURES / "benchmark__k2h5.h5", 10_000),
    "phone": (FIXTURES / "phone__k2h5.h5", 10_000),
    "gru": (BENCH_MODELS / "gru.h5", 1_000),
    "cnn": (BENCH_MODELS / "cnn.h5", 1_000),
}


def machine_lines() -> list:
    lines = [f"- Python {platform.python_version()}, NumPy {np.__version__}, {platform.platform()}"]
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "L1d", "L2", "L3")
        for line in info.splitlines():
            if line.split(":")[0].strip() in keep:
                lines.append(f"- {' '.join(line.split())}")
    except OSError:
        lines.append(f"- {platform.processor()}")
    try:
        load = os.getloadavg()
        lines.append(f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        pass
    lines.append(f"- BLAS threads pinned: {', '.join(f'{v}=1' for v in THREAD_VARIABLES)} (set before NumPy import)")
    return lines


def model_section(name: str, args: argparse.Namespace, with_tensorflow: bool, work: Path) -> list:
    """The report section of one benchmark model (Keras and LiteRT timed by a TensorFlowServer)."""
    path, batch_size = MODELS[name]
    report = [f"## {name} (`{path.relative_to(ROOT)}`)", ""]
    if not path.exists():
        return report + [f"SKIPPED: {path.name} is missing (run with --build-models where tf_keras is installed).", ""]
    layers = layer_weights(path)
    x_batch = sample_inputs(name, batch_size, seed=1)
    x_single = sample_inputs(name, args.singles, seed=2)
    contenders: list = []
    notes: list = []
    generated = work / f"{name}.py"
    module = None
    try:
        konvert(path, generated, force=True)
        module = import_file(generated)
        contenders.append(
            Contender("Konverter generated", batch=module.predict, one_slice=module.predict, one_vector=module.predict)
        )
    except KonverterError as err:
        notes.append(f"Konverter generated file SKIPPED: Konverter cannot convert this model yet ({err}).")
    hand = {"benchmark": HandMLP, "phone": HandMLP, "gru": HandGRU, "cnn": HandCNN}[name](layers)
    hand_names = ["hand-written NumPy"]
    contenders.append(
        Contender(
            "hand-written NumPy",
            batch=hand.batch,
            one_slice=(lambda x, hand=hand: hand.one(x)[None])
            if isinstance(hand, HandMLP)
            else (lambda x, hand=hand: hand.one(x[0])[None]),
            one_vector=hand.one,
            hand=True,
        )
    )
    if isinstance(hand, HandMLP):
        contenders.append(Contender("hand-written NumPy, 1,024-row workspaces", batch=hand.batch_chunked, hand=True))
        hand_names.append(contenders[-1].name)
    server = None
    if with_tensorflow:
        server = TensorFlowServer(name, args.singles)
        contenders += server.contenders()
        notes += server.hello["notes"]
    else:
        notes.append("Keras and LiteRT skipped: TensorFlow is not importable (or --no-keras).")
    if isinstance(hand, HandMLP):
        onnx, note = onnx_contender(layers, batch_size)
        if onnx is not None:
            contenders.append(onnx)
        else:
            notes.append(note)
    else:
        notes.append("ONNX Runtime: MLPs only.")

    # correctness first: everything agrees with the reference outputs
    if server is not None:
        reference = np.asarray(server.hello["reference"], dtype=np.float32)
    else:
        ref_file = path.with_suffix(".npz")
        with np.load(ref_file) as data:
            x_check, reference = data["x0"], data["y0"]
    x_check = x_batch[:64] if server is not None else x_check
    limit = 1e-4 + 1e-3 * float(np.max(np.abs(reference)))
    for c in contenders:
        if c.remote is not None:  # LiteRT was checked against Keras in its process
            continue
        checks = []
        if c.batch is not None and c.any_batch_size:
            checks.append(np.asarray(c.batch(x_check)) - reference)
        if c.one_slice is not None:
            checks.append(np.asarray(c.one_slice(x_check[:1])) - reference[:1])
        if c.one_vector is not None:
            checks.append(np.asarray(c.one_vector(x_check[0])) - reference[0])
        err = max(float(np.max(np.abs(d))) for d in checks)
        if err > limit:
            raise SystemExit(f"{name}: {c.name} disagrees with the reference (max |error| {err:.2e})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = time_contenders(contenders, x_batch, x_single, args.repeats)
    report.append(
        f"Batch of {batch_size:,}; {args.singles:,} single predictions per repeat (Keras: fewer, per call); "
        f"median of {args.repeats} interleaved repeats. Ratio = median of per-repeat ratios to the fastest "
        "hand-written NumPy in the same repeat (lower is better)."
    )
    report.append("")
    report += speed_table(result, contenders, hand_names)
    report.append("")
    for note in notes:
        report.append(f"- {note}")
    # sizes and float16
    raw = raw_weight_bytes(path)
    size_line = f"- Model file {path.stat().st_size / 1e6:.2f} MB; raw float32 weights {raw / 1e6:.2f} MB"
    if module is not None:
        gen_size = generated.stat().st_size
        half = work / f"{name}_f16.py"
        konvert(path, half, force=True, options={"weights": "float16"})
        half_module = import_file(half)
        size_line += (
            f"; generated file {gen_size / 1e6:.2f} MB ({gen_size / raw:.2f}× raw weights, "
            f"{gen_size / path.stat().st_size:.2f}× model file); with `--weights float16` "
            f"{half.stat().st_size / 1e6:.2f} MB ({half.stat().st_size / raw:.2f}× raw)"
        )
        report.append(size_line)
        full_err = float(np.max(np.abs(module.predict(x_check) - reference)))
        half_err = float(np.max(np.abs(half_module.predict(x_check) - reference)))
        what = "Keras" if server is not None else "the stored Keras reference"
        report.append(
            f"- Max |error| vs {what} on {len(x_check)} samples: float32 file {full_err:.2e}, "
            f"float16 file {half_err:.2e} (outputs up to {float(np.max(np.abs(reference))):.2f})"
        )
    else:
        report.append(size_line)
    report.append("")
    if server is not None:
        server.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per model (default 7)")
    parser.add_argument("--singles", type=int, default=2000, help="single predictions per repeat (default 2000)")
    parser.add_argument("--no-keras", action="store_true", help="do not import TensorFlow even if installed")
    parser.add_argument("--build-models", action="store_true", help="rebuild scripts/bench_models (needs tf_keras)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the whole-process timings")
    parser.add_argument(
        "--cnn", action="store_true", help="also MobileNetV2/ResNet50/EfficientNetB0 vs LiteRT (scripts/bench_cnn.py)"
    )
    parser.add_argument("--profile", action="store_true", help="with --cnn: a per-layer profile of each generated file")
    parser.add_argument("--memory", action="store_true", help="also a 210 MB Dense model (scripts/bench_memory.py)")
    parser.add_argument("--serve", choices=list(MODELS), help=argparse.SUPPRESS)  # see TensorFlowServer
    args = parser.parse_args()

    if args.build_models:
        build_models(BENCH_MODELS)
    if args.serve:  # the TensorFlow process of a TensorFlowServer
        serve(args.serve, args.singles)
        return
    with_tensorflow = not args.no_keras and all(importlib.util.find_spec(m) for m in ("tensorflow", "tf_keras"))
    report = ["## Machine", "", *machine_lines(), ""]
    if with_tensorflow:
        report.append("Keras and LiteRT (tf.lite) run in a process of their own with TensorFlow, interleaved.")
    else:
        report.append("TensorFlow is not importable here (or --no-keras): no Keras or LiteRT rows.")
    report.append("")
    work = scratch()
    for name in args.models:
        print(f"== {name}", file=sys.stderr)
        report += model_section(name, args, with_tensorflow, work)
    seed_generated = None
    if "benchmark" in args.models and MODELS["benchmark"][0].exists():
        seed_generated = work / "benchmark_seed.py"
        konvert(MODELS["benchmark"][0], seed_generated, force=True)
    if seed_generated is not None:
        print("== process measurements", file=sys.stderr)
        report += ["## Conversion, import, memory (seed benchmark model)", ""]
        report += process_rows(
            MODELS["benchmark"][0], seed_generated, sample_inputs("benchmark", 10_000, 1), 5, args.python
        )
        report.append("")
    # The real CNNs and the big model run in processes of their own (TensorFlow, hundreds of MB).
    scripts = Path(__file__).resolve().parent
    if args.cnn:
        report += ["## Real CNNs against LiteRT (scripts/bench_cnn.py)", ""]
        report += run_script(scripts / "bench_cnn.py", ["--profile"] if args.profile else [])
    if args.memory:
        report += ["## Memory and time of a big model (scripts/bench_memory.py)", ""]
        report += run_script(scripts / "bench_memory.py", [], args.python)
    text = "\n".join(report) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
