"""Fixtures for issue 3: Functional graphs, merges, multiple inputs/outputs, nested and shared
layers, normalization and attention layers, Keras 3 `keras.ops` nodes.

Run with the fixture virtualenv: `/work/venv-keras/bin/python fixtures_functional.py [--only NAME]`.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import fixturelib
import numpy as np
from fixturelib import FIXTURES, is_keras3, rand, run

_randomize = fixturelib.randomize


def randomize(model, seed: int) -> None:
    """fixturelib.randomize, then let adapted Normalization layers recompute what they derive
    from their statistics (tf-keras caches it at adapt time, so the model would ignore them)."""
    _randomize(model, seed)
    for layer in model.layers:
        if type(layer).__name__ == "Normalization" and getattr(layer, "input_mean", None) is None:
            layer.finalize_state()


fixturelib.randomize = randomize


def two_formats(build):
    """Layer-math fixtures: one Keras 2 .h5 and one Keras 3 .keras file cover both Keras
    versions and both containers; the graph fixtures keep all four formats."""

    def wrapped(K, fmt):
        return build(K, fmt) if fmt in ("k2h5", "k3keras") else None

    wrapped.__name__ = build.__name__
    return wrapped


def deflate_archives(folder: Path) -> None:
    """Re-zip the .keras archives with deflate (Keras stores them uncompressed, ~40 KB each for
    these tiny models). Members, their order and their bytes are unchanged; Keras and Konverter
    read deflated archives the same way."""
    for path in sorted(folder.glob("*.keras")):
        with zipfile.ZipFile(path) as src:
            if all(i.compress_type == zipfile.ZIP_DEFLATED for i in src.infolist()):
                continue
            members = [(i.filename, src.read(i)) for i in src.infolist()]
        tmp = path.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for name, data in members:
                dst.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
        with zipfile.ZipFile(tmp) as check:
            if [(i.filename, check.read(i)) for i in check.infolist()] != members:
                raise SystemExit(f"{path.name}: re-zipped archive differs")
        tmp.replace(path)


BATCH = 4


def residual_mlp(K, fmt):
    L = K.layers
    x = K.Input(shape=(6,), name="features")
    h = L.Dense(8, activation="relu")(x)
    r = L.Dense(8, activation="tanh")(h)
    h = L.Add()([h, r])
    r = L.Dense(8, activation="relu")(h)
    h = L.Add()([h, r, L.Dense(8)(x)])
    return K.Model(x, L.Dense(3)(h)), [rand((BATCH, 6), 1)]


def concat_branches(K, fmt):
    L = K.layers
    x = K.Input(shape=(4, 5))
    a = L.Dense(3, activation="relu")(x)
    b = L.Dense(2)(x)
    last = L.Concatenate()([a, b, x])  # (4, 10)
    c = L.Dense(10)(x)
    seq = L.Concatenate(axis=1)([last, c])  # (8, 10)
    mid = L.Concatenate(axis=-2)([seq, last])  # (12, 10)
    y = L.Dense(2)(L.Flatten()(mid))
    return K.Model(x, y), [rand((BATCH, 4, 5), 2)]


def merges(K, fmt):
    L = K.layers
    x = K.Input(shape=(3, 4))
    a, b, c = L.Dense(4)(x), L.Dense(4, activation="tanh")(x), L.Dense(4, activation="sigmoid")(x)
    v = L.Dense(4)(L.Flatten()(x))  # (4,) broadcast against (3, 4): Keras expands it to (1, 4)
    outs = [
        L.Subtract()([a, b]),
        L.Multiply()([a, b, c]),
        L.Average()([a, b, c]),
        L.Maximum()([a, b, c]),
        L.Minimum()([a, b]),
        L.Add()([a, v]),
        L.Multiply()([v, b]),
        L.Maximum()([a, v]),
    ]
    y = L.Concatenate()(outs)
    return K.Model(x, y), [rand((BATCH, 3, 4), 3)]


def dots(K, fmt):
    L = K.layers
    x = K.Input(shape=(3, 4))
    v = K.Input(shape=(4,))
    a, b = L.Dense(4)(x), L.Dense(4)(x)
    w = L.Dense(4)(v)
    outs = [
        L.Flatten()(L.Dot(axes=-1)([a, b])),  # (3, 3)
        L.Flatten()(L.Dot(axes=(1, 1), normalize=True)([a, b])),  # (4, 4)
        L.Flatten()(L.Dot(axes=(2, 1))([a, w])),  # (3,)
        L.Dot(axes=1)([v, w]),  # (1,)
        L.Dot(axes=1, normalize=True)([v, w]),
        L.Flatten()(L.Dot(axes=(1, 2))([w, a])),  # (3,)
    ]
    return K.Model([x, v], L.Concatenate()(outs)), [rand((BATCH, 3, 4), 4), rand((BATCH, 4), 5)]


def two_inputs(K, fmt):
    L = K.layers
    a = K.Input(shape=(4,), name="left")
    b = K.Input(shape=(2, 3), name="right")
    h = L.Concatenate()([L.Dense(5)(a), L.Flatten()(L.Dense(2)(b))])
    return K.Model([a, b], L.Dense(3)(h)), [rand((BATCH, 4), 6), rand((BATCH, 2, 3), 7)]


def two_outputs(K, fmt):
    L = K.layers
    x = K.Input(shape=(5,))
    h = L.Dense(6, activation="relu")(x)
    return K.Model(x, [L.Dense(2, name="head_b")(h), L.Dense(3, activation="softmax", name="head_a")(h)]), [
        rand((BATCH, 5), 8)
    ]


def dict_outputs(K, fmt):
    L = K.layers
    x = K.Input(shape=(5,))
    h = L.Dense(6, activation="relu")(x)
    # Layer names equal the keys: tf-keras lists outputs by layer name, Keras 3 by key.
    outs = {"score": L.Dense(1, name="score")(h), "probs": L.Dense(3, activation="softmax", name="probs")(h)}
    return K.Model(x, outs), [rand((BATCH, 5), 9)]


def shared_twice(K, fmt):
    L = K.layers
    a = K.Input(shape=(4,))
    b = K.Input(shape=(4,))
    shared = L.Dense(3, activation="tanh", name="shared")
    y = L.Subtract()([shared(a), shared(b)])
    return K.Model([a, b], L.Dense(2)(y)), [rand((BATCH, 4), 10), rand((BATCH, 4), 11)]


def shared_thrice(K, fmt):
    L = K.layers
    x = K.Input(shape=(4,))
    shared = L.Dense(4, activation="tanh", name="shared")
    h1 = shared(x)
    h2 = shared(h1)
    h3 = shared(L.Dense(4)(x))
    y = L.Concatenate()([h1, h2, h3])
    # The output is a later call of the shared layer (node index 2 in output_layers).
    return K.Model(x, [y, h3]), [rand((BATCH, 4), 12)]


def nested_sequential(K, fmt):
    L = K.layers
    inner = K.Sequential([K.Input(shape=(4,)), L.Dense(5, activation="relu"), L.BatchNormalization(), L.Dense(3)])
    inner_name = inner.name
    x = K.Input(shape=(4,))
    y = K.Input(shape=(4,))
    # Called twice: the second call is node 1 of the nested model.
    out = L.Add()([inner(x), inner(L.Dense(4, name=inner_name + "_pre")(y))])
    return K.Model([x, y], L.Dense(2)(out)), [rand((BATCH, 4), 13), rand((BATCH, 4), 14)]


def nested_functional(K, fmt):
    L = K.layers
    # The inner model reuses outer layer names ("dense", "add") so weights must be found by path.
    i1 = K.Input(shape=(4,), name="inner_a")
    i2 = K.Input(shape=(4,), name="inner_b")
    d = L.Dense(3, name="dense")
    inner = K.Model([i1, i2], [L.Add(name="add")([d(i1), d(i2)]), L.Dense(2, name="dense_1")(i1)], name="inner")
    x = K.Input(shape=(4,), name="x")
    h = L.Dense(4, name="dense")(x)
    s, t = inner([h, x])
    u, _ = inner([x, h])  # second call of the nested model
    y = L.Concatenate(name="add")([s, t, u])
    return K.Model(x, L.Dense(2, name="dense_1")(y)), [rand((BATCH, 4), 15)]


def functional_in_functional_in_functional(K, fmt):
    L = K.layers
    a = K.Input(shape=(3,))
    core = K.Model(a, L.Dense(3, activation="relu")(a), name="core")
    b = K.Input(shape=(3,))
    middle = K.Model(b, L.Add()([core(b), L.Dense(3)(b)]), name="middle")
    x = K.Input(shape=(3,))
    return K.Model(x, middle(middle(x))), [rand((BATCH, 3), 16)]


def nested_outputs(K, fmt):
    L = K.layers
    # Nested models whose outputs are the outer model's outputs, each called twice, so
    # output_layers refer to node 1 of a nested model (node 2 in Keras 2 files).
    a = K.Input(shape=(3,))
    inner = K.Model(a, [L.Dense(2, activation="tanh")(a), L.Dense(3)(a)], name="inner")
    seq = K.Sequential([K.Input(shape=(3,)), L.Dense(2)], name="seq")
    x = K.Input(shape=(3,))
    h = L.Dense(3)(x)
    _ = inner(x), seq(x)
    p, q = inner(h)
    return K.Model(x, [q, seq(h), p]), [rand((BATCH, 3), 33)]


def nested_unbuilt(K, fmt):
    L = K.layers
    # A Sequential without an Input layer (built by its first call) inside a Functional model,
    # and a Functional model inside a Sequential one.
    seq = K.Sequential([L.Dense(4, activation="relu"), L.Dense(3)], name="plain")
    x = K.Input(shape=(5,))
    y = seq(x)
    y = L.Add()([y, seq(L.Dense(5)(x))])
    a = K.Input(shape=(3,))
    func = K.Model(a, L.Multiply()([L.Dense(3)(a), a]), name="func")
    outer = K.Sequential([func, L.Dense(2)], name="outer")
    return K.Model(x, outer(y)), [rand((BATCH, 5), 34)]


def nested_name_clash(K, fmt):
    L = K.layers
    # Layers named "dense" at three depths of nesting; weights must be found by path.
    if fmt.endswith("h5"):  # .h5 writers cannot: two datasets "dense/kernel" in one group
        return None
    a = K.Input(shape=(3,))
    core = K.Model(a, L.Dense(3, name="dense")(a), name="core")
    b = K.Input(shape=(3,))
    middle = K.Model(b, L.Dense(3, name="dense")(core(b)), name="middle")
    x = K.Input(shape=(3,))
    return K.Model(x, L.Dense(2, name="dense")(middle(x))), [rand((BATCH, 3), 35)]


def nested_seq_clash(K, fmt):
    L = K.layers
    # A Sequential inside a nested Functional model, both holding a layer named "dense". Keras 3's
    # .h5 writer keeps them apart only by the Sequential's name ("seq/dense/kernel" vs "dense/kernel").
    if fmt == "k2h5":  # tf-keras would write "dense/kernel:0" twice into one group
        return None
    seq = K.Sequential([K.Input(shape=(3,)), L.Dense(4, name="dense")], name="seq")
    b = K.Input(shape=(3,))
    middle = K.Model(b, L.Dense(2, name="dense")(seq(b)), name="middle")
    x = K.Input(shape=(3,))
    return K.Model(x, middle(x)), [rand((BATCH, 3), 38)]


def feature_extractor(K, fmt):
    L = K.layers
    # The transfer-learning pattern: a new model from another model's input and an inner
    # layer's output, plus a head; also a model whose single output is given as a list.
    x = K.Input(shape=(4,))
    h = L.Dense(5, activation="relu", name="features")(x)
    base = K.Model(x, L.Dense(3, name="old_head")(h))
    y = L.Dense(2, name="new_head")(base.get_layer("features").output)
    return K.Model(base.input, [L.Add()([y, L.Dense(2)(base.output)])]), [rand((BATCH, 4), 40)]


def dict_inputs(K, fmt):
    if is_keras3(K):  # Keras 3 models with dict inputs must be called with a dict (fixturelib passes a list)
        return None
    L = K.layers
    a = K.Input(shape=(3,), name="b_second")
    b = K.Input(shape=(2,), name="a_first")
    y = L.Dense(2)(L.Concatenate()([a, b]))
    inputs = [rand((BATCH, 2), 37), rand((BATCH, 3), 36)]  # Keras orders dict inputs by key
    return K.Model({"b_second": a, "a_first": b}, y), inputs


def name_order(K, fmt):
    L = K.layers
    x = K.Input(shape=(5,), name="in_z")
    a = L.Dense(4, name="dense_9", activation="relu")(x)
    b = L.Dense(4, name="dense_0")(x)
    c = L.Add(name="add_7")([a, b])
    d = L.Dense(3, name="dense")(c)
    e = L.Dense(3, name="a_first")(b)
    y = L.Multiply(name="multiply_0")([d, e])
    return K.Model(x, y), [rand((BATCH, 5), 17)]


def call_kwargs(K, fmt):
    L = K.layers
    x = K.Input(shape=(5,))
    h = L.Dense(6)(x)
    h = L.Dropout(0.5)(h, training=False)
    h = L.BatchNormalization()(h, training=False)
    return K.Model(x, L.Dense(2)(h)), [rand((BATCH, 5), 18)]


def layer_norm(K, fmt):
    L = K.layers
    x = K.Input(shape=(4, 6))
    h = L.LayerNormalization()(L.Dense(6)(x))
    if fmt != "k3h5":  # Keras 3's .h5 loader drops list axes, so it cannot check this file
        h = L.LayerNormalization(axis=[1, 2], epsilon=0.01)(h)
    h = L.LayerNormalization(center=False)(h)
    h = L.LayerNormalization(axis=1, scale=False)(h)
    if is_keras3(K):
        h = L.LayerNormalization(rms_scaling=True)(h)
        h = L.RMSNormalization(epsilon=1e-5)(L.Dense(6)(h))
    return K.Model(x, h), [rand((BATCH, 4, 6), 19, 3.0)]


def unit_group_norm(K, fmt):
    L = K.layers
    x = K.Input(shape=(3, 8))
    h = L.UnitNormalization()(x)
    h = L.Dense(8)(h)
    if fmt != "k3h5":  # Keras 3's .h5 loader drops list axes, so it cannot check this file
        h = L.UnitNormalization(axis=[1, 2])(h)
    h = L.GroupNormalization(groups=4)(h)
    h = L.GroupNormalization(groups=2, axis=1, center=False)(L.Permute((2, 1))(h))
    h = L.GroupNormalization(groups=-1, epsilon=0.01)(h)
    return K.Model(x, h), [rand((BATCH, 3, 8), 20, 2.0)]


def normalization(K, fmt):
    L = K.layers
    data = rand((20, 3, 4), 21, 2.0) + 1.0
    adapted = L.Normalization()
    adapted.adapt(data)
    per_axis = L.Normalization(axis=(1, 2))
    per_axis.adapt(data)
    x = K.Input(shape=(3, 4))
    a = adapted(x)
    b = per_axis(x)
    c = L.Normalization(mean=0.5, variance=4.0)(x)
    d = L.Normalization(axis=None, mean=0.5, variance=2.0)(x)
    e = L.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 2.0, 3.0, 4.0], invert=True)(x)
    outs = [a, b, c, d, e]
    if fmt == "k3h5":  # Keras 3's .h5 loader drops tuple axes, so it cannot check `per_axis`
        outs.remove(b)
    return K.Model(x, outs), [rand((BATCH, 3, 4), 22, 2.0)]


def mha_self(K, fmt):
    L = K.layers
    x = K.Input(shape=(5, 6))
    h = L.MultiHeadAttention(num_heads=2, key_dim=3)(x, x)
    h = L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=2, use_bias=False)(h, h, use_causal_mask=True)
    return K.Model(x, h), [rand((BATCH, 5, 6), 23)]


def mha_cross(K, fmt):
    L = K.layers
    q = K.Input(shape=(3, 6), name="query")
    v = K.Input(shape=(5, 4), name="value")
    k = K.Input(shape=(5, 2), name="key")
    a = L.MultiHeadAttention(num_heads=3, key_dim=2, output_shape=(7,))(q, v)  # key defaults to value
    b = L.MultiHeadAttention(num_heads=1, key_dim=3)(q, v, k)
    return K.Model([q, v, k], [a, b]), [rand((BATCH, 3, 6), 24), rand((BATCH, 5, 4), 25), rand((BATCH, 5, 2), 26)]


def mha_axes(K, fmt):
    L = K.layers
    x = K.Input(shape=(2, 3, 4))
    a = L.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(2,))(x, x)
    b = L.MultiHeadAttention(num_heads=2, key_dim=2)(x, x)  # default: attend over axes 1 and 2
    return K.Model(x, [a, b]), [rand((BATCH, 2, 3, 4), 27)]


def attention_layers(K, fmt):
    if fmt == "k3h5":  # Keras 3's .h5 loader turns score_mode "dot" into a function and fails
        return None
    L = K.layers
    q = K.Input(shape=(3, 4))
    v = K.Input(shape=(5, 4))
    outs = [
        L.Attention()([q, v]),
        L.Attention(use_scale=True)([q, v, L.Dense(4)(v)]),
        L.AdditiveAttention()([q, v]),
        L.AdditiveAttention(use_scale=False)([q, v, v]),
        L.Attention()([q, q], use_causal_mask=True),
    ]
    if is_keras3(K):
        outs.append(L.Attention(score_mode="concat", use_scale=True)([q, v]))
    return K.Model([q, v], outs), [rand((BATCH, 3, 4), 28), rand((BATCH, 5, 4), 29)]


def einsum_dense(K, fmt):
    L = K.layers
    x = K.Input(shape=(3, 4))
    a = L.EinsumDense("abc,cd->abd", output_shape=(3, 5), bias_axes="d", activation="relu")(x)
    b = L.EinsumDense("abc,cde->abde", output_shape=(3, 2, 2), bias_axes="de")(a)
    c = L.EinsumDense("abcd,bcde->ae", output_shape=(3,))(b)
    return K.Model(x, [b, c]), [rand((BATCH, 3, 4), 30)]


def image_preprocessing(K, fmt):
    L = K.layers
    x = K.Input(shape=(6, 8, 2))
    outs = [
        L.CenterCrop(4, 5)(x),
        L.CenterCrop(6, 3)(x),
        L.Resizing(7, 3)(x),  # bilinear up in height, down in width
        L.Resizing(3, 11, interpolation="nearest")(x),
        L.Resizing(4, 4, interpolation="nearest")(x),
        L.Resizing(5, 5)(L.CenterCrop(4, 5)(x)),
    ]
    return K.Model(x, outs), [rand((BATCH, 6, 8, 2), 39, 3.0)]


def ops_model(K, fmt):
    if fmt != "k3keras":  # op nodes exist only in Keras 3; its .h5 loader cannot read them back
        return None
    L, ops = K.layers, K.ops
    x = K.Input(shape=(3, 4))
    y = K.Input(shape=(4,))
    h = L.Dense(4)(x)
    a = ops.add(h, ops.expand_dims(y, 1))
    b = ops.multiply(a, 0.5)
    c = ops.subtract(b, h)
    d = ops.divide(c, ops.add(ops.abs(h), 1.0))
    e = ops.matmul(d, ops.transpose(h, (0, 2, 1)))  # (3, 3)
    f = ops.concatenate([e, d], axis=-1)  # (3, 7)
    g = ops.reshape(f, (-1, 21))
    m = ops.mean(d, axis=1)
    s = ops.sum(d, axis=-1, keepdims=True)
    q = ops.squeeze(ops.expand_dims(m, 1), axis=1)
    return K.Model([x, y], [g, q, s]), [rand((BATCH, 3, 4), 31), rand((BATCH, 4), 32)]


def ops_more(K, fmt):
    if fmt != "k3keras":
        return None
    L, ops = K.layers, K.ops
    x = K.Input(shape=(3, 4))
    h = L.Dense(4)(x)
    outs = [
        h[:, -1, :],
        h[:, 1:3, ::2],
        h[..., 0],
        h[:, ::-1],
        ops.stack([h[:, 0], h[:, 2]], axis=1),
        ops.stack([x, h], axis=-1),
        ops.softmax(h, axis=1),
        ops.relu(h) + ops.sigmoid(h) - ops.tanh(h),
        ops.max(h, axis=-1),
        ops.min(h, axis=(1, 2), keepdims=True),
        ops.maximum(h, 0.1) * ops.minimum(x, h),
        ops.power(ops.abs(h) + 1.0, 1.5) + ops.sqrt(ops.square(x)),
        ops.log(ops.abs(x) + 1.0) - ops.exp(-ops.square(h)),
        ops.negative(ops.true_divide(h, 2.0)),
    ]
    return K.Model(x, outs), [rand((BATCH, 3, 4), 41)]


def tf_ops(K, fmt):
    # tf.keras turns TensorFlow functions on symbolic tensors into TFOpLambda/SlicingOpLambda layers.
    if is_keras3(K):
        return None
    import tensorflow as tf

    L = K.layers
    x = K.Input(shape=(3, 4))
    h = L.Dense(4)(x)
    outs = [
        h + 1.0,
        2.0 - h * x,
        (h / (tf.abs(x) + 1)) ** 2,
        tf.concat([h, x], axis=-1),
        tf.reshape(h, (-1, 12)),
        tf.reduce_mean(h, axis=1),
        tf.reduce_sum(h, axis=-1, keepdims=True),
        tf.nn.relu(h) + tf.sigmoid(h) - tf.tanh(-h),
        tf.nn.softmax(h, axis=1),
        h[:, 0],
        h[:, tf.newaxis, ::-1],
        tf.transpose(h, perm=[0, 2, 1]),
        tf.matmul(h, x, transpose_b=True),
        tf.squeeze(tf.expand_dims(h, 1), axis=1),
        tf.stack([h, x], axis=1),
        tf.maximum(h, 0.1) + tf.minimum(h, x),
        tf.exp(-tf.square(h)) + tf.math.log(tf.abs(x) + 1.0) + tf.sqrt(tf.abs(h)),
    ]
    if fmt == "k2h5":  # the .keras writer of tf-keras cannot serialize an Ellipsis
        outs.append(h[..., 1:3])
    return K.Model(x, outs), [rand((BATCH, 3, 4), 42)]


def save_ops_h5() -> None:
    """ops_model as Keras 3 .h5: Keras writes it (without the entries' "module", so op nodes look
    like layers) but cannot load it back, so the reload check is skipped; the reference outputs
    come from the in-memory model, as for every fixture."""
    if "--only" in sys.argv and "ops_model" not in sys.argv:
        return
    K = fixturelib.keras_for("k3h5")
    K.utils.set_random_seed(4321)
    model, inputs = ops_model(K, "k3keras")
    randomize(model, 4321)
    path = fixturelib.save("functional", "ops_model", "k3h5", model, inputs, check_reload=False)
    print(f"wrote {path.name} (not reloadable by Keras)", file=sys.stderr)


BUILDERS = {
    "residual_mlp": residual_mlp,
    "concat_branches": two_formats(concat_branches),
    "merges": two_formats(merges),
    "dots": two_formats(dots),
    "two_inputs": two_inputs,
    "two_outputs": two_outputs,
    "dict_outputs": dict_outputs,
    "shared_twice": shared_twice,
    "shared_thrice": shared_thrice,
    "nested_sequential": nested_sequential,
    "nested_functional": nested_functional,
    "nested_deep": functional_in_functional_in_functional,
    "nested_outputs": nested_outputs,
    "nested_unbuilt": nested_unbuilt,
    "nested_name_clash": nested_name_clash,
    "nested_seq_clash": nested_seq_clash,
    "feature_extractor": feature_extractor,
    "dict_inputs": dict_inputs,
    "name_order": name_order,
    "call_kwargs": two_formats(call_kwargs),
    "layer_norm": two_formats(layer_norm),
    "unit_group_norm": two_formats(unit_group_norm),
    "normalization": normalization,
    "mha_self": mha_self,
    "mha_cross": two_formats(mha_cross),
    "mha_axes": two_formats(mha_axes),
    "attention_layers": two_formats(attention_layers),
    "einsum_dense": two_formats(einsum_dense),
    "image_preprocessing": two_formats(image_preprocessing),
    "tf_ops": tf_ops,
    "ops_model": ops_model,
    "ops_more": ops_more,
}

if __name__ == "__main__":
    np.set_printoptions(precision=4)
    run("functional", BUILDERS)
    save_ops_h5()
    deflate_archives(FIXTURES / "functional")
