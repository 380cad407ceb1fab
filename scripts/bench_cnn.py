"""Real CNNs: Konverter's generated file against LiteRT (1 thread) and Keras, plus a per-layer profile.

    venv-keras/bin/python scripts/bench_cnn.py             # 96x96: MobileNetV2, ResNet50, EfficientNetB0
    venv-keras/bin/python scripts/bench_cnn.py --size 224 --models mobilenetv2
    venv-keras/bin/python scripts/bench_cnn.py --profile   # also: where the generated file's time goes, per layer
    venv-keras/bin/python scripts/bench_cnn.py --keras     # also Keras model(x) (TensorFlow in the measuring process)
    python scripts/bench_cnn.py --profile-file model.py    # profile any generated file (NumPy only)

The models are built at benchmark time with `keras.applications.<Model>(weights=None,
classifier_activation=None)` and random BatchNormalization statistics (nothing big is committed),
saved as Keras 3 `.keras` files into a cache folder (`--cache`, default `<tmp>/konverter-bench-cnn`)
together with Keras's outputs and the LiteRT
flatbuffers, so later runs reuse them: a run in a NumPy-only environment with `ai-edge-litert`
installed compares against LiteRT from the cache without TensorFlow. LiteRT gets the same weights
(TFLiteConverter on the frozen Keras function) and runs with `num_threads=1`; BLAS is pinned to one
thread before NumPy is imported. Every contender runs in every round (the order rotates); each ratio
is the median of the per-round ratios, measured in this one process.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# benchmark.py pins BLAS to one thread before NumPy is imported, and puts this checkout's konverter first.
from benchmark import import_file, interpreter_call  # noqa: E402, I001
from konverter.profile import profile_source, share  # noqa: E402

import argparse  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import numpy as np  # noqa: E402

from konverter import konvert  # noqa: E402

APPLICATIONS = {"mobilenetv2": "MobileNetV2", "resnet50": "ResNet50", "efficientnetb0": "EfficientNetB0"}
BATCH = 16


# ----------------------------------------------------------------------------- models (need Keras)
def build_model(name: str, size: int, folder: Path) -> Path:
    """`<name>_<size>.keras` with random weights and BN statistics, plus `.npz` inputs/Keras outputs."""
    import keras

    path = folder / f"{name}_{size}.keras"
    if path.exists() and path.with_suffix(".npz").exists():
        return path
    keras.utils.set_random_seed(1)
    # Logits out (no softmax): the error check against Keras then means something (softmax over 1,000
    # classes squeezes every output near 0.001); the softmax would cost every contender the same.
    model = getattr(keras.applications, APPLICATIONS[name])(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    rng = np.random.RandomState(0)
    for w in model.weights:  # weights=None leaves mean 0 / variance 1: make BatchNormalization non-trivial
        shape, p = tuple(w.shape), w.path.lower()
        if "moving_variance" in p or "gamma" in p:
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif "moving_mean" in p or "beta" in p or "bias" in p:
            w.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
    model.save(path)
    x = sample_inputs(name, size, 4, seed=3)
    np.savez(path.with_suffix(".npz"), x0=x, y0=np.asarray(model(x, training=False)))
    return path


def sample_inputs(name: str, size: int, n: int, seed: int = 0) -> np.ndarray:
    """Images in the range each application expects: EfficientNet rescales 0..255 itself."""
    rng = np.random.RandomState(seed)
    low, high = (0.0, 255.0) if name.startswith("efficientnet") else (-1.0, 1.0)
    return rng.uniform(low, high, (n, size, size, 3)).astype(np.float32)


def build_tflite(model_path: Path, rows: int) -> Path:
    """The LiteRT flatbuffer of the Keras model for a fixed batch of `rows` (weights frozen in)."""
    out = model_path.with_name(f"{model_path.stem}_b{rows}.tflite")
    if out.exists():
        return out
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = keras.models.load_model(model_path, compile=False)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([rows, *model.input_shape[1:]], tf.float32))
    # Keras 3 models keep resource variables; frozen into constants, LiteRT gets plain weights.
    frozen = convert_variables_to_constants_v2(concrete)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())
    return out


def litert_runner(flatbuffer: Path) -> Optional[Callable]:
    """x -> y through the LiteRT interpreter with one thread, or None when it is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return interpreter_call(Interpreter(model_path=str(flatbuffer), num_threads=1))


