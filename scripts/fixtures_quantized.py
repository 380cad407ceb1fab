"""Fixtures for quantized Keras 3 models (`model.quantize`) and for non-float32 dtype policies.

Run with the fixture virtualenv: `.venv-keras/bin/python scripts/fixtures_quantized.py [--only NAME]`.

tests/fixtures/quantized/        models Konverter converts: Dense, EinsumDense, Embedding quantized by
                                 Keras 3 (int8; int4 sub-channel, its default; int4 per channel; weight-only
                                 and with an activation quantizer), in .keras and Keras 3 .h5, plus the
                                 same 256x256 Dense as float32, int8 and int4 for the file-size test.
tests/fixtures/quantized/refused/ models Konverter refuses, with Keras's outputs (the tests show that a
                                 float32 computation would not match them): mixed_float16, mixed_bfloat16 and
                                 float64 policies in every format, float8, int8 on a mixed_bfloat16 policy.
The float weights are randomized before quantizing (fixturelib.randomize would overwrite the scales).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from fixturelib import FIXTURES, ROOT, keras_for, rand, randomize, save

FAMILY = "quantized"
BATCH = 5


def mlp(K):
    x = K.Input((6,))
    y = K.layers.Dense(8, activation="relu")(x)
    y = K.layers.Dense(7, use_bias=False)(y)  # odd width: int4 packs a padding nibble
    y = K.layers.Dense(3, activation="softmax")(y)
    inputs = rand((BATCH, 6), 1)
    inputs[2] = 0.0  # a zero row: the activation scale is high / epsilon
    return K.Model(x, y), [inputs]


def dense_rank3(K):
    x = K.Input((3, 6))
    y = K.layers.Dense(5, activation="tanh")(x)  # per-row (batch, time) activation scales
    return K.Model(x, y), [rand((BATCH, 3, 6), 2)]


def einsum(K):
    seq = K.Input((3, 6), name="seq")
    flat = K.Input((6,), name="flat")
    y = K.layers.EinsumDense("abc,cde->abde", output_shape=(3, 2, 4), bias_axes="de")(seq)
    y = K.layers.EinsumDense("abcd,cde->abe", output_shape=(3, 5), bias_axes="e", activation="relu")(y)
    y = K.layers.EinsumDense("abc,cd->adb", output_shape=(4, 3))(y)  # output axes reordered, no bias
    y = K.layers.EinsumDense("abc,dc->abd", output_shape=(4, 2), bias_axes="d")(y)  # kernel (d, c)
    z = K.layers.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c")(flat)
    return K.Model([seq, flat], [y, z]), [rand((BATCH, 3, 6), 3), rand((BATCH, 6), 4)]


def embedding(K):
    ids = K.Input((4,), dtype="int32")
    y = K.layers.Embedding(12, 5)(ids)
    y = K.layers.Flatten()(y)
    y = K.layers.Dense(3)(y)
    x = np.random.RandomState(5).randint(0, 12, size=(BATCH, 4)).astype(np.int32)
    return K.Model(ids, y), [x]


def embedding_mask(K):
    # Sequential: a Functional model records Keras 3's mask as a NotEqual op node.
    model = K.Sequential([K.Input((5,), dtype="int32"), K.layers.Embedding(9, 4, mask_zero=True), K.layers.LSTM(3)])
    x = np.random.RandomState(6).randint(1, 9, size=(BATCH, 5)).astype(np.int32)
    x[1, 3:] = 0
    x[3, :] = 0
    return model, [x]  # LSTM reads the mask; Keras does not quantize it


def int8_weights_only(K):
    return K.quantizers.Int8QuantizationConfig(activation_quantizer=None)


def int4_per_channel(K):
    return K.quantizers.Int4QuantizationConfig(block_size=-1)


def int4_per_channel_inputs(K):
    return K.quantizers.Int4QuantizationConfig(block_size=-1, activation_quantizer=K.quantizers.AbsMaxQuantizer())


def int4_blocks(K):
    return K.quantizers.Int4QuantizationConfig(block_size=4)  # 6 or 8 rows: groups of 4, the last one short


def int8_narrow(K):
    # A non-default activation quantizer: another range and epsilon.
    return K.quantizers.Int8QuantizationConfig(
        activation_quantizer=K.quantizers.AbsMaxQuantizer(value_range=(-100, 90), epsilon=1e-3)
    )


BOTH = ("k3keras", "k3h5")
# Keras 3 .h5 lists the weights in another order (the bias first): the main modes suffice there.
H5_MODES = ("int8", "int4", "int4_per_channel")
# name -> (model builder, {suffix: quantization mode or config builder}, formats)
QUANTIZED = {
    "mlp": (
        mlp,
        {
            "int8": "int8",
            "int8_weights_only": int8_weights_only,
            "int8_narrow": int8_narrow,
            "int4": "int4",
            "int4_per_channel": int4_per_channel,
            "int4_per_channel_inputs": int4_per_channel_inputs,
            "int4_blocks": int4_blocks,
        },
        BOTH,
    ),
    "dense_rank3": (
        dense_rank3,
        {"int8": "int8", "int4": "int4", "int4_per_channel_inputs": int4_per_channel_inputs},
        BOTH,
    ),
    "einsum": (
        einsum,
        {
            "int8": "int8",
            "int8_weights_only": int8_weights_only,
            "int4": "int4",
            "int4_per_channel": int4_per_channel,
            "int4_per_channel_inputs": int4_per_channel_inputs,
            "int4_blocks": int4_blocks,
        },
        BOTH,
    ),
    "embedding": (
        embedding,
        {"int8": "int8", "int4": "int4", "int4_per_channel": int4_per_channel, "int4_blocks": int4_blocks},
        BOTH,
    ),
    "embedding_mask": (embedding_mask, {"int8": "int8", "int4": "int4"}, BOTH),
}


def quantize(K, model, how) -> None:
    if isinstance(how, str):
        model.quantize(how)
    else:
        model.quantize(config=how(K))


def build_quantized(only) -> None:
    for name, (build, modes, formats) in QUANTIZED.items():
        for suffix, how in modes.items():
            full = f"{name}_{suffix}"
            if only and full not in only and name not in only:
                continue
            for seed, fmt in enumerate(formats):
                if fmt == "k3h5" and suffix not in H5_MODES:
                    continue
                K = keras_for(fmt)
                K.utils.set_random_seed(1234 + seed)
                model, inputs = build(K)
                randomize(model, 1000 + seed)
                quantize(K, model, how)
                report(save(FAMILY, full, fmt, model, inputs))


def build_sizes(only) -> None:
    """The same 256x256 Dense as float32, int8 and int4 (.keras only): the generated files' sizes."""
    if only and "size" not in only:
        return
    for mode in ("float32", "int8", "int4"):
        K = keras_for("k3keras")
        K.utils.set_random_seed(7)
        x = K.Input((256,))
        model = K.Model(x, K.layers.Dense(256)(x))
        randomize(model, 7)
        if mode != "float32":
            model.quantize(mode)
        report(save(FAMILY, f"size_{mode}", "k3keras", model, [rand((2, 256), 7)]))


