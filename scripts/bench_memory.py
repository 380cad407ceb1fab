"""Memory and time of converting and importing a big model (no Keras needed).

    python scripts/bench_memory.py                       # a ~210 MB Dense model, float32 and float16 files
    python scripts/bench_memory.py --megabytes 50 --repeats 3
    python scripts/bench_memory.py --root /path/to/other/checkout   # the same measurements for another Konverter

The model is written with h5py directly (Keras 2's HDF5 layout: `model_config` + `model_weights`),
Dense layers with random float32 weights. Each measurement runs in a fresh Python process and reads
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
    import h5py

    rng = np.random.default_rng(seed)
    layers = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, widths[0]], "name": "input"}}]
    names = []
    for i, units in enumerate(widths[1:]):
        name = f"dense_{i}"
        names.append(name)
        activation = "relu" if i < len(widths) - 2 else "linear"
        config = {"name": name, "trainable": True, "dtype": "float32", "units": units, "activation": activation}
        layers.append({"class_name": "Dense", "config": config})
    model_config = {"class_name": "Sequential", "config": {"name": "big_dense", "layers": layers}}
    total = 0
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(model_config)
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([n.encode() for n in names])
        group.attrs["backend"] = "tensorflow"
        group.attrs["keras_version"] = "2.21.0"
        for name, n_in, n_out in zip(names, widths, widths[1:]):
            layer = group.create_group(name)
            layer.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()])
            inner = layer.create_group(name)
            kernel = (rng.standard_normal((n_in, n_out), dtype=np.float32) / np.float32(np.sqrt(n_in))).astype("<f4")
            bias = rng.standard_normal(n_out, dtype=np.float32) * np.float32(0.1)
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


def measure(model: Path, out_dir: Path, root: Path, options: dict, repeats: int) -> dict:
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
        "result = {'seconds': time.perf_counter() - t}"
    )
    base_import = run("import numpy\nresult = {}", root)["peak"]
    first = run(importing, root)  # writes the .pyc
    again = [run(importing, root) for _ in range(repeats)]
    return {
        "convert_seconds": float(np.median([c["seconds"] for c in conversions])),
        "convert_peak": float(np.median([c["peak"] for c in conversions])) - base_convert,
        "first_import_seconds": first["seconds"],
        "first_import_peak": first["peak"] - base_import,
        "import_seconds": float(np.median([c["seconds"] for c in again])),
        "import_peak": float(np.median([c["peak"] for c in again])) - base_import,
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
        f"| {m['first_import_seconds']:.2f} s, {m['first_import_peak'] / 1e6:.0f} MB |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=210.0, help="weights of the Dense model (default 210)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (median)")
    parser.add_argument("--root", type=Path, action="append", help="Konverter checkout(s) to measure (default: this)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    roots = args.root or [ROOT]
    with tempfile.TemporaryDirectory(prefix="konverter-bench-memory-") as tmp:
        folder = Path(tmp)
        model = folder / "big_dense.h5"
        weight_bytes = write_dense_model(model, dense_widths(args.megabytes))
        model_bytes = model.stat().st_size
        lines = [
            f"Dense model {dense_widths(args.megabytes)}: model file {model_bytes / 1e6:.0f} MB, "
            f"raw float32 weights {weight_bytes / 1e6:.0f} MB; medians of {args.repeats} fresh processes; "
            "memory is peak RSS above the baseline process (ratio to the model file when converting, "
            "to the raw weights when importing).",
            "",
            "| Konverter, weights | file | converting | peak | importing (.pyc exists) | peak | first import |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for root in roots:
            for weights in ("float32", "float16"):
                print(f"== {root} {weights}", file=sys.stderr)
                out_dir = folder / f"out_{len(lines)}"
                out_dir.mkdir()
                options = {"weights": weights} if weights != "float32" else {}
                m = measure(model, out_dir, root, options, args.repeats)
                name = "this checkout" if root == ROOT else str(root)
                lines += report(f"{name}, {weights}", m, model_bytes, weight_bytes)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
