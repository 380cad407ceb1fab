"""The generated file's contract: shapes, dtypes, errors, determinism, NumPy-only imports."""

from __future__ import annotations

import ast

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, convert_and_import, load_reference

from konverter import konvert

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
