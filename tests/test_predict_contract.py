"""The generated file's contract: shapes, dtypes, errors, determinism, NumPy-only imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, as_output_list, assert_close, convert_and_import, load_reference, model_file_for
from test_perf_codegen import build, write_module

from konverter import konvert
from konverter.graph import ModelInput
from konverter.layers import core, reshaping
from konverter.layers.base import Const, Op, Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_contract_cases as cases  # noqa: E402

DENSE = FIXTURES / "core" / "dense_relu__k3keras.keras"
SEQ3D = FIXTURES / "core" / "sequence_layers__k2h5.h5"


@pytest.fixture(scope="module")
def dense_module(tmp_path_factory):
    return convert_and_import(DENSE, tmp_path_factory.mktemp("dense"))


def test_nested_list_and_int_inputs(dense_module):
    xs, ys = load_reference(DENSE.with_suffix(".npz"))
    assert_close(dense_module.predict(xs[0].tolist()), ys[0], "nested list batch")
    assert_close(dense_module.predict(xs[0][0].tolist()), ys[0][0], "nested list sample")
    ints = np.arange(8, dtype=np.int64)
    assert_close(dense_module.predict(ints), dense_module.predict(ints.astype(np.float32)), "int64 input")
    assert dense_module.predict(xs[0]).dtype == np.float32


@pytest.mark.parametrize("shape", [(), (2, 3, 8), (7,), (3, 7), (1, 1, 1, 8)])
def test_wrong_shapes_raise_value_error_naming_the_expected_shape(dense_module, shape):
    with pytest.raises(ValueError, match=r"\(8,\)"):
        dense_module.predict(np.zeros(shape, dtype=np.float32))


def test_constants_describe_the_model(dense_module):
    assert dense_module.INPUT_SHAPE == (None, 8)
    assert dense_module.OUTPUT_SHAPE == (None, 4)
    assert dense_module.INPUT_DTYPES == ("float32",)


def test_three_d_input_unbatched_and_batched(tmp_path):
    module = convert_and_import(SEQ3D, tmp_path)
    xs, ys = load_reference(SEQ3D.with_suffix(".npz"))
    assert module.INPUT_SHAPE == (None, 4, 5)
    assert module.predict(xs[0][0]).shape == ys[0][0].shape
    assert module.predict(xs[0][:1]).shape == ys[0][:1].shape


def test_same_model_same_bytes(tmp_path):
    a = konvert(DENSE, tmp_path / "a.py").read_bytes()
    b = konvert(DENSE, tmp_path / "b.py").read_bytes()
    assert a == b


def test_generated_file_imports_only_numpy_and_stdlib(tmp_path):
    source = konvert(FIXTURES / "core" / "activations_b__k3keras.keras", tmp_path / "m.py").read_text()
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"numpy", "base64", "math"}, imported


def test_weights_are_read_only(dense_module):
    # Every array the module holds: the weights (named after their layers) and their views.
    weights = [v for v in vars(dense_module).values() if isinstance(v, np.ndarray)]
    assert weights and all(not w.flags.writeable for w in weights)


def test_softmax_is_per_sample_not_per_batch(tmp_path):
    # The original tool normalised over the batch axis; each row must sum to one on its own.
    module = convert_and_import(FIXTURES / "core" / "softmax_1in4__k2h5.h5", tmp_path)
    x = np.linspace(-50, 50, 11, dtype=np.float32)[:, None]
    y = module.predict(x)
    assert y.shape == (11, 4)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(module.predict(x[3]), y[3], rtol=1e-6)


@pytest.mark.parametrize("path", [FIXTURES / "core" / "phone__k2h5.h5", SEQ3D], ids=["dense-chain", "general"])
def test_predict_silences_fp_warnings_and_restores_the_callers_state(tmp_path, path):
    import warnings

    module = convert_and_import(path, tmp_path)
    shape = tuple(d for d in module.INPUT_SHAPE[1:])
    x = np.full(shape, np.inf, dtype=np.float32)
    x.flat[0] = -np.inf
    with np.errstate(all="raise"):
        before = np.geterr()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            module.predict(x)  # inf - inf inside: no FloatingPointError, no RuntimeWarning
            module.predict(np.stack([x, x]))
        assert np.geterr() == before  # the caller's own setting is back


def test_fp_state_fallback_is_the_public_errstate():
    from konverter import runtime

    with np.errstate(all="warn"):
        state = runtime.errstate_enter(None)
        try:
            assert set(np.geterr().values()) == {"ignore"}
        finally:
            runtime.errstate_exit(state)
        assert np.geterr()["invalid"] == "warn"


# ----------------------------------------------------------------------------- every fixture model (issue 15, part 6)
# Every fixture model that Keras's outputs were stored for (the others are there to be refused).
MODELS = sorted(model_file_for(p) for p in FIXTURES.glob("*/*.npz") if p.parent.name != "bad")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each fixture model converted and imported once for the tests below."""
    folder = tmp_path_factory.mktemp("contract")
    cache: dict = {}

    def get(path):
        if path not in cache:
            (folder / path.parent.name).mkdir(exist_ok=True)
            cache[path] = convert_and_import(path, folder / path.parent.name)
        return cache[path]

    return get


