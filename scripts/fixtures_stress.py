"""Keras's outputs for extreme inputs (±1e4, ±inf, NaN, 1e30) on every core fixture model (issue 7, part 5).

For each tests/fixtures/core/<name>__<fmt>.(h5|keras) this loads the model with the Keras that wrote it
and stores tests/stress_refs/<name>__<fmt>.npz with x0.. (a batch of extreme samples) and y0.. (Keras's
outputs). tests/test_stress.py then checks that where Keras gives a number the generated file gives the
same number without a RuntimeWarning, and that NaN in gives NaN out without a crash.

Run with the fixture virtualenv: `cd scripts && /work/venv-keras/bin/python fixtures_stress.py`.
"""

from __future__ import annotations

import sys

import numpy as np
from fixturelib import FIXTURES, ROOT, _outputs, is_keras3, keras_for

OUT = ROOT / "tests" / "stress_refs"


def extreme_batch(shape: tuple, seed: int) -> np.ndarray:
    """Samples of one input: constants ±1e4 / ±inf / NaN / ±1e30, mixed signs, one inf or NaN among zeros."""
    size = int(np.prod(shape))
    rng = np.random.RandomState(seed)
    rows = [np.full(size, v) for v in (1e4, -1e4, np.inf, -np.inf, np.nan, 1e30, -1e30)]
    alternating = np.where(np.arange(size) % 2 == 0, 1e4, -1e4)
    rows.append(alternating)
    for special in (np.inf, -np.inf, np.nan):
        row = np.zeros(size)
        row[rng.randint(size)] = special
        rows.append(row)
    rows.append(rng.normal(size=size) * 1e4)
    return np.stack(rows).reshape((len(rows),) + shape).astype(np.float32)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for model_path in sorted((FIXTURES / "core").glob("*__k*")):
        if model_path.suffix not in (".h5", ".keras"):
            continue
        fmt = model_path.stem.split("__")[1]
        K = keras_for(fmt)
        model = (
            K.models.load_model(str(model_path), compile=False)
            if not is_keras3(K)
            else K.models.load_model(str(model_path), compile=False, safe_mode=True)
        )
        with np.load(model_path.with_suffix(".npz")) as ref:
            shapes = [ref[k].shape[1:] for k in sorted(ref.files) if k.startswith("x")]
        xs = [extreme_batch(shape, seed) for seed, shape in enumerate(shapes)]
        ys = _outputs(model, xs)
        arrays = {f"x{i}": x for i, x in enumerate(xs)}
        arrays.update({f"y{i}": y for i, y in enumerate(ys)})
        np.savez(OUT / f"{model_path.stem}.npz", **arrays)
        print(f"wrote {(OUT / model_path.stem).relative_to(ROOT)}.npz", file=sys.stderr)


if __name__ == "__main__":
    main()
