"""Fixtures for issue 12 (breadth): keras.ops activation nodes, adaptive pooling, LayerScale,
ReversibleEmbedding, GroupQueryAttention.

Run with the fixture virtualenv: `/work/venv-keras/bin/python scripts/fixtures_breadth.py [--only NAME]`.
Each builder says which formats its layers exist in (most are Keras 3 only).
"""

from __future__ import annotations

import sys

import fixturelib
import numpy as np
from fixturelib import FIXTURES, keras_for, rand, run
from fixtures_functional import deflate_archives

FAMILY = "breadth"
BATCH = 3
KERAS3 = ("k3h5", "k3keras")


def activation_ops(K, fmt):
    """Every keras.ops activation node with non-default keyword arguments, plus the operations that
    keras.activations records (ReLU with its options, Mish)."""
    from keras.src.activations.activations import Mish

    L, ops, acts = K.layers, K.ops, K.activations
    x = K.Input(shape=(4, 6))
    h = L.Dense(6)(x)
    outs = [
        ops.relu(h),
        ops.relu6(h),
        ops.sigmoid(h),
        ops.sparse_sigmoid(h),
        ops.softplus(h),
        ops.softsign(h),
        ops.soft_shrink(h, threshold=0.7),
        ops.sparse_plus(h),
        ops.silu(h),
        ops.squareplus(h, b=3),
        ops.log_sigmoid(h),
        ops.leaky_relu(h, negative_slope=0.1),
        ops.hard_sigmoid(h),
        ops.hard_silu(h),
        ops.elu(h, alpha=0.5),
        ops.selu(h),
        ops.gelu(h),  # approximate=True by default for the op
        ops.gelu(h, approximate=False),
        ops.celu(h, alpha=2.0),
        ops.glu(h),
        ops.glu(h, axis=1),
        ops.tanh_shrink(h),
        ops.hard_tanh(h),
        ops.hard_shrink(h, threshold=0.3),
        ops.threshold(h, 0.2, -1.5),
        ops.softmax(h, axis=1),
        ops.log_softmax(h),
        ops.sparsemax(h),
        ops.tanh(h),
        ops.exp(h),
        acts.relu(h),
        acts.relu(h, negative_slope=0.1, max_value=2.0, threshold=0.5),
        acts.relu(h, max_value=6.0),
        acts.gelu(h),  # approximate=False
        Mish()(h),
    ]
    return K.Model(x, outs), [rand((BATCH, 4, 6), 1, 2.5)]


def ops_drop_mask(K, fmt):
    """Keras drops a mask at an operation: the pooling after ops.relu averages every step."""
    L, ops = K.layers, K.ops
    t = K.Input(shape=(5,), dtype="int32")
    e = L.Embedding(10, 3, mask_zero=True)(t)
    y = L.GlobalAveragePooling1D()(ops.relu(e))
    tokens = np.array([[1, 2, 0, 0, 0], [3, 0, 4, 5, 0], [9, 8, 7, 6, 5]], dtype=np.int32)
    return K.Model(t, y), [tokens]


def adaptive_pooling(K, fmt):
    """Every adaptive pooling layer, both data formats; sizes that do not divide (overlapping
    windows), equal sizes, and more output cells than input cells (repeated windows)."""
    L = K.layers
    x1, x2, x3 = K.Input(shape=(7, 3)), K.Input(shape=(5, 7, 2)), K.Input(shape=(4, 5, 3, 2))
    first = "channels_first"
    outs = [
        L.AdaptiveAveragePooling1D(3)(x1),
        L.AdaptiveMaxPooling1D(4)(x1),
        L.AdaptiveAveragePooling1D(9)(x1),
        L.AdaptiveMaxPooling1D(2, data_format=first)(x1),  # pools the 3-cell axis 1 of (7, 3)
        L.AdaptiveAveragePooling2D((2, 3))(x2),
        L.AdaptiveMaxPooling2D(3)(x2),
        L.AdaptiveAveragePooling2D((3, 1), data_format=first)(x2),
        L.AdaptiveMaxPooling2D((4, 2), data_format=first)(x2),
        L.AdaptiveAveragePooling3D((3, 2, 2))(x3),
        L.AdaptiveMaxPooling3D((2, 4, 3))(x3),
        L.AdaptiveAveragePooling3D((2, 2, 3), data_format=first)(x3),
        L.AdaptiveMaxPooling3D(2, data_format=first)(x3),
    ]
    inputs = [rand((BATCH, 7, 3), 11), rand((BATCH, 5, 7, 2), 12), rand((BATCH, 4, 5, 3, 2), 13)]
    return K.Model([x1, x2, x3], outs), inputs


def _convnext_module(K):
    if fixturelib.is_keras3(K):
        from keras.src.applications import convnext
    else:
        from tf_keras.src.applications import convnext
    return convnext


def layer_scale(K, fmt):
    """A ConvNeXt block as keras.applications writes it: depthwise conv, LayerNormalization, MLP,
    LayerScale, StochasticDepth (identity at inference), residual add."""
    convnext, L = _convnext_module(K), K.layers
    x = K.Input(shape=(5, 5, 4))
    h = L.DepthwiseConv2D(3, padding="same")(x)
    h = L.LayerNormalization(epsilon=1e-6)(h)
    h = L.Dense(8, activation="gelu")(h)
    h = L.Dense(4)(h)
    h = convnext.LayerScale(1e-6, 4)(h)
    h = convnext.StochasticDepth(0.1)(h)
    return K.Model(x, L.Add()([x, h])), [rand((BATCH, 5, 5, 4), 21)]


