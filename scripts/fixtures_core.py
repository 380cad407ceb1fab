"""Fixtures for the core issue: Sequential models, Dense, activations, simple layers, every format.

Run with the fixture virtualenv: `.venv-keras/bin/python scripts/fixtures_core.py [--only NAME]`.
"""

from __future__ import annotations

from fixturelib import is_keras3, rand, run

BATCH = 5
KERAS2_ACTIVATIONS = [
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "softplus",
    "softsign",
    "elu",
    "selu",
    "exponential",
    "swish",
    "gelu",
    "mish",
    "hard_sigmoid",
]
KERAS3_ONLY = [
    "relu6",
    "silu",
    "leaky_relu",
    "hard_silu",
    "hard_swish",
    "celu",
    "hard_tanh",
    "log_sigmoid",
    "squareplus",
    "sparse_plus",
    "tanh_shrink",
    "soft_shrink",
    "hard_shrink",
    "sparse_sigmoid",
    "sparsemax",
    "log_softmax",
    "glu",
]


def seq(K, input_shape, layers, name=None):
    return K.Sequential([K.Input(shape=input_shape)] + layers, name=name)


def dense_relu(K, fmt):
    return seq(K, (8,), [K.layers.Dense(16, activation="relu"), K.layers.Dense(4)]), [rand((BATCH, 8), 1)]


def benchmark(K, fmt):
    # The original Konverter's benchmark model: Dense 1->512->512->256->128->128->128->64->64->64->1.
    # 1.9 MB per file, so only two formats (every format's Dense path is covered by the small models).
    if fmt not in ("k2h5", "k3keras"):
        return None
    widths = [512, 512, 256, 128, 128, 128, 64, 64, 64]
    layers = [K.layers.Dense(w, activation="relu") for w in widths] + [K.layers.Dense(1)]
    return seq(K, (1,), layers), [rand((BATCH, 1), 2)]


def phone(K, fmt):
    layers = [K.layers.Dense(w, activation="relu") for w in (204, 128, 64)] + [K.layers.Dense(1)]
    return seq(K, (103,), layers), [rand((BATCH, 103), 3)]


def softmax_1in4(K, fmt):
    return seq(K, (1,), [K.layers.Dense(4, activation="softmax")]), [rand((BATCH, 1), 4, 3.0)]


def name_order(K, fmt):
    # Layer names deliberately out of creation order (and shapes that differ), so a reader that
    # matches weights by name in a .keras archive, or by position in an .h5, gets caught.
    layers = [
        K.layers.Dense(7, activation="tanh", name="dense_2"),
        K.layers.Dense(5, activation="relu", name="dense"),
        K.layers.BatchNormalization(name="batch_normalization_1"),
        K.layers.Dense(3, name="dense_1"),
        K.layers.BatchNormalization(name="batch_normalization"),
    ]
    return seq(K, (6,), layers), [rand((BATCH, 6), 5)]


def _activation_group(names):
    def build(K, fmt):
        available = KERAS2_ACTIVATIONS + (KERAS3_ONLY if is_keras3(K) else [])
        chosen = [n for n in names if n in available]
        if not chosen:
            return None
        layers = []
        for n in chosen:
            # glu halves the last axis: give it twice the width.
            layers.append(K.layers.Dense(12 if n == "glu" else 6, activation=n, name=f"act_{n}"))
        return seq(K, (6,), layers), [rand((BATCH, 6), 6, 2.0)]

    return build


def activation_layers(K, fmt):
    L = K.layers
    leaky_custom = L.LeakyReLU(negative_slope=0.1) if is_keras3(K) else L.LeakyReLU(alpha=0.1)
    layers = [
        L.Dense(8),
        L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2),
        L.Dense(8),
        L.LeakyReLU(),  # default slope 0.3 in Keras 2 and 3
        L.Dense(8),
        leaky_custom,
        L.Dense(8),
        L.ELU(alpha=0.7),
        L.Dense(8),
        L.ReLU(max_value=6.0),
        L.Dense(8),
        L.ReLU(negative_slope=0.05),
        L.Dense(8),
        L.ReLU(threshold=0.3),
        L.Dense(8),
        L.Activation("tanh"),
        L.Dense(8),
        L.PReLU(),
        L.Dense(4),
        L.Softmax(),
    ]
    if not is_keras3(K):
        layers.insert(-2, L.ThresholdedReLU(theta=0.2))
    return seq(K, (5,), layers), [rand((BATCH, 5), 7, 2.0)]


def sequence_layers(K, fmt):
    # 3-D activations: Dense on any rank, PReLU with shared_axes, Softmax over axis 1,
    # BatchNormalization on axis 1 (tf-keras writes [1]) and -1, Permute, Reshape(-1), Flatten.
    L = K.layers
    layers = [
        L.Dense(6, activation="relu"),
        L.PReLU(shared_axes=[1]),
        L.BatchNormalization(axis=1),
        L.BatchNormalization(center=False),
        L.BatchNormalization(scale=False, epsilon=0.01),
        L.Permute((2, 1)),
        L.Softmax(axis=1),
        L.Reshape((-1, 3)),
        L.Dense(4),
        L.Flatten(),
        L.RepeatVector(2),
        L.Flatten(),
        L.Dense(3),
    ]
    return seq(K, (4, 5), layers), [rand((BATCH, 4, 5), 8)]


def identities(K, fmt):
    L = K.layers
    layers = [
        L.Dense(6),
        L.Dropout(0.5),
        L.GaussianNoise(0.3),
        L.GaussianDropout(0.3),
        L.AlphaDropout(0.3),
        L.ActivityRegularization(l1=0.1),
        L.Reshape((3, 2)),
        L.SpatialDropout1D(0.5),
        L.Flatten(),
        L.Rescaling(0.5, offset=0.25),
        L.Dense(2),
        L.Rescaling(2.0),
    ]
    return seq(K, (4,), layers), [rand((BATCH, 4), 9)]


def nested_sequential(K, fmt):
    L = K.layers
    inner = K.Sequential([L.Dense(6, activation="relu"), L.BatchNormalization(), L.Dense(5)], name="inner")
    inner.build((None, 4))
    model = K.Sequential([K.Input(shape=(3,)), L.Dense(4, activation="tanh"), inner, L.Dense(2)])
    return model, [rand((BATCH, 3), 10)]


BUILDERS = {
    "dense_relu": dense_relu,
    "benchmark": benchmark,
    "phone": phone,
    "softmax_1in4": softmax_1in4,
    "name_order": name_order,
    "activations_a": _activation_group(["relu", "sigmoid", "tanh", "softplus", "softsign", "linear"]),
    "activations_b": _activation_group(["elu", "selu", "swish", "gelu", "mish", "hard_sigmoid"]),
    "activations_c": _activation_group(["exponential", "softmax"]),
    "activations_d": _activation_group(["relu6", "silu", "leaky_relu", "hard_silu", "hard_swish", "celu"]),
    "activations_e": _activation_group(["hard_tanh", "log_sigmoid", "squareplus", "sparse_plus", "tanh_shrink"]),
    "activations_f": _activation_group(["soft_shrink", "hard_shrink", "sparse_sigmoid", "sparsemax"]),
    "activations_g": _activation_group(["log_softmax", "glu"]),
    "activation_layers": activation_layers,
    "sequence_layers": sequence_layers,
    "identities": identities,
    "nested_sequential": nested_sequential,
}

if __name__ == "__main__":
    run("core", BUILDERS)
