"""Before and after a refactor, in one run: the generated files of two Konverter versions, timed side by side.

    python scripts/bench_versions.py --base e949311          # that commit vs this checkout
    python scripts/bench_versions.py --base OLD_REF --models cnn gru --repeats 9

Each version converts the benchmark models (scripts/benchmark.py's MODELS) in its own process;
this process then imports both generated files and times them interleaved (alternating order) on
the same inputs: one batch, and a loop of single predictions as x[i:i+1] and as x[i]. The table
shows the medians and the median of the per-repeat ratios new/old. BLAS runs on one thread.
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "benchmark": (ROOT / "tests" / "fixtures" / "core" / "benchmark__k2h5.h5", 10_000),
    "phone": (ROOT / "tests" / "fixtures" / "core" / "phone__k2h5.h5", 10_000),
    "gru": (ROOT / "scripts" / "bench_models" / "gru.h5", 1_000),
    "cnn": (ROOT / "scripts" / "bench_models" / "cnn.h5", 1_000),
}
CONVERT = "import sys; from konverter import konvert; konvert(sys.argv[1], sys.argv[2], force=True)"


def convert_with(source: Path, model: Path, out: Path) -> None:
    """Convert with the Konverter whose package lies in `source` (a checkout), in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(source))
    subprocess.run([sys.executable, "-c", CONVERT, str(model), str(out)], check=True, env=env, cwd=source)


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs(module, n: int) -> np.ndarray:
    shape = tuple(8 if d is None else d for d in module.INPUT_SHAPE[1:])
    return np.random.default_rng(0).normal(size=(n,) + shape).astype(np.float32)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the 'before' version")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--singles", type=int, default=1000)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="konverter-versions-"))
    base = scratch / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base], check=True)
    try:
        print(f"before: {args.base}, after: this checkout; medians of {args.repeats} interleaved repeats")
        print(f"{'model':<10} {'case':<12} {'before':>11} {'after':>11} {'after/before':>13}")
        for name in args.models:
            model, batch = MODELS[name]
            old, new = scratch / f"{name}_before.py", scratch / f"{name}_after.py"
            convert_with(base, model, old)
            convert_with(ROOT, model, new)
            modules = {"before": load(old), "after": load(new)}
            x = inputs(modules["after"], batch)
            singles = x[: args.singles]
            cases = {
                "batch": lambda m, x=x: m.predict(x),
                "x[i:i+1]": lambda m, s=singles: [m.predict(s[i : i + 1]) for i in range(len(s))],
                "x[i]": lambda m, s=singles: [m.predict(s[i]) for i in range(len(s))],
            }
            for case, run in cases.items():
                times: dict = {"before": [], "after": []}
                for m in modules.values():
                    run(m)  # warm up
                for r in range(args.repeats):
                    order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                    for key in order:
                        times[key].append(timed(run, modules[key]))
                ratio = statistics.median(a / b for a, b in zip(times["after"], times["before"]))
                per = len(singles) if case != "batch" else 1
                before, after = (statistics.median(times[k]) / per for k in ("before", "after"))
                print(f"{name:<10} {case:<12} {before * 1e6:>9.1f}us {after * 1e6:>9.1f}us {ratio:>12.3f}x")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