def sample_batch(module, path, n: int = 2) -> list:
    """n samples per input: the stored Keras inputs where there are any, else random data of the declared shapes."""
    npz = path.with_suffix(".npz")
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            if "x0" in data.files:
                return [np.ascontiguousarray(data[f"x{i}"][:n]) for i in range(len(module.INPUT_SHAPES))]
            if "x" in data.files:  # stateful fixtures: (calls, batch, ...)
                return [np.ascontiguousarray(data["x"][0][:n])]
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 2, (n,) + tuple(3 if d is None else d for d in shape[1:])).astype(dtype)
        for shape, dtype in zip(module.INPUT_SHAPES, module.INPUT_DTYPES)
    ]


def keras_dtypes(path, count: int) -> list:
    """The dtype Keras gives each output: float32 for float models; preprocessing layers keep theirs
    (int64 lookups, uint8 images, str for an inverted StringLookup), as stored with the fixture."""
    npz = path.with_suffix(".npz")
    stored = []
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            stored = [data[f"y{k}"].dtype for k in range(count) if f"y{k}" in data.files]
    if len(stored) != count:
        return [np.dtype(np.float32)] * count
    return [np.dtype(np.float32) if d.kind == "f" else d for d in stored]


def same_dtype(got: np.dtype, want: np.dtype) -> bool:
    return got.kind == want.kind == "U" or got == want


def run(module, xs: list) -> list:
    if hasattr(module, "reset_states"):
        module.reset_states()
    return as_output_list(module, module.predict(*xs))


@pytest.mark.parametrize("path", MODELS, ids=[f"{p.parent.name}/{p.name}" for p in MODELS])
def test_zero_samples_give_an_empty_batch_of_the_right_shape(converted, path):
    module = converted(path)
    xs = sample_batch(module, path)
    full = run(module, xs)
    empty = run(module, [x[:0] for x in xs])
    assert len(empty) == len(full)
    for k, (e, f, want) in enumerate(zip(empty, full, keras_dtypes(path, len(full)))):
        assert e.shape == (0,) + f.shape[1:], f"output {k}: {e.shape}, expected {(0,) + f.shape[1:]}"
        assert same_dtype(e.dtype, want), f"output {k}: {e.dtype}, Keras gives {want}"


@pytest.mark.parametrize("path", MODELS, ids=[f"{p.parent.name}/{p.name}" for p in MODELS])
def test_outputs_are_float32_and_never_share_memory(converted, path):
    """float32 (or the dtype Keras gives a preprocessing output); never a view of the caller's input (also
    a float32 batch, used as it is), of another output, or of the state a stateful model carries."""
    module = converted(path)
    batch = sample_batch(module, path)
    for xs in (batch, [x[0] for x in batch], [x[:1] for x in batch]):
        outputs = run(module, xs)
        carried = [s for s in getattr(module, "_carried", [None])[0] or [] if isinstance(s, np.ndarray)]
        for k, (y, want) in enumerate(zip(outputs, keras_dtypes(path, len(outputs)))):
            assert same_dtype(y.dtype, want), f"output {k}: {y.dtype}, Keras gives {want}"
            assert not any(np.shares_memory(y, x) for x in xs), f"output {k} is a view of the input"
            assert not any(np.shares_memory(y, other) for other in outputs[:k]), f"output {k} shares memory"
            assert not any(np.shares_memory(y, s) for s in carried), f"output {k} is the carried state"