def keras_runner(model_path: Path) -> Callable:
    """Keras `model(x)` compiled with tf.function (one graph per input shape)."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path, compile=False)
    fn = tf.function(lambda x: model(x, training=False))
    return lambda x: fn(x).numpy()


# ----------------------------------------------------------------------------- per-layer profile
def profile_report(path: Path, x: Optional[np.ndarray], calls: int = 20, top: int = 15) -> list:
    """Markdown: time per function and the slowest layers of `predict(x)` (konverter.profile's timers;
    x None: one random sample)."""
    r = profile_source(path.read_text(encoding="utf-8"), path.name, calls=calls, inputs=None if x is None else [x])
    inside = sum(t.seconds for t in r.layers)
    shape = "one image" if not r.batch else f"a batch of {r.batch}"
    rows = [
        f"Profile of `predict` on {shape}: {r.seconds * 1e3:.2f} ms per call with timers "
        f"({inside * 1e3:.2f} ms inside the timed statements).",
        "",
        "| function | ms | share |",
        "| --- | ---: | ---: |",
    ]
    for fn, seconds in r.by_function().items():
        rows.append(f"| `{fn}` | {seconds * 1e3:.3f} | {share(seconds, r.seconds)} |")
    rows += ["", f"Slowest {top} statements:", "", "| ms | call: layer |", "| ---: | --- |"]
    for t in sorted(r.layers, key=lambda t: -t.seconds)[:top]:
        rows.append(f"| {t.seconds * 1e3:.3f} | {f'{t.function}: {t.layer}'.replace('|', '/')[:110]} |")
    return rows


def products_alone(model_path: Path, batch: int, rounds: int = 20) -> float:
    """Seconds (best of `rounds`) of the model's matrix products alone: every convolution's and Dense
    layer's product with the shapes of the generated file (1x1 as x @ W, kxk as im2col @ W), on random
    inputs, nothing else. The floor a NumPy program over OpenBLAS cannot go below."""
    from konverter.graph import build_program
    from konverter.h5reader import read_model
    from konverter.layers import conv, core, pooling
    from konverter.rewrites import optimize

    program, _ = optimize(build_program(read_model(model_path)))
    rng = np.random.default_rng(0)
    pairs = []
    for op in program.ops:
        kernels = []
        if op.fn in (conv.conv, conv.conv_gather, core.dense, core.dense_relu):
            kernels = [(op.args[1].array, batch * math.prod(op.outputs[0].shape[:-1]))]
        elif op.fn is pooling.squeeze_excite:
            kernels = [(op.args[2].array, batch), (op.args[5].array, batch)]
        for kernel, rows in kernels:
            pairs.append((rng.standard_normal((rows, kernel.shape[0]), dtype=np.float32), kernel))
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for a, kernel in pairs:
            a @ kernel
        best = min(best, time.perf_counter() - start)
    return best


# ----------------------------------------------------------------------------- timing
@dataclass
class Contender:
    name: str
    one: Optional[Callable] = None  # called with one image (x[i], or x[i:i+1] for fixed-batch runtimes)
    batch: Optional[Callable] = None  # called with BATCH images
    one_as_slice: bool = False
    times: dict = field(default_factory=lambda: defaultdict(list))


def time_contenders(contenders: list, x: np.ndarray, rounds: int, singles: int) -> None:
    """Every contender in every round, in a rotating order: `singles` one-image calls, then one batch."""
    for r in range(rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for c in order:
            if c.one is not None:
                start = time.perf_counter()
                for i in range(singles):
                    c.one(x[i : i + 1] if c.one_as_slice else x[i])
                c.times["one"].append((time.perf_counter() - start) / singles)
        for c in order:
            if c.batch is not None:
                start = time.perf_counter()
                c.batch(x[:BATCH])
                c.times["batch"].append(time.perf_counter() - start)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def speed_rows(contenders: list, reference: str) -> list:
    """Markdown rows: medians, and per-round ratios to `reference` (one image; batch; batch vs 16 single images)."""
    ref = next((c for c in contenders if c.name == reference), None)
    rows = [
        f"| contender | one image | ratio to {reference} | batch of {BATCH} | ratio "
        f"| vs {BATCH}× one image of {reference} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in contenders:
        cells = [c.name]
        one, batch = np.array(c.times.get("one", [])), np.array(c.times.get("batch", []))
        ref_one = np.array(ref.times.get("one", [])) if ref else np.array([])
        ref_batch = np.array(ref.times.get("batch", [])) if ref else np.array([])
        cells.append(fmt(float(np.median(one))) if one.size else "–")
        cells.append(f"{np.median(one / ref_one):.2f}×" if one.size and ref_one.size == one.size else "–")
        cells.append(fmt(float(np.median(batch))) if batch.size else "–")
        cells.append(f"{np.median(batch / ref_batch):.2f}×" if batch.size and ref_batch.size == batch.size else "–")
        per_image = batch / (BATCH * ref_one) if batch.size and ref_one.size == batch.size else None
        cells.append(f"{np.median(per_image):.2f}×" if per_image is not None else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


# ----------------------------------------------------------------------------- main
def build_in_child(names: list, size: int, cache: Path) -> str:
    """Build the models and LiteRT flatbuffers in a child process ("" when done, else why not).

    TensorFlow never enters the measuring process (unless --keras): with it loaded, the NumPy code
    measured 5-50 % slower on this shared 2-core machine.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import bench_cnn as b\n"
        "from pathlib import Path\n"
        f"for name in {names!r}:\n"
        f"    path = b.build_model(name, {size}, Path({str(cache)!r}))\n"
        "    b.build_tflite(path, 1)\n"
        f"    b.build_tflite(path, {BATCH})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return f"building the models needs Keras and TensorFlow ({last[:160]})"
    return ""