def policy_model(K, fmt, policy):
    if fmt.startswith("k2"):
        K.mixed_precision.set_global_policy(policy)
    else:
        K.config.set_dtype_policy(policy)
    try:
        x = K.Input((4,))  # the input stays float32 (Keras's floatx) under every policy
        model = K.Model(x, K.layers.Dense(3)(K.layers.Dense(8)(x)))
    finally:
        if fmt.startswith("k2"):
            K.mixed_precision.set_global_policy("float32")
        else:
            K.config.set_dtype_policy("float32")
    return model


def policy_inputs(model, policy: str) -> np.ndarray:
    """Random inputs; for float64 the last one near float32's limit and signed like the first kernel's
    fullest column: that hidden unit exceeds float32's range (inf there), not float64's."""
    inputs = rand((BATCH, 4), 8)
    if policy != "float64":
        return inputs
    kernel = np.asarray(model.layers[1].kernel, dtype=np.float64)
    column = np.argmax(np.abs(kernel).sum(axis=0))
    inputs[-1] = np.float32(3e38) * np.sign(kernel[:, column])
    return inputs


def build_refused(only) -> None:
    """Models Konverter refuses, with Keras's outputs for the tests that show why."""
    for policy in ("mixed_float16", "mixed_bfloat16", "float64"):
        name = f"policy_{policy}"
        if only and name not in only:
            continue
        for seed, fmt in enumerate(("k2h5", "k2keras", "k3h5", "k3keras")):
            K = keras_for(fmt)
            K.utils.set_random_seed(1234 + seed)
            model = policy_model(K, fmt, policy)
            randomize(model, 1000 + seed)
            path = save(f"{FAMILY}/refused", name, fmt, model, [policy_inputs(model, policy)])
            widen_bfloat16(path.with_suffix(".npz"))
            report(path)
    K = keras_for("k3keras")
    if not only or "float8" in only:
        model, inputs = mlp(K)
        randomize(model, 9)
        model.quantize("float8")
        report(save(f"{FAMILY}/refused", "mlp_float8", "k3keras", model, inputs))
    if not only or "int8_on_bfloat16" in only:
        K.config.set_dtype_policy("mixed_bfloat16")
        try:
            model, inputs = mlp(K)
        finally:
            K.config.set_dtype_policy("float32")
        randomize(model, 10)
        model.quantize("int8")
        report(save(f"{FAMILY}/refused", "mlp_int8_on_bfloat16", "k3keras", model, inputs))


def widen_bfloat16(npz) -> None:
    """bfloat16 outputs (saved as 2-byte voids) as float32, exactly: the high half of a float32's bits."""
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    if any(a.dtype.kind == "V" for a in arrays.values()):
        for k, a in arrays.items():
            if a.dtype.kind == "V" and a.dtype.itemsize == 2:
                arrays[k] = (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        np.savez(npz, **arrays)


def report(path) -> None:
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the quantized and dtype-policy fixtures with real Keras.")
    parser.add_argument("--only", nargs="*", help="fixture names (or model names) to build")
    only = parser.parse_args().only
    (FIXTURES / FAMILY).mkdir(parents=True, exist_ok=True)
    build_quantized(only)
    build_sizes(only)
    build_refused(only)


if __name__ == "__main__":
    main()