def test_layer_functions_no_fixture_reaches_take_an_empty_batch():
    from konverter.layers import conv, reshaping

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 5, 4)).astype(np.float32)
    kernel = rng.normal(size=(2, 3 * 3 * 2, 3)).astype(np.float32)  # 2 groups of 2 channels -> 2 x 3 filters
    options = dict(kernel_size=(3, 3), strides=(1, 1), dilation=(1, 1), padding="same", channels_first=False)
    full = conv.conv_grouped(x, kernel, None, **options)
    assert conv.conv_grouped(x[:0], kernel, None, **options).shape == (0,) + full.shape[1:]
    # Reshape((-1, 2)) over a sequence of unknown length: -1 is inferred per call.
    seq = rng.normal(size=(3, 5, 4)).astype(np.float32)
    assert reshaping.reshape_inferred(seq, (-1, 2)).shape == (3, 10, 2)
    assert reshaping.reshape_inferred(seq[:0], (-1, 2)).shape == (0, 10, 2)


# ----------------------------------------------------------------------------- results are the caller's own arrays
def _write(program, tmp_path):
    """The generated module and its source."""
    return write_module(program, tmp_path), (tmp_path / "m.py").read_text()


def test_an_identity_model_returns_a_copy_of_a_float32_input(tmp_path):
    # Dropout/GaussianNoise only: the output tensor is the input tensor.
    x = Tensor((3, 2))
    module, _ = _write(build([ModelInput("x", x)], [x], []), tmp_path)
    data = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    before = data.copy()
    for arg in (data, data[0], data[:1]):
        y = module.predict(arg)
        assert np.array_equal(y, arg) and not np.shares_memory(y, data)
        y[...] = -1.0
    assert np.array_equal(data, before)


def test_views_of_one_array_come_back_as_separate_arrays(tmp_path):
    # Outputs [dense, flatten(reshape(dense)), dense again]: three names for one block of memory.
    x, h, r, f = Tensor((4,)), Tensor((6,)), Tensor((2, 3)), Tensor((6,))
    kernel, bias = np.ones((4, 6), np.float32), np.zeros(6, np.float32)
    ops = [
        Op(core.dense, (x, Const(kernel), Const(bias)), {}, (h,)),
        Op(reshaping.reshape, (h,), {"target": (2, 3)}, (r,)),
        Op(reshaping.flatten, (r,), {}, (f,)),
    ]
    module, _ = _write(build([ModelInput("x", x)], [h, f, h], ops), tmp_path)
    a, b, c = module.predict(np.ones((5, 4), np.float32))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not (np.shares_memory(a, b) or np.shares_memory(a, c) or np.shares_memory(b, c))


def test_many_views_of_the_input_are_copied_in_linear_code(tmp_path):
    x = Tensor((4,))
    outs = [Tensor((4,)) for _ in range(200)]
    ops = [Op(reshaping.reshape, (x,), {"target": (4,)}, (t,)) for t in outs]
    module, source = _write(build([ModelInput("x", x)], outs, ops), tmp_path)
    data = np.ones((2, 4), np.float32)
    results = module.predict(data)
    assert len(results) == 200 and all(np.array_equal(y, data) for y in results)
    assert not any(np.shares_memory(y, data) for y in results)
    assert len({y.__array_interface__["data"][0] for y in results}) == 200
    assert source.count("may_share_memory") < 20  # not one check per pair of the 200 results


@pytest.mark.parametrize(
    "path",
    [FIXTURES / "conv" / "cnn_classifier__k3keras.keras", FIXTURES / "recurrent" / "benchmark_gru__k2h5.h5", DENSE],
)
def test_results_that_are_new_arrays_cost_no_check(tmp_path, path):
    source = konvert(path, tmp_path / "m.py").read_text()
    predict = source.split("\ndef predict(")[1].split("\ndef ")[0]
    assert "return" in predict and "may_share_memory" not in source and ".copy()" not in predict


