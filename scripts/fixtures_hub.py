"""Fixtures for issue 12: keras_hub building blocks inside Functional models (made by real keras_hub),
and keras_hub Backbone/Task models, which Konverter refuses by name.

Run with the fixture virtualenv: `/work/venv-keras/bin/python scripts/fixtures_hub.py [--only NAME ...|backbones]`.
keras_hub needs Keras 3, so every fixture is written as Keras 3 .h5 and .keras.
"""

from __future__ import annotations

import sys

import numpy as np
from fixturelib import FIXTURES, keras_for, rand, run
from fixtures_breadth import FAMILY, deflate_archives

BATCH = 3
FORMATS = ("k3h5", "k3keras")


def hub_encoder(K, fmt):
    """Two TransformerEncoders: post-norm relu, and pre-norm gelu with its own epsilon."""
    import keras_hub

    x = K.Input(shape=(6, 8))
    h = keras_hub.layers.TransformerEncoder(16, 2)(x)
    h = keras_hub.layers.TransformerEncoder(12, 4, normalize_first=True, activation="gelu", layer_norm_epsilon=1e-3)(h)
    return K.Model(x, h), [rand((BATCH, 6, 8), 51)]


def hub_decoder(K, fmt):
    """TransformerDecoder: decoder-only (causal), without the causal mask, and with cross attention."""
    import keras_hub

    x = K.Input(shape=(6, 8))
    memory = K.Input(shape=(5, 8))
    outs = [
        keras_hub.layers.TransformerDecoder(16, 2)(x),
        keras_hub.layers.TransformerDecoder(16, 2, normalize_first=True)(x, use_causal_mask=False),
        keras_hub.layers.TransformerDecoder(12, 4, activation="gelu")(x, memory),
    ]
    return K.Model([x, memory], outs), [rand((BATCH, 6, 8), 52), rand((BATCH, 5, 8), 53)]


def hub_embeddings(K, fmt):
    """Token and position embeddings, sine and rotary position encodings, keras_hub's ReversibleEmbedding."""
    import keras_hub

    L, hub = K.layers, keras_hub.layers
    tokens = K.Input(shape=(6,), dtype="int32")
    x = K.Input(shape=(6, 8))
    e = hub.TokenAndPositionEmbedding(20, 10, 8)(tokens)
    untied = hub.TokenAndPositionEmbedding(20, 6, 8, tie_weights=False)(tokens)
    reversible = hub.ReversibleEmbedding(20, 8)
    outs = [
        e,
        untied,
        e + hub.SinePositionEncoding()(e),
        hub.SinePositionEncoding(max_wavelength=100)(x),
        hub.PositionEmbedding(sequence_length=9)(x),
        hub.RotaryEmbedding()(x),
        hub.RotaryEmbedding(max_wavelength=500, scaling_factor=2.0)(L.Reshape((6, 2, 4))(x)),
        hub.RotaryEmbedding(sequence_axis=2, feature_axis=1)(L.Permute((2, 1))(x)),
        reversible(L.Dense(8)(reversible(tokens)), reverse=True),
    ]
    ids = np.random.RandomState(54).randint(0, 20, size=(BATCH, 6)).astype(np.int32)
    return K.Model([tokens, x], outs), [ids, rand((BATCH, 6, 8), 55)]


BUILDERS = {"hub_encoder": hub_encoder, "hub_decoder": hub_decoder, "hub_embeddings": hub_embeddings}


def backbones() -> None:
    """A tiny BertBackbone and a Task around it: model files without any .npz (nothing to compare),
    used by the tests to check the clean refusal."""
    import keras_hub

    K = keras_for("k3keras")
    K.utils.set_random_seed(56)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=4, intermediate_dim=8, max_sequence_length=6
    )
    folder = FIXTURES / FAMILY
    backbone.save(str(folder / "hub_bert_backbone__k3keras.keras"))
    backbone.save(str(folder / "hub_bert_backbone__k3h5.h5"))
    task = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    task.save(str(folder / "hub_bert_classifier__k3keras.keras"))


if __name__ == "__main__":
    # fixtures_breadth's save (imported above) keeps the .h5 files that Keras 3 cannot reload.
    run(FAMILY, BUILDERS, formats=FORMATS)
    if "--only" not in sys.argv or "backbones" in sys.argv:
        backbones()
    deflate_archives(FIXTURES / FAMILY)
