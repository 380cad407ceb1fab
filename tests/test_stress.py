"""The generated file under stress (issue 7, part 5): extreme inputs, NaN, and several threads at once.

tests/stress_refs/<name>__<fmt>.npz holds extreme inputs (±1e4, ±inf, NaN, ±1e30, mixtures) for every
core fixture model and the outputs real Keras gave (scripts/fixtures_stress.py).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, as_output_list, assert_close, convert_and_import, load_reference, model_file_for

REFS = sorted((Path(__file__).parent / "stress_refs").glob("*.npz"))
NUMPY_DEFAULT_ERRSTATE = {"divide": "warn", "over": "warn", "invalid": "warn", "under": "ignore"}


def _model_for(ref: Path) -> Path:
    return model_file_for(FIXTURES / "core" / ref.name)


def test_every_core_model_has_stress_references():
    # The four formats scripts/fixtures_stress.py writes with the fixture virtualenv's Keras; the
    # older writers' variants (k22*, tf214*, k31*) share the same layer math and are not repeated.
    main_formats = ("__k2h5", "__k2keras", "__k3h5", "__k3keras")
    core = {p.stem for p in (FIXTURES / "core").glob("*.npz") if p.stem.endswith(main_formats)}
    assert core and core == {p.stem for p in REFS}


@pytest.mark.parametrize("ref", REFS, ids=[p.stem for p in REFS])
def test_extreme_inputs_match_keras_without_warnings(ref, tmp_path):
    module = convert_and_import(_model_for(ref), tmp_path)
    xs, ys = load_reference(ref)
    for i in range(len(xs[0])):
        sample = [x[i] for x in xs]
        keras = [y[i] for y in ys]
        keras_gives_numbers = not any(np.isnan(k).any() for k in keras)
        with warnings.catch_warnings(), np.errstate(**NUMPY_DEFAULT_ERRSTATE):
            # Where Keras gives a number (finite or infinite), so must we, and silently.
            warnings.simplefilter("error" if keras_gives_numbers else "ignore")
            got = as_output_list(module, module.predict(*sample))
        # TensorFlow's min/max (inside Keras 3's clipped ReLU) drop a NaN made from an infinite input and give
        # a number; a NaN there is not wrong. With finite inputs every value must match.
        special_input = any(not np.isfinite(s).all() for s in sample)
        for k, (g, y) in enumerate(zip(got, keras)):
            label = f"{ref.stem} sample {i} output {k}"
            finite = np.isfinite(y) & ~(special_input & np.isnan(g))
            assert_close(g[finite], y[finite], label)
            assert np.array_equal(g[np.isinf(y)], y[np.isinf(y)]), f"{label}: infinities differ"
            assert np.isnan(g[np.isnan(y)]).all(), f"{label}: Keras gives NaN, we give a number"


@pytest.mark.parametrize("name", ["dense_relu__k2h5", "benchmark__k3keras", "phone__k3h5", "identities__k2keras"])
def test_nan_in_nan_out(name, tmp_path):
    """A NaN sample never crashes predict, even with warnings as errors; without saturating layers it gives NaN.

    (Layers like hard_shrink map NaN to 0 in Keras too; test_extreme_inputs_match_keras covers those.)
    """
    module = convert_and_import(model_file_for(FIXTURES / "core" / f"{name}.npz"), tmp_path)
    xs, _ = load_reference(FIXTURES / "core" / f"{name}.npz")
    for sample in ([np.full_like(x[0], np.nan) for x in xs], [np.full_like(x[:3], np.nan) for x in xs]):
        with warnings.catch_warnings(), np.errstate(**NUMPY_DEFAULT_ERRSTATE):
            warnings.simplefilter("error")
            outputs = as_output_list(module, module.predict(*sample))
        for y in outputs:
            assert np.isnan(y).all()


@pytest.mark.parametrize("name", ["benchmark__k2h5", "activation_layers__k3keras", "sequence_layers__k2keras"])
def test_concurrent_predict_equals_sequential(name, tmp_path):
    """Several threads calling predict at once get exactly what sequential calls get."""
    module = convert_and_import(model_file_for(FIXTURES / "core" / f"{name}.npz"), tmp_path)
    xs, _ = load_reference(FIXTURES / "core" / f"{name}.npz")
    rng = np.random.RandomState(5)
    batches = [[rng.normal(size=(7,) + x.shape[1:]).astype(np.float32) for x in xs] for _ in range(8)]
    expected = [as_output_list(module, module.predict(*b)) for b in batches]
    results: dict = {}
    errors: list = []
    start = threading.Barrier(len(batches))

    def worker(k: int) -> None:
        try:
            start.wait()
            for _ in range(20):
                got = as_output_list(module, module.predict(*batches[k]))
                for g, e in zip(got, expected[k]):
                    if not np.array_equal(g, e):
                        results[k] = "differs"
            results.setdefault(k, "same")
        except Exception as err:  # reported below: a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {k: "same" for k in range(len(batches))}
