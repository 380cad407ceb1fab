"""Memory and time of converting and importing a big model (no Keras needed).

    python scripts/bench_memory.py                       # a ~210 MB Dense model, float32 and float16 files
    python scripts/bench_memory.py --conv                # a VGG16-like convolutional model (~151 MB)
    python scripts/bench_memory.py --megabytes 50 --repeats 3
    python scripts/bench_memory.py --root /path/to/other/checkout   # the same measurements for another Konverter

The model is written with h5py directly (Keras 2's HDF5 layout: `model_config` + `model_weights`),
Dense layers (or VGG16's convolutions on 32x32x3 images and its three Dense layers, `--conv`) with
random float32 weights. Each measurement runs in a fresh Python process and reads
its own peak resident memory (VmHWM), so nothing carries over between them:

- converting: `konverter.konvert(model)` (time inside the process), peak memory above a process
  that only imported Konverter (NumPy, h5py);
- importing the generated file a second time (its .pyc exists, as after any first import): time of
  the import statement and peak memory above a process that only imported NumPy;
- sizes: the generated file against the raw weight bytes.
Goals (issue 13): converting peaks at <= 2x the model file above the baseline and takes <= 1 s per
100 MB; importing peaks at <= 1.5x the weight bytes and takes <= 0.5 s per 100 MB; file <= 1.4x the
raw weights; `--weights float16` halves the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (2048, 4096, 4096, 4096, 2048, 1000)  # 52.4 M float32 parameters: ~210 MB


def dense_widths(megabytes: float) -> tuple:
    """WIDTHS scaled so that the weights take about `megabytes` MB."""
    params = sum(a * b + b for a, b in zip(WIDTHS, WIDTHS[1:]))
    scale = (megabytes * 1e6 / 4 / params) ** 0.5
    return tuple(max(8, int(w * scale)) for w in WIDTHS[:-1]) + (WIDTHS[-1],)


def write_dense_model(path: Path, widths: tuple, seed: int = 0) -> int:
    """A Sequential of Dense layers (ReLU between them) in Keras 2's HDF5 layout; returns the weight bytes."""
    layers = []
    for i, (n_in, units) in enumerate(zip(widths, widths[1:])):
        activation = "relu" if i < len(widths) - 2 else "linear"
        layers.append(("Dense", f"dense_{i}", {"units": units, "activation": activation}, (n_in, units)))
    return write_model(path, "big_dense", (widths[0],), layers, seed)


VGG16 = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool", 512, 512, 512, "pool")


def write_conv_model(path: Path, seed: int = 0) -> int:
    """VGG16 on 32x32x3 images (its 13 3x3 convolutions, ReLU, 2x2 max pooling, Flatten, Dense
    4096-4096-1000): 38 M float32 parameters, ~151 MB, in Keras 2's HDF5 layout; returns the weight bytes."""
    layers, channels, side = [], 3, 32
    for i, step in enumerate(VGG16):
        if step == "pool":
            pool = {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}
            layers.append(("MaxPooling2D", f"pool_{i}", pool, None))
            side //= 2
        else:
            config = {
                "filters": step,
                "kernel_size": [3, 3],
                "strides": [1, 1],
                "padding": "same",
                "dilation_rate": [1, 1],
                "groups": 1,
                "activation": "relu",
            }
            layers.append(("Conv2D", f"conv_{i}", config, (3, 3, channels, step)))
            channels = step
    layers.append(("Flatten", "flatten", {}, None))
    width = side * side * channels
    for i, units in enumerate((4096, 4096, 1000)):
        activation = "relu" if i < 2 else "softmax"
        layers.append(("Dense", f"fc_{i}", {"units": units, "activation": activation}, (width, units)))
        width = units
    return write_model(path, "big_conv", (32, 32, 3), layers, seed)


def write_model(path: Path, name: str, input_shape: tuple, layers: list, seed: int = 0) -> int:
    """A Sequential model in Keras 2's HDF5 layout from (class, name, config, kernel shape or None)
    entries; every layer with a kernel gets a bias too. Returns the weight bytes."""
    import h5py

    rng = np.random.default_rng(seed)
    entries = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, *input_shape], "name": "input"}}]
    for cls, layer, config, _ in layers:
        common = {"name": layer, "trainable": True, "dtype": "float32", "data_format": "channels_last"}
        if cls == "Dense":
            del common["data_format"]
        entries.append({"class_name": cls, "config": {**common, "use_bias": True, **config}})
    model_config = {"class_name": "Sequential", "config": {"name": name, "layers": entries}}
    total = 0
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(model_config)
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([layer.encode() for _, layer, _, _ in layers])
        group.attrs["backend"] = "tensorflow"
        group.attrs["keras_version"] = "2.21.0"
        for _, layer, _, shape in layers:
            group_of_layer = group.create_group(layer)
            if shape is None:
                group_of_layer.attrs["weight_names"] = np.array([], dtype=np.float64)
                continue
            group_of_layer.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()])
            inner = group_of_layer.create_group(layer)
            fan_in = int(np.prod(shape[:-1]))
            kernel = (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))).astype("<f4")
            bias = rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.1)
            inner.create_dataset("kernel:0", data=kernel)
            inner.create_dataset("bias:0", data=bias)
            total += kernel.nbytes + bias.nbytes
    return total


PEAK = "int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]) * 1024"