def convnext_small(K, fmt):
    """keras.applications' own ConvNeXt builder (the code behind ConvNeXtTiny), shrunk to one block
    per stage and a few channels, preprocessing and classifier head included."""
    convnext = _convnext_module(K)
    name_key = "name" if fixturelib.is_keras3(K) else "model_name"
    model = convnext.ConvNeXt(
        depths=[1, 1, 1, 1],
        projection_dims=[4, 8, 8, 8],
        drop_path_rate=0.1,
        layer_scale_init_value=1e-6,
        include_top=True,
        weights=None,
        input_shape=(32, 32, 3),
        classes=3,
        classifier_activation="softmax",
        **{name_key: "convnext_small_test"},
    )
    return model, [rand((2, 32, 32, 3), 22, 40.0) + 120.0]


def reversible_embedding(K, fmt):
    """Keras 3.15's ReversibleEmbedding: a lookup with a mask, the tied reverse projection, and an
    untied one with a logit soft cap (a shared layer called in both modes)."""
    L = K.layers
    t = K.Input(shape=(5,), dtype="int32")
    tied = L.ReversibleEmbedding(11, 6, mask_zero=True)
    untied = L.ReversibleEmbedding(11, 6, tie_weights=False, logit_soft_cap=2.0)
    e = tied(t)
    outs = [
        L.GlobalAveragePooling1D()(e),  # reads the mask
        tied(L.Dense(6)(e), reverse=True),
        untied(untied(t), reverse=True),
    ]
    tokens = np.array([[1, 2, 0, 0, 0], [3, 10, 4, 5, 0], [9, 8, 7, 6, 5]], dtype=np.int32)
    return K.Model(t, outs), [tokens]


def group_query_attention(K, fmt):
    """GroupQueryAttention: grouped heads with a causal mask, cross attention with a separate key and
    dropout (ignored at inference; Keras then takes its einsum path, not dot_product_attention), equal
    head counts without bias."""
    L = K.layers
    x = K.Input(shape=(5, 6))
    m = K.Input(shape=(7, 6))  # Keras requires query and value feature sizes to be equal
    gqa = L.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2)
    cross = L.GroupQueryAttention(head_dim=2, num_query_heads=6, num_key_value_heads=3, dropout=0.3)
    plain = L.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=2, use_bias=False)
    outs = [
        gqa(x, x, use_causal_mask=True),
        cross(x, m, key=L.Dense(6)(m)),
        plain(x, m),
        plain(x, m, use_causal_mask=True),  # 5 queries, 7 keys: the mask is aligned top-left
        gqa(x, x),
    ]
    return K.Model([x, m], outs), [rand((BATCH, 5, 6), 31), rand((BATCH, 7, 6), 32)]


def formats(*allowed: str):
    """Build only in `allowed` formats (fixturelib.run skips a builder that returns None)."""

    def wrap(build):
        def only(K, fmt):
            return build(K, fmt) if fmt in allowed else None

        only.__name__ = build.__name__
        return only

    return wrap


BUILDERS = {
    "activation_ops": formats(*KERAS3)(activation_ops),
    "ops_drop_mask": formats(*KERAS3)(ops_drop_mask),
    "adaptive_pooling": formats(*KERAS3)(adaptive_pooling),
    "layer_scale": layer_scale,
    # LayerScale is tested in all four formats above; the whole application (~150 KB a file) in three.
    "convnext_small": formats("k2h5", "k3h5", "k3keras")(convnext_small),
    "reversible_embedding": formats(*KERAS3)(reversible_embedding),
    "group_query_attention": formats(*KERAS3)(group_query_attention),
}


def custom_objects(K) -> dict:
    """The classes Keras needs to reload an .h5 holding keras.applications' own layers."""
    convnext = _convnext_module(K)
    return {"LayerScale": convnext.LayerScale, "StochasticDepth": convnext.StochasticDepth}


_save = fixturelib.save


def save(family: str, name: str, fmt: str, model, inputs: list, check_reload: bool = True):
    """fixturelib.save, reloading with keras.applications' classes known. Keras 3 writes op nodes
    and some keras_hub layers into .h5 but its loader cannot read them back: such a file is kept
    without the reload check (the reference outputs come from the in-memory model, as always)."""
    K = keras_for(fmt)
    try:
        with K.utils.custom_object_scope(custom_objects(K)):
            return _save(family, name, fmt, model, inputs, check_reload)
    except (ValueError, TypeError, KeyError) as err:
        if fmt != "k3h5":
            raise
        print(f"note: {name}__{fmt} not reloadable by Keras ({type(err).__name__})", file=sys.stderr)
        return _save(family, name, fmt, model, inputs, check_reload=False)


fixturelib.save = save  # what fixturelib.run calls


if __name__ == "__main__":
    run(FAMILY, BUILDERS)
    deflate_archives(FIXTURES / FAMILY)
