"""The generated file under stress (issue 7, part 5): extreme inputs, NaN, and several threads at once.

tests/stress_refs/<name>__<fmt>.npz holds extreme inputs (±1e4, ±inf, NaN, ±1e30, mixtures) for every
core fixture model and the outputs real Keras gave (scripts/fixtures_stress.py).
"""

from __future__ import annotations

import math
import sys
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FIXTURES,
    as_output_list,
    assert_close,
    convert_and_import,
    import_file,
    load_reference,
    model_file_for,
)

from konverter import konvert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_contract_cases as cases  # noqa: E402

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


# ----------------------------------------------------------------------------- import memory (issue 15, part 3)
IMPORT_BOUND = 8 << 20  # bytes NumPy and Python may allocate while importing a small generated file


def _import_peak(path: Path) -> int:
    tracemalloc.start()
    try:
        import_file(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("side", [4000, 20000])
def test_import_memory_does_not_follow_a_declared_input_size(tmp_path, side):
    """GlobalAveragePooling3D over a side x side x 1 input declared in a few-KB file: import stays small."""
    model = cases.declared_input(cases.GLOBAL_POOLING, tmp_path / "gap.h5", [None, side, side, 1, 3], "input_29")
    generated = konvert(model, tmp_path / "gap.py")
    assert generated.stat().st_size < 64 << 10
    assert _import_peak(generated) < IMPORT_BOUND


@pytest.mark.parametrize("side, stride", [(3000, 30), (10000, 100)])
def test_a_gathered_convolution_index_takes_its_own_size_not_the_inputs(tmp_path, side, stride):
    # 100 x 100 windows of 3 x 3 taps over a declared side x side image: an index of 90,000 entries.
    model = cases.declared_input(cases.CNN, tmp_path / "conv.h5", [None, side, side, 1], strides=[stride, stride])
    generated = konvert(model, tmp_path / "conv.py")
    assert "gather_index(" in generated.read_text()
    assert _import_peak(generated) < IMPORT_BOUND


def test_gather_index_is_the_window_positions_of_a_sample():
    from konverter.layers.conv import gather_index, sliding_windows

    rng = np.random.default_rng(0)
    for _ in range(200):
        nd = int(rng.integers(1, 4))
        ks, dil, st = (tuple(int(v) for v in rng.integers(1, high, nd)) for high in (4, 3, 4))
        size = tuple(int((k - 1) * d + 1 + rng.integers(0, 6)) for k, d in zip(ks, dil))
        channels = int(rng.integers(1, 4))
        ids = np.arange(math.prod(size) * channels).reshape((1,) + size + (channels,))
        want = sliding_windows(ids, ks, st, dil, "valid", 0).reshape(-1, math.prod(ks) * channels)
        assert np.array_equal(gather_index(size, channels, ks, st, dil), want), (size, channels, ks, st, dil)


def test_gather_indices_of_a_whole_file_stay_within_a_budget():
    # 40 narrow convolutions with different geometries, each index ~0.4M entries: 16M together.
    from konverter.layers import conv
    from konverter.layers.base import Const, Derived, Op, Tensor

    ops = []
    for k in range(40):
        side = 200 + k  # (side - 2)^2 windows x 9 taps
        x, y = Tensor((side, side, 1)), Tensor((side - 2, side - 2, 1))
        kernel, bias = Const(np.ones((9, 1), np.float32)), Const(np.zeros(1, np.float32))
        options = dict(kernel_size=(3, 3), strides=(1, 1), dilation=(1, 1), padding="valid", channels_first=False)
        ops.append(Op(conv.conv, (x, kernel, bias), options, (y,)))
    conv.gather_narrow_convs(ops, [])
    indices = [a for op in ops for a in op.args if isinstance(a, Derived)]
    assert 0 < len(indices) < 40, "the first convolutions are gathered, the others keep the strided im2col"
    entries = sum(math.prod(a.args[0][i] - 2 for i in range(2)) * 9 for a in indices)
    assert entries <= conv.GATHER_TOTAL_ENTRIES


def test_large_maps_build_their_mean_weights_per_call():
    from konverter.layers import pooling

    x = np.random.default_rng(2).normal(size=(2, 40, 30, 3)).astype(np.float32)
    for channels_first, axes in ((False, (1, 2)), (True, (2, 3))):
        want = x.mean(axis=axes, dtype=np.float64)
        assert_close(pooling.global_average_product(x, None, channels_first), want, "weights built per call")
        weights = pooling.mean_weights(1200 if not channels_first else 90)
        assert_close(pooling.global_average_product(x, weights, channels_first), want, "weights from import")
