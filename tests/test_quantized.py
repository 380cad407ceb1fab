"""Quantized Keras 3 models (int8, int4) and the dtype policies Konverter refuses (issue 12).

Fixtures: scripts/fixtures_quantized.py (real Keras 3.15). tests/fixtures/quantized/ holds the models that
convert, tests/fixtures/quantized/refused/ those that are refused, each with Keras's outputs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, check_all_modes, convert_and_import, edit_keras_config, load_reference

from konverter import BadModelFile, UnsupportedModel, konvert
from konverter.cli import main
from konverter.h5reader import read_model
from konverter.layers import CONVERTERS, Layer, Tensor
from konverter.layers.quantized import abs_max_quantize, policy_refusal, unpack_int4

QUANTIZED = FIXTURES / "quantized"
REFUSED = QUANTIZED / "refused"
REFERENCES = sorted(QUANTIZED.glob("*.npz"))


def model_file(npz):
    return next(p for p in npz.parent.glob(npz.stem + ".*") if p.suffix != ".npz")


# ----------------------------------------------------------------------------- Keras's outputs
@pytest.mark.parametrize("npz", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_quantized_model_matches_keras(npz, tmp_path):
    """Batch, batch of 1 and unbatched, and the kernels stay integers in the generated file."""
    module = convert_and_import(model_file(npz), tmp_path)
    xs, ys = load_reference(npz)
    check_all_modes(module, xs, ys, npz.stem)
    if "float32" not in npz.stem:
        stored = re.findall(r"\(\d+, '([<|][a-z]\d)', ", (tmp_path / f"{model_file(npz).stem}.py").read_text())
        assert "|i1" in stored, f"no int8 array among the stored weights {stored}"


def test_the_quantized_arithmetic_is_matched_not_a_dequantized_float_model():
    """Keras quantizes the activations too: the dequantized float model misses its outputs."""
    model = read_model(QUANTIZED / "mlp_int8__k3keras.keras")
    (x,), (want,) = load_reference(QUANTIZED / "mlp_int8__k3keras.npz")
    h = x
    for i, weights in enumerate(model.weights.values()):  # .keras order: kernel, (bias), kernel_scale
        kernel, scale, bias = weights[0], weights[-1], (weights[1] if len(weights) == 3 else 0.0)
        h = h @ (kernel.astype(np.float32) / scale) + bias
        h = np.maximum(h, 0.0) if i == 0 else h
    h = np.exp(h - h.max(axis=-1, keepdims=True))
    h /= h.sum(axis=-1, keepdims=True)
    with pytest.raises(AssertionError):
        assert_close(h, want, "dequantized")


def test_weights_are_stored_quantized_so_the_file_is_4x_and_8x_smaller(tmp_path):
    """A 256x256 Dense as float32, int8 and int4 (sub-channel, Keras's default): the stored weights (the
    "#:" lines at the end of each generated file; the code, a fixed ~15 KB, is not what shrinks)."""
    sizes, stored = {}, {}
    for mode in ("float32", "int8", "int4"):
        out = konvert(QUANTIZED / f"size_{mode}__k3keras.keras", tmp_path / f"{mode}.py")
        sizes[mode] = out.stat().st_size
        stored[mode] = sum(len(line) for line in out.read_text().splitlines() if line.startswith("#:"))
    assert stored["float32"] >= 3.8 * stored["int8"], stored  # int8 kernel plus float32 scales: 3.9x
    assert stored["float32"] >= 7.0 * stored["int4"], stored  # two per byte plus group scales: 7.2x
    assert sizes["float32"] >= 3.5 * sizes["int8"] and sizes["float32"] >= 5.5 * sizes["int4"], sizes


# ----------------------------------------------------------------------------- the NumPy functions
def test_unpack_int4_reads_keras_packing():
    # The examples of keras.quantizers.pack_int4's docstring (axis=1: along the last axis).
    packed = np.array([[125, 2], [24, 0]], dtype=np.int8)
    assert unpack_int4(packed, 3).tolist() == [[-3, 7, 2], [-8, 1, 0]]
    assert unpack_int4(packed, 4).tolist() == [[-3, 7, 2, 0], [-8, 1, 0, 0]]
    every = np.arange(-128, 128, dtype=np.int16).astype(np.int8)[None, :]
    low, high = unpack_int4(every, 512)[0, 0::2], unpack_int4(every, 512)[0, 1::2]
    assert low.min() == high.min() == -8 and low.max() == high.max() == 7
    assert np.array_equal(((high.astype(np.int16) & 15) << 4 | (low.astype(np.int16) & 15)).astype(np.int8), every[0])


def test_abs_max_quantize_rounds_half_to_even_and_clips_in_float32():
    x = np.array([[127.0, 63.5, -0.5, 1.5, -2.5], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    q, scale = abs_max_quantize(x, -1, -127, 127, 1e-7)
    assert scale.dtype == np.float32 and scale.shape == (2, 1)
    assert scale[0, 0] == np.float32(127) / (np.float32(127) + np.float32(1e-7))
    assert q[0].tolist() == [127.0, 64.0, -0.0, 2.0, -2.0]
    assert q[1].tolist() == [0.0] * 5 and scale[1, 0] == np.float32(127) / np.float32(1e-7)
    q, _ = abs_max_quantize(np.array([[-10.0, 4.0]], dtype=np.float32), -1, -50, 90, 0.0)
    assert q.tolist() == [[-50.0, 36.0]]  # the upper bound sets the scale (9), the lower one clips


# ----------------------------------------------------------------------------- refusals
def test_float8_is_refused_naming_each_layer_and_the_mode(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main([str(REFUSED / "mlp_float8__k3keras.keras"), "-o", str(tmp_path / "m.py")])
    err = capsys.readouterr().err
    assert done.value.code == 4
    assert err.count("float8 quantization not supported") == 3 and "(Dense:" in err
    assert not (tmp_path / "m.py").exists()


def test_quantization_on_a_mixed_policy_is_refused(tmp_path):
    with pytest.raises(UnsupportedModel, match=r"int8 quantization on the mixed_bfloat16 policy not supported"):
        konvert(REFUSED / "mlp_int8_on_bfloat16__k3keras.keras", tmp_path / "m.py")


def _set_policy(policy: dict, config_key: str = "dtype", value=None):
    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"][config_key] = value if value is not None else policy

    return edit


@pytest.mark.parametrize(
    ("dtype", "why"),
    [
        ({"class_name": "QuantizedDTypePolicy", "config": {"mode": "int4", "source_name": "float32"}}, "before 3.14"),
        ({"class_name": "GPTQDTypePolicy", "config": {"mode": "gptq/4/128", "source_name": "float32"}}, "gptq/4/128"),
        ({"class_name": "AWQDTypePolicy", "config": {"mode": "awq/4/128", "source_name": "float32"}}, "awq/4/128"),
        ({"class_name": "Int4DTypePolicy", "config": {"mode": "int4/0", "source_name": "float32"}}, "block size 0"),
    ],
)
def test_other_quantization_modes_are_refused(tmp_path, dtype, why):
    model = edit_keras_config(QUANTIZED / "mlp_int4__k3keras.keras", tmp_path / "m.keras", _set_policy(dtype))
    with pytest.raises(UnsupportedModel, match=re.escape(why)):
        konvert(model, tmp_path / "m.py")


def test_a_custom_activation_quantizer_is_refused(tmp_path):
    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["quantization_config"]["config"]["activation_quantizer"]["class_name"] = "MyQuantizer"

    model = edit_keras_config(QUANTIZED / "mlp_int8__k3keras.keras", tmp_path / "m.keras", edit)
    with pytest.raises(UnsupportedModel, match="activation quantizer MyQuantizer not supported"):
        konvert(model, tmp_path / "m.py")


def test_an_int8_policy_on_float_weights_is_a_bad_file(tmp_path):
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int8_from_float32"}}
    model = edit_keras_config(
        FIXTURES / "core" / "dense_relu__k3keras.keras", tmp_path / "m.keras", _set_policy(policy)
    )
    with pytest.raises(BadModelFile, match="weight arrays"):
        konvert(model, tmp_path / "m.py")


def test_policy_forms_of_every_writer():
    keras3 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}
    tf_keras = {"module": "keras.mixed_precision", "class_name": "Policy", "config": {"name": "mixed_bfloat16"}}
    quantized = {"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8", "source_name": "float64"}}
    assert "mixed_float16 not supported" in policy_refusal("Dense", {"dtype": keras3})
    assert "mixed_bfloat16 not supported" in policy_refusal("Conv2D", {"dtype": tf_keras})
    assert "float64 not supported" in policy_refusal("LSTM", {"dtype": "float64"})
    assert "int8 quantization on the float64 policy" in policy_refusal("Dense", {"dtype": quantized})
    assert "int8 quantization of a Conv2D layer" in policy_refusal("Conv2D", {"dtype": "int8_from_float32"})
    assert "LoRA on an int8 quantized layer" in policy_refusal("Dense", {"dtype": "int8_from_float32", "lora_rank": 2})
    for fine in (None, "float32", "int32", {"class_name": "DTypePolicy", "config": {"name": "float32"}}):
        assert policy_refusal("Dense", {"dtype": fine}) == ""


# ----------------------------------------------------------------------------- dtype policies
POLICY_MODELS = sorted(REFUSED.glob("policy_*.npz"))


@pytest.mark.parametrize("npz", POLICY_MODELS, ids=[p.stem for p in POLICY_MODELS])
def test_other_precision_policies_are_refused_because_float32_would_not_match(npz, tmp_path):
    """mixed_float16, mixed_bfloat16, float64 (tf.keras and Keras 3, .h5 and .keras): exit 4 naming each
    layer and the policy; and the reason is real: the same model in float32 misses Keras's outputs."""
    policy = npz.stem.split("__")[0].removeprefix("policy_")
    with pytest.raises(UnsupportedModel) as refused:
        konvert(model_file(npz), tmp_path / "m.py")
    assert str(refused.value).count(f"dtype policy {policy} not supported") == 2
    assert not (tmp_path / "m.py").exists()
    (x,), (want,) = load_reference(npz)
    (k0, b0), (k1, b1) = (w for w in read_model(model_file(npz)).weights.values() if w)
    f32 = [a.astype(np.float32) for a in (x, k0, b0, k1, b1)]
    with np.errstate(over="ignore", invalid="ignore"):
        got = (f32[0] @ f32[1] + f32[2]) @ f32[3] + f32[4]
    with pytest.raises(AssertionError):
        assert_close(got, want.astype(np.float64), policy)