def run(code: str, root: Path, pyc: bool = True) -> dict:
    """Run `code` in a fresh Python; it prints a JSON dict, to which the peak memory is added."""
    env = dict(os.environ, PYTHONPATH=str(root), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not pyc:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    script = f"import json, sys, time\n{code}\nresult['peak'] = {PEAK}\nprint(json.dumps(result))"
    # cwd: an empty folder, so that `python -c` (which puts the cwd first on sys.path) imports `root`'s konverter.
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "child failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


PREDICT = """
peak_import = {peak}
rng = numpy.random.default_rng(0)
one = rng.standard_normal(big_model.INPUT_SHAPE[1:], dtype=numpy.float32)
batch = rng.standard_normal(({batch},) + big_model.INPUT_SHAPE[1:], dtype=numpy.float32)


def median_seconds(x, calls):
    big_model.predict(x)  # warm: the per-thread buffers, caches
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        big_model.predict(x)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


result = {{"seconds": seconds, "import_peak": peak_import}}
result.update(one=median_seconds(one, 31), batch=median_seconds(batch, 7))
"""


def measure(model: Path, out_dir: Path, root: Path, options: dict, repeats: int, batch: int) -> dict:
    generated = out_dir / "big_model.py"
    convert = (
        "import konverter\n"
        "t = time.perf_counter()\n"
        f"konverter.konvert({str(model)!r}, {str(generated)!r}, force=True, options={options!r})\n"
        "result = {'seconds': time.perf_counter() - t}"
    )
    base_convert = run("import konverter, numpy, h5py\nresult = {}", root)["peak"]
    conversions = [run(convert, root) for _ in range(repeats)]
    importing = (
        "import numpy\n"
        f"sys.path.insert(0, {str(out_dir)!r})\n"
        "t = time.perf_counter()\n"
        "import big_model\n"
        "seconds = time.perf_counter() - t\n"
    ) + PREDICT.format(peak=PEAK, batch=batch)
    base_import = run("import numpy\nresult = {}", root)["peak"]
    first = run(importing, root)  # writes the .pyc
    again = [run(importing, root) for _ in range(repeats)]
    return {
        "convert_seconds": float(np.median([c["seconds"] for c in conversions])),
        "convert_peak": float(np.median([c["peak"] for c in conversions])) - base_convert,
        "first_import_seconds": first["seconds"],
        "first_import_peak": first["import_peak"] - base_import,
        "import_seconds": float(np.median([c["seconds"] for c in again])),
        "import_peak": float(np.median([c["import_peak"] for c in again])) - base_import,
        "predict_peak": float(np.median([c["peak"] for c in again])) - base_import,
        "one": float(np.median([c["one"] for c in again])),
        "batch": float(np.median([c["batch"] for c in again])),
        "file_bytes": generated.stat().st_size,
    }


def report(label: str, m: dict, model_bytes: int, weight_bytes: int) -> list:
    per100 = 100e6 / model_bytes
    return [
        f"| {label} | {m['file_bytes'] / 1e6:.0f} MB ({m['file_bytes'] / weight_bytes:.2f}×) "
        f"| {m['convert_seconds']:.2f} s ({m['convert_seconds'] * per100:.2f} s/100 MB) "
        f"| {m['convert_peak'] / 1e6:.0f} MB ({m['convert_peak'] / model_bytes:.2f}×) "
        f"| {m['import_seconds']:.2f} s ({m['import_seconds'] * 100e6 / weight_bytes:.2f} s/100 MB) "
        f"| {m['import_peak'] / 1e6:.0f} MB ({m['import_peak'] / weight_bytes:.2f}×) "
        f"| {m['first_import_seconds']:.2f} s, {m['first_import_peak'] / 1e6:.0f} MB "
        f"| {m['one'] * 1e3:.2f} ms | {m['batch'] * 1e3:.1f} ms | {m['predict_peak'] / 1e6:.0f} MB |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=210.0, help="weights of the Dense model (default 210)")
    parser.add_argument("--conv", action="store_true", help="a VGG16-like convolutional model instead (~151 MB)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (median)")
    parser.add_argument("--root", type=Path, action="append", help="Konverter checkout(s) to measure (default: this)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    roots = [root.resolve() for root in args.root] if args.root else [ROOT]  # the child runs elsewhere
    with tempfile.TemporaryDirectory(prefix="konverter-bench-memory-") as tmp:
        folder = Path(tmp)
        model = folder / "big_model.h5"
        if args.conv:
            weight_bytes, batch = write_conv_model(model), 16
            described = "VGG16-like model on 32x32x3 images"
        else:
            weight_bytes, batch = write_dense_model(model, dense_widths(args.megabytes)), 256
            described = f"Dense model {dense_widths(args.megabytes)}"
        model_bytes = model.stat().st_size
        lines = [
            f"{described}: model file {model_bytes / 1e6:.0f} MB, "
            f"raw float32 weights {weight_bytes / 1e6:.0f} MB; medians of {args.repeats} fresh processes; "
            "memory is peak RSS above the baseline process (ratio to the model file when converting, "
            f"to the raw weights when importing); predict: one sample, a batch of {batch}, and the peak "
            "after both (import included).",
            "",
            "| Konverter, weights | file | converting | peak | importing (.pyc exists) | peak | first import "
            "| predict one | batch | peak |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for root in roots:
            for weights in ("float32", "float16"):
                print(f"== {root} {weights}", file=sys.stderr)
                out_dir = folder / f"out_{len(lines)}"
                out_dir.mkdir()
                options = {"weights": weights} if weights != "float32" else {}
                m = measure(model, out_dir, root, options, args.repeats, batch)
                name = "this checkout" if root == ROOT else str(root)
                lines += report(f"{name}, {weights}", m, model_bytes, weight_bytes)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