# ----------------------------------------------------------------------------- what predict refuses, and how
@pytest.mark.parametrize(
    "bad, says",
    [
        (None, "got None"),
        ("0.5", "got the str '0.5'"),
        (b"\x00" * 64, "got the bytes"),
        ({"input_1": np.zeros(8)}, "got a dict"),
        ({0.5, 1.5}, "got an object of type set"),
        ([[0.0] * 8, [0.0] * 7], "not a rectangular array"),
        ([None] + [0.0] * 7, "got a list holding NoneType"),
        (["1"] * 8, "got a list of strings"),
        (np.array(["1"] * 8), "got an array of strings"),
        (np.ones(8, dtype=np.complex64), "got an array of dtype complex64"),
        (np.array([[1.0], "a"] + [0.0] * 6, dtype=object), "got an array holding list"),
        (np.zeros(8, dtype="M8[s]"), "got an array of dtype datetime64"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_what_is_not_numbers_is_a_value_error_saying_what_was_passed(dense_module, bad, says):
    with pytest.raises(ValueError, match=r"input '\w+': expected numbers.*\(8,\).*\(None, 8\)") as caught:
        dense_module.predict(bad)
    assert says in str(caught.value)
    assert len(str(caught.value)) < 300  # a short message, whatever the value's size


def test_numbers_in_any_container_are_accepted(dense_module):
    for numbers in (
        np.arange(8, dtype=object),  # e.g. pandas' .values of a mixed frame
        [np.float64(v) for v in range(8)],
        [True, False] + list(range(2, 8)),  # bool is an int
        np.arange(8, dtype=np.uint64),
        [2**70] + list(range(1, 8)),  # beyond int64: an object array of Python ints
    ):
        got = dense_module.predict(numbers)
        assert got.dtype == np.float32
        assert_close(got, dense_module.predict(np.array([float(v) for v in numbers], np.float32)), repr(numbers))


# ----------------------------------------------------------------------------- weights stored as integers, empty layers
@pytest.mark.parametrize("source", [cases.DENSE_H5, cases.DENSE_KERAS], ids=["h5", "keras"])
def test_integer_weights_give_float32_results(tmp_path, source):
    """int64/uint64 weights (Keras loads them into float32 variables) compute in float32 like any others."""
    ints = cases.integer_weights(source, tmp_path / f"ints{source.suffix}")
    module = convert_and_import(ints, tmp_path)
    twin = convert_and_import(cases.float_twin(ints, tmp_path / f"twin{source.suffix}"), tmp_path)
    x = np.random.default_rng(4).normal(size=(5, 8)).astype(np.float32)
    for arg in (x, x[0], x[:1], x.astype(np.float64), x[:0]):
        got = module.predict(arg)
        assert got.dtype == np.float32
        assert_close(got, twin.predict(arg), "integer weights vs the same values as float32")


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_float_inputs_of_any_width_are_computed_in_float32(tmp_path, dtype):
    # Keras casts floating inputs to its float32 compute dtype (Dense, Reshape, Dropout alike).
    module = convert_and_import(cases.input_dtype(cases.DENSE_H5, tmp_path / "m.h5", dtype), tmp_path)
    assert module.INPUT_DTYPES == ("float32",)
    x = np.random.default_rng(5).normal(size=(3, 8))
    for arg in (x, x[0], x.astype(dtype)):
        got = module.predict(arg)
        assert got.dtype == np.float32
        assert np.array_equal(got, module.predict(np.asarray(arg).astype(np.float32)))


@pytest.mark.parametrize("units", [(0, 0), (16, 0), (0, 4)])
def test_dense_layers_without_units_convert_and_run(tmp_path, units):
    # tf-keras allows Dense(units=0) (Keras 3 refuses it): the outputs are empty, or a bias alone.
    module = convert_and_import(cases.dense_units(tmp_path / "empty.h5", *units), tmp_path)
    x = np.ones((3, 8), np.float32)
    assert module.predict(x).shape == (3, units[1])
    assert module.predict(x[0]).shape == (units[1],)
    assert module.predict(x[:0]).shape == (0, units[1])
    assert module.predict(x).dtype == np.float32