def test_an_input_with_a_mixed_dtype_is_refused(tmp_path):
    def edit(config):
        config["config"]["layers"][0]["config"]["dtype"] = "mixed_float16"

    model = edit_keras_config(QUANTIZED / "mlp_int8__k3keras.keras", tmp_path / "m.keras", edit)
    with pytest.raises(UnsupportedModel, match="input dtype mixed_float16"):
        konvert(model, tmp_path / "m.py")


def _int4_dense(weights: list) -> Layer:
    policy = {"class_name": "Int4DTypePolicy", "config": {"mode": "int4/4", "source_name": "float32"}}
    config = {"name": "d", "units": 3, "use_bias": True, "dtype": policy}
    return Layer("d", "Dense", config, weights, 3, [Tensor((6,))], {})


def test_quantized_weights_are_checked():
    """Groups of 4 rows over 6 inputs: kernel (6, 2) packed, scale and zero (2, 3), g_idx (6,)."""
    kernel, bias = np.zeros((6, 2), np.int8), np.zeros(3, np.float32)
    scale, zero, g_idx = np.ones((2, 3), np.float32), np.zeros((2, 3), np.int8), np.array([0, 0, 0, 0, 1, 1.0])
    assert CONVERTERS["Dense"](_int4_dense([kernel, bias, scale, zero, g_idx])).shape == (3,)
    assert CONVERTERS["Dense"](_int4_dense([bias, kernel, scale, zero, g_idx])).shape == (3,)  # Keras 3 .h5 order
    bad = [
        [kernel, bias, scale, zero, g_idx + 1],  # a group that does not exist
        [kernel, bias, scale, zero, g_idx * np.nan],
        [kernel.astype(np.int16), bias, scale, zero, g_idx],
        [kernel, bias, scale, zero.astype(np.float32), g_idx],
        [kernel[:, :1], bias, scale, zero, g_idx],
        [kernel, bias, scale[:1], zero, g_idx],
        [kernel, bias, scale, zero],
    ]
    for weights in bad:
        with pytest.raises(BadModelFile):
            CONVERTERS["Dense"](_int4_dense(weights))
