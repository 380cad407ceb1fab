"""The speed rewrites (konverter.optimize, the one-sample path, float16 storage) keep every result.

Timings are the benchmark's job (scripts/benchmark.py); these tests check correctness only.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, convert_and_import, import_file, load_reference

from konverter.codegen import generate
from konverter.graph import ModelInput, Program
from konverter.layers import activations as act
from konverter.layers import core, normalization, reshaping
from konverter.layers.base import Const, Op, Tensor
from konverter.rewrites import dense_chain, fold_affine, optimize, run_in_place

PHONE = FIXTURES / "core" / "phone__k2h5.h5"
rng = np.random.default_rng(42)


def weights(*shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def build(inputs: list, outputs: list, ops: list) -> Program:
    return Program("test", inputs, outputs, [f"out{i}" for i in range(len(outputs))], False, ops, len(ops))


def write_module(program: Program, tmp_path, name: str = "m", options: dict | None = None):
    path = tmp_path / f"{name}.py"
    path.write_text(generate(*optimize(program), "test.h5", "2.21.0", "0" * 64, "0.0", options), encoding="utf-8")
    return import_file(path)


def names(program: Program) -> list:
    return [op.fn.__name__ for op in program.ops]


# ----------------------------------------------------------------------------- in place: never on what others see
def test_activation_on_a_model_output_is_not_done_in_place(tmp_path):
    x, h, y = Tensor((4,)), Tensor((3,)), Tensor((3,))
    k, b = weights(4, 3), weights(3)
    ops = [Op(core.dense, (x, Const(k), Const(b)), {}, (h,)), Op(act.relu, (h,), {}, (y,))]
    program = build([ModelInput("x", x)], [h, y], ops)
    assert names(optimize(program)[0]) == ["dense", "relu"]
    module = write_module(program, tmp_path)
    data = weights(6, 4)
    first, second = module.predict(data)
    assert_close(first, data @ k + b, "dense output")
    assert_close(second, np.maximum(data @ k + b, 0.0), "relu output")
    assert (first < 0).any(), "the test needs negative values in the first output"


def test_value_with_two_readers_is_not_overwritten(tmp_path):
    x, h, r, t = Tensor((4,)), Tensor((3,)), Tensor((3,)), Tensor((3,))
    k, b = weights(4, 3), weights(3)
    ops = [
        Op(core.dense, (x, Const(k), Const(b)), {}, (h,)),
        Op(act.relu, (h,), {}, (r,)),
        Op(act.tanh, (h,), {}, (t,)),
    ]
    program = build([ModelInput("x", x)], [r, t], ops)
    assert names(optimize(program)[0]) == ["dense", "relu", "tanh"]
    module = write_module(program, tmp_path)
    data = weights(5, 4)
    got_r, got_t = module.predict(data)
    assert_close(got_r, np.maximum(data @ k + b, 0.0), "relu reader")
    assert_close(got_t, np.tanh(data @ k + b), "tanh reader")


def test_view_of_the_callers_input_is_never_modified(tmp_path):
    # flatten returns a view of the caller's array: an in-place ReLU on it would write into the input.
    x, flat, y = Tensor((2, 3)), Tensor((6,)), Tensor((6,))
    ops = [Op(reshaping.flatten, (x,), {}, (flat,)), Op(act.relu, (flat,), {}, (y,))]
    program = build([ModelInput("x", x)], [y], ops)
    assert names(optimize(program)[0]) == ["flatten", "relu"]
    module = write_module(program, tmp_path)
    data = weights(4, 2, 3)
    before = data.copy()
    for arg in (data, data[0], data[:1]):
        module.predict(arg)
    assert np.array_equal(data, before)


def test_dense_relu_is_fused_and_softmax_runs_in_place(tmp_path):
    x, h, r, z, s = Tensor((4,)), Tensor((5,)), Tensor((5,)), Tensor((3,)), Tensor((3,))
    k1, b1, k2, b2 = weights(4, 5), weights(5), weights(5, 3), weights(3)
    ops = [
        Op(core.dense, (x, Const(k1), Const(b1)), {}, (h,)),
        Op(act.relu, (h,), {}, (r,)),
        Op(core.dense, (r, Const(k2), Const(b2)), {}, (z,)),
        Op(act.softmax, (z,), {"axis": -1}, (s,)),
    ]
    program = build([ModelInput("x", x)], [s], ops)
    optimized, chain = optimize(program)
    assert names(optimized) == ["dense_relu", "dense", "softmax_inplace"]
    assert chain is not None and len(chain.steps) == 2
    module = write_module(program, tmp_path)
    data = weights(7, 4)
    expected = act.softmax(np.maximum(data @ k1 + b1, 0.0) @ k2 + b2, axis=-1)
    assert_close(module.predict(data), expected, "batch")
    assert_close(module.predict(data[2]), expected[2], "one sample")
    assert_close(module.predict(data[2:3]), expected[2:3], "batch of one")


def test_results_are_not_reused_buffers(tmp_path):
    module = convert_and_import(PHONE, tmp_path)
    xs, _ = load_reference(PHONE.with_suffix(".npz"))
    for call in (lambda i: module.predict(xs[0][i]), lambda i: module.predict(xs[0][i : i + 1])):
        first = call(0)
        kept = first.copy()
        call(1)
        call(2)
        assert np.array_equal(first, kept), "a later prediction changed an earlier result"


def test_large_batches_run_in_chunks_with_the_same_results(tmp_path):
    module = convert_and_import(PHONE, tmp_path)
    source = (tmp_path / "phone__k2h5.py").read_text()
    assert "for start in range(0, len(x0), 2048)" in source, "the phone model's batches are chunked by 2048 rows"
    data = np.random.default_rng(3).normal(size=(5000, 103)).astype(np.float32)
    chunked = module.predict(data)
    assert chunked.shape == (5000, 1)
    small = np.concatenate([module.predict(data[i : i + 7]) for i in range(0, len(data), 7)])
    assert_close(chunked, small, "chunked batch vs small batches")
    assert_close(chunked[4097:4101], np.stack([module.predict(x) for x in data[4097:4101]]), "rows vs samples")
    again = module.predict(data[:3000])
    assert_close(chunked[:3000], again, "a second, shorter batch through the same workspaces")
    assert np.shares_memory(chunked, again) is False


def test_inputs_of_any_form_are_left_alone(tmp_path):
    module = convert_and_import(PHONE, tmp_path)
    xs, ys = load_reference(PHONE.with_suffix(".npz"))
    x = xs[0]
    for given in (x.astype(np.float64), np.asfortranarray(x), x[:, ::-1][:, ::-1], x.tolist()):
        before = np.array(given, copy=True)
        assert_close(module.predict(given), ys[0], "converted input")
        assert np.array_equal(np.asarray(given), before)
    assert_close(module.predict(x[0].astype(np.float64)), ys[0][0], "float64 sample")
    assert_close(module.predict(x[0].tolist()), ys[0][0], "list sample")
    with pytest.raises(ValueError):
        module.predict(x[0][:-1])
    with pytest.raises(ValueError):
        module.predict(np.zeros((1, 102), np.float32))


# ----------------------------------------------------------------------------- folding
def _affine_program(before: bool, bias: bool, scale_as_kwargs: bool) -> tuple:
    x, mid, y = Tensor((4,)), Tensor((4,) if before else (3,)), Tensor((3,))
    k, b = weights(4, 3), weights(3)
    dense = (
        Op(core.dense, (None, Const(k), Const(b)), {}, None)
        if bias
        else Op(core.dense_no_bias, (None, Const(k)), {}, None)
    )
    n = 4 if before else 3
    if scale_as_kwargs:
        affine = Op(normalization.scale_shift, (None,), {"scale": 0.5, "shift": -1.25}, None)
        a, s = np.float32(0.5), np.float32(-1.25)
    else:
        a, s = weights(n) + 1.0, weights(n)
        affine = Op(normalization.scale_shift, (None, Const(a), Const(s)), {}, None)
    first, second = (affine, dense) if before else (dense, affine)
    first.args = (x,) + first.args[1:]
    first.outputs = (mid,)
    second.args = (mid,) + second.args[1:]
    second.outputs = (y,)

    def reference(data):
        if before:
            h = data * a + s
            return h @ k + (b if bias else 0.0)
        return (data @ k + (b if bias else 0.0)) * a + s

    return build([ModelInput("x", x)], [y], [first, second]), reference


@pytest.mark.parametrize("before", [False, True], ids=["dense-then-affine", "affine-then-dense"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kwargs", [False, True], ids=["arrays", "scalars"])
def test_affine_folds_into_dense(tmp_path, before, bias, kwargs):
    program, reference = _affine_program(before, bias, kwargs)
    folded = fold_affine(list(program.ops), program.outputs)
    assert [op.fn for op in folded] == [core.dense]
    module = write_module(program, tmp_path)
    data = weights(6, 4)
    assert_close(module.predict(data), reference(data), "folded")
    assert_close(module.predict(data[0]), reference(data)[0], "folded, one sample")


def test_affine_is_not_folded_into_a_dense_whose_output_is_also_read_elsewhere():
    x, h, y = Tensor((4,)), Tensor((3,)), Tensor((3,))
    ops = [
        Op(core.dense, (x, Const(weights(4, 3)), Const(weights(3))), {}, (h,)),
        Op(normalization.scale_shift, (h, Const(weights(3)), Const(weights(3))), {}, (y,)),
    ]
    assert [op.fn for op in fold_affine(list(ops), [h, y])] == [core.dense, normalization.scale_shift]


def test_affine_over_another_axis_is_not_folded():
    x, h, y = Tensor((2, 4)), Tensor((2, 3)), Tensor((2, 3))
    ops = [
        Op(core.dense, (x, Const(weights(4, 3)), Const(weights(3))), {}, (h,)),
        Op(normalization.scale_shift, (h, Const(weights(2, 1)), Const(weights(2, 1))), {}, (y,)),
    ]
    assert [op.fn for op in fold_affine(list(ops), [y])] == [core.dense, normalization.scale_shift]


def test_only_dense_chains_get_the_one_sample_path():
    x, flat, y = Tensor((2, 3)), Tensor((6,)), Tensor((2,))
    ops = [
        Op(reshaping.flatten, (x,), {}, (flat,)),
        Op(core.dense, (flat, Const(weights(6, 2)), Const(weights(2))), {}, (y,)),
    ]
    assert dense_chain(build([ModelInput("x", x)], [y], run_in_place(ops, [y])))[1] is None
    # sigmoid has no in-place variant: fine as the last step, not between two Dense layers
    x1, h, g, z = Tensor((3,)), Tensor((2,)), Tensor((2,)), Tensor((2,))
    middle = [
        Op(core.dense, (x1, Const(weights(3, 2)), Const(weights(2))), {}, (h,)),
        Op(act.sigmoid, (h,), {}, (g,)),
        Op(core.dense, (g, Const(weights(2, 2)), Const(weights(2))), {}, (z,)),
    ]
    assert dense_chain(build([ModelInput("x", x1)], [z], middle))[1] is None


@pytest.mark.parametrize(
    "fn, kwargs, reference",
    [
        (act.sigmoid, {}, lambda y: 1.0 / (1.0 + np.exp(-y))),
        (act.leaky_relu, {"negative_slope": 0.1}, lambda y: np.where(y > 0, y, 0.1 * y)),
        (act.log_softmax, {"axis": 1}, lambda y: y - np.log(np.sum(np.exp(y), axis=-1, keepdims=True))),
    ],
    ids=["sigmoid", "leaky_relu", "log_softmax"],
)
def test_chain_may_end_with_any_elementwise_activation(tmp_path, fn, kwargs, reference):
    x, h, r, z, out = Tensor((5,)), Tensor((300,)), Tensor((300,)), Tensor((3,)), Tensor((3,))
    k1, b1, k2, b2 = weights(5, 300), weights(300), weights(300, 3), weights(3)
    ops = [
        Op(core.dense, (x, Const(k1), Const(b1)), {}, (h,)),
        Op(act.relu, (h,), {}, (r,)),
        Op(core.dense, (r, Const(k2), Const(b2)), {}, (z,)),
        Op(fn, (z,), kwargs, (out,)),
    ]
    program = build([ModelInput("x", x)], [out], ops)
    assert optimize(program)[1] is not None
    module = write_module(program, tmp_path)
    data = weights(4000, 5)  # more rows than one chunk (2**19 // 300 -> 1024)
    expected = reference(np.maximum(data @ k1 + b1, 0.0) @ k2 + b2)
    assert_close(module.predict(data), expected, "batch")
    assert_close(module.predict(data[7]), expected[7], "one sample")
    assert_close(module.predict(data[7:8]), expected[7:8], "batch of one")
    assert_close(module.predict(data[7].tolist()), expected[7], "list")


# ----------------------------------------------------------------------------- threads
def test_concurrent_predictions_equal_sequential_ones(tmp_path):
    # The one-sample path reuses per-thread buffers: threads must never see each other's values.
    module = convert_and_import(FIXTURES / "core" / "benchmark__k2h5.h5", tmp_path)
    data = np.random.default_rng(0).normal(size=(64, 1)).astype(np.float32)
    modes = {
        "sample": lambda i: module.predict(data[i]),
        "batch of one": lambda i: module.predict(data[i : i + 1]),
        "batch": lambda i: module.predict(data[max(0, i - 5) : i + 1]),
    }
    expected = {(mode, i): call(i) for mode, call in modes.items() for i in range(len(data))}
    large = np.random.default_rng(1).normal(size=(2500, 1)).astype(np.float32)  # more than one chunk
    expected[("large batch", -1)] = module.predict(large)
    start = threading.Barrier(8)

    def worker(seed: int) -> list:
        start.wait()
        found = []
        for _ in range(3):
            for i in np.random.default_rng(seed).permutation(len(data)):
                for mode, call in modes.items():
                    found.append((mode, int(i), call(int(i))))
            found.append(("large batch", -1, module.predict(large)))
        return found

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for found in pool.map(worker, range(8)) for r in found]
    assert len(results) == 8 * 3 * (64 * 3 + 1)
    for mode, i, value in results:
        assert np.array_equal(value, expected[(mode, i)]), f"{mode} {i}"


# ----------------------------------------------------------------------------- float16 storage
def test_float16_file_is_half_the_size_and_close(tmp_path):
    full_dir, half_dir = tmp_path / "full", tmp_path / "half"
    full_dir.mkdir()
    half_dir.mkdir()
    full = convert_and_import(PHONE, full_dir)
    half = convert_and_import(PHONE, half_dir, options={"weights": "float16"})
    size_full = (full_dir / "phone__k2h5.py").stat().st_size
    size_half = (half_dir / "phone__k2h5.py").stat().st_size
    assert size_half < 0.55 * size_full
    xs, ys = load_reference(PHONE.with_suffix(".npz"))
    scale = float(np.max(np.abs(ys[0])))
    for got in (half.predict(xs[0]), half.predict(xs[0][0])[None], half.predict(xs[0][:1])):
        err = float(np.max(np.abs(got - ys[0][: len(got)])))
        assert err < 5e-3 * max(scale, 1.0), f"float16 storage error {err}"
        assert got.dtype == np.float32
    assert not np.array_equal(half.predict(xs[0]), full.predict(xs[0])), "float16 storage changed nothing"


def test_float16_keeps_float32_for_values_out_of_range(tmp_path):
    x, y = Tensor((2,)), Tensor((2,))
    k = np.array([[1.0e5, 0.5], [0.25, -2.0]], np.float32)
    program = build([ModelInput("x", x)], [y], [Op(core.dense_no_bias, (x, Const(k)), {}, (y,))])
    module = write_module(program, tmp_path, "half", {"weights": "float16"})
    assert "'<f4'" in (tmp_path / "half.py").read_text()
    assert_close(module.predict(np.array([1.0, 1.0], np.float32)), np.array([1.0e5 + 0.25, -1.5], np.float32))


def test_unknown_weight_storage_is_refused():
    x, y = Tensor((2,)), Tensor((2,))
    program = build([ModelInput("x", x)], [y], [Op(core.dense_no_bias, (x, Const(weights(2, 2))), {}, (y,))])
    with pytest.raises(ValueError, match="float16"):
        generate(*optimize(program), "t.h5", "2.21.0", "0" * 64, "0.0", {"weights": "int8"})


def test_float16_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from konverter.cli import app

    out = tmp_path / "m16.py"
    result = CliRunner().invoke(app, ["convert", str(PHONE), "-o", str(out), "--weights", "float16", "-q"])
    assert result.exit_code == 0, result.output
    assert "float16" in out.read_text()
    xs, ys = load_reference(PHONE.with_suffix(".npz"))
    assert np.max(np.abs(import_file(out).predict(xs[0]) - ys[0])) < 5e-3


def test_generated_text_is_deterministic():
    from konverter.convert import generate_source

    assert generate_source(PHONE)[0] == generate_source(PHONE)[0]
    assert generate_source(PHONE, {"weights": "float16"})[0] == generate_source(PHONE, {"weights": "float16"})[0]


def test_inline_copies_straight_numpy_bodies_and_refuses_the_rest():
    from konverter.codegen import inline
    from konverter.layers import activations, core

    lines = inline(core.dense_relu_into, ["h0", "_w0", "v1", "z1"], {}, None)
    assert lines == ["np.dot(h0, _w0, out=v1)", "np.maximum(v1, z1, out=v1)"]
    assert inline(core.dense_vector, ["h3", "_w3"], {}, "y") == ["y = np.dot(h3, _w3)"]
    assert inline(activations.softmax_inplace, ["y"], {"axis": -1}, "y") == [
        "y -= np.maximum.reduce(y, axis=-1, keepdims=True)",
        "np.exp(y, out=y)",
        "y /= np.add.reduce(y, axis=-1, keepdims=True)",
    ]
    assert inline(activations.sigmoid, ["y"], {}, "y") is None  # a local name: called, not inlined
    assert inline(core.dense_into, ["h0"], {}, None) is None  # wrong arity


def test_inlined_one_sample_path_matches_the_batch_path(tmp_path):
    from conftest import FIXTURES, convert_and_import

    path = FIXTURES / "core" / "name_order__k3keras.keras"  # tanh, relu, BatchNormalization: a Dense chain
    module = convert_and_import(path, tmp_path)
    assert "inlined" in open(module.__file__).read()
    x = np.random.RandomState(3).normal(size=(6, 6)).astype(np.float32)
    batch = module.predict(x)
    for i in range(len(x)):
        np.testing.assert_allclose(module.predict(x[i]), batch[i], rtol=1e-6, atol=1e-7)