def run_model(name: str, size: int, cache: Path, args: argparse.Namespace) -> list:
    report = [f"### {APPLICATIONS[name]} {size}×{size}", ""]
    model_path = cache / f"{name}_{size}.keras"
    if not model_path.exists():
        return report + [f"SKIPPED: {model_path} is missing (run once where Keras is installed).", ""]
    generated = cache / f"{name}_{size}_generated.py"
    start = time.perf_counter()
    konvert(model_path, generated, force=True)
    convert_seconds = time.perf_counter() - start
    module = import_file(generated)
    with np.load(model_path.with_suffix(".npz")) as data:
        x_ref, y_ref = data["x0"], data["y0"]
    got = module.predict(x_ref)
    err = float(np.max(np.abs(got - y_ref)))
    within = bool(np.all(np.abs(got - y_ref) <= 1e-5 + 1e-4 * np.abs(y_ref)))
    contenders = [Contender("Konverter generated", one=module.predict, batch=module.predict)]
    notes = []
    for root in args.compare or []:  # another checkout's file for the same model, e.g. before a change
        other = cache / f"{name}_{size}_{Path(root).name}.py"
        code = f"import sys; sys.path.insert(0, {str(root)!r}); import konverter; konverter.konvert(*sys.argv[1:])"
        subprocess.run([sys.executable, "-c", code, str(model_path), str(other)], check=True)
        older = import_file(other).predict
        contenders.append(Contender(f"Konverter of {root}", one=older, batch=older))
    litert_one = litert_batch = None
    one_file, batch_file = (model_path.with_name(f"{model_path.stem}_b{r}.tflite") for r in (1, BATCH))
    if one_file.exists() and batch_file.exists():
        litert_one, litert_batch = litert_runner(one_file), litert_runner(batch_file)
    if litert_one is not None:
        lite_err = float(np.max(np.abs(litert_one(x_ref[:1]) - y_ref[:1])))
        contenders.append(Contender("LiteRT (1 thread)", one=litert_one, batch=litert_batch, one_as_slice=True))
        notes.append(f"LiteRT max |error| vs Keras on one image: {lite_err:.1e}")
    else:
        notes.append("LiteRT skipped: ai-edge-litert not installed, or no cached flatbuffer (needs TensorFlow once).")
    if args.keras:
        contenders.append(Contender("Keras model(x), tf.function", one=keras_runner(model_path), one_as_slice=True))
        contenders[-1].batch = contenders[-1].one
    x = sample_inputs(name, size, max(BATCH, args.singles), seed=5)
    for c in contenders:  # warm up (graph tracing, first-touch of buffers)
        c.one(x[:1] if c.one_as_slice else x[0])
        c.batch(x[:BATCH])
    time_contenders(contenders, x, args.rounds, args.singles)
    reference = "LiteRT (1 thread)" if litert_one is not None else "Konverter generated"
    report += speed_rows(contenders, reference)
    weights = sum(a.nbytes for a in vars(module).values() if isinstance(a, np.ndarray) and a.dtype == np.float32)
    report += [
        "",
        f"- Konverter: converted in {convert_seconds:.2f} s; generated file {generated.stat().st_size / 1e6:.1f} MB "
        f"(model file {model_path.stat().st_size / 1e6:.1f} MB, float32 arrays in the module {weights / 1e6:.1f} MB); "
        f"max |error| vs Keras on {len(x_ref)} images {err:.1e} "
        f"({'within' if within else 'OUTSIDE'} 1e-5 + 1e-4·|ref|)",
    ]
    report += [f"- {note}" for note in notes]
    report.append("")
    if args.profile:
        one, batch = products_alone(model_path, 1), products_alone(model_path, BATCH, rounds=5)
        report.append(
            f"Its matrix products alone (same shapes, random inputs, best of several): {fmt(one)} for one image, "
            f"{fmt(batch)} for a batch of {BATCH}."
        )
        report.append("")
        report += profile_report(generated, x[0], top=args.top) + [""]
        report += profile_report(generated, x[:BATCH], calls=5, top=args.top) + [""]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(APPLICATIONS), choices=list(APPLICATIONS))
    parser.add_argument("--size", type=int, default=96, help="image height and width (default 96)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--singles", type=int, default=20, help="one-image calls per round (default 20)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "konverter-bench-cnn")
    parser.add_argument("--keras", action="store_true", help="also time Keras (imports TensorFlow into this process)")
    parser.add_argument("--compare", type=Path, action="append", help="also time the file another checkout generates")
    parser.add_argument("--profile", action="store_true", help="also profile the generated file per layer")
    parser.add_argument("--profile-file", type=Path, help="only profile this generated file (one sample, random)")
    parser.add_argument("--top", type=int, default=15, help="slowest statements listed by the profile")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if args.profile_file is not None:
        print("\n".join(profile_report(args.profile_file, None, top=args.top)))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    print("== building the models (a child process with Keras)", file=sys.stderr)
    problem = build_in_child(args.models, args.size, args.cache)
    if args.keras:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)  # before TensorFlow runs anything
        tf.config.threading.set_inter_op_parallelism_threads(1)
    load = os.getloadavg()
    report = [
        f"- NumPy {np.__version__}, BLAS pinned to one thread; load average at start {load[0]:.2f} {load[1]:.2f}",
        f"- {args.rounds} interleaved rounds of {args.singles} one-image calls and one batch of {BATCH} each",
        f"- TensorFlow {'loaded in this process (Keras row)' if args.keras else 'not loaded in this process'}",
    ]
    report += [f"- Models not rebuilt: {problem}", ""] if problem else [""]
    for name in args.models:
        print(f"== {name} {args.size}", file=sys.stderr)
        report += run_model(name, args.size, args.cache, args)
    text = "\n".join(report) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
