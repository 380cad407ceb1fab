"""Fixtures for LocallyConnected1D/2D: tf-keras only (Keras 3 has no locally-connected layers).

Run with the fixture virtualenv: `.venv-keras/bin/python scripts/fixtures_locally_connected.py`.
One model per implementation: parallel branches from channels_last and channels_first inputs
(TensorFlow on CPU computes every one of them), covering 'valid' and 'same' padding (not with
implementation 1, which tf-keras refuses), strides, even and odd kernels, a kernel longer than the
input, use_bias and activations. Implementation 2 saves a dense (inputs, outputs) kernel and 3 a flat
vector of the connected entries, so each implementation is a fixture of its own; shapes are tiny.
"""

from __future__ import annotations

from fixturelib import rand, run
from fixtures_conv import multi_branches, runnable

BATCH = 2
FORMATS = ("k2h5", "k2keras")  # Keras 3 cannot build these layers, so writes no file with them


def variants(layer, implementation, data_format, kernels, full=False):
    """The variants of one layer class for one implementation and data format; `kernels` gives
    the (kernel_size, strides) of some, as ints (1D) or pairs (2D, rectangular where it matters).
    `full` adds the geometry cases, checked once (2D channels_last): they share the code of the rest."""
    common = {"implementation": implementation, "data_format": data_format}
    made = [
        layer(2, kernels["stride"][0], strides=kernels["stride"][1], activation="relu", **common),
        layer(2, 3, strides=3, use_bias=False, activation="tanh", **common),
    ]
    if full:
        made.append(layer(2, kernels["plain"][0], strides=kernels["plain"][1], **common))
    if implementation == 1:  # tf-keras refuses padding='same' with implementation 1
        return made
    # An even kernel with 'same': the extra zero goes BEFORE (unlike TensorFlow's convolutions).
    made.append(layer(2, kernels["same"][0], strides=kernels["same"][1], padding="same", **common))
    if full:
        made += [
            layer(2, 3, padding="same", activation="sigmoid", **common),
            layer(2, 9, padding="same", **common),  # longer than the input: the window is cut
        ]
    return made


KERNELS_1D = {"stride": (2, 2), "same": (2, 2)}
KERNELS_2D = {"stride": ((2, 2), 2), "plain": ((3, 2), (1, 2)), "same": ((2, 3), (2, 1))}


def implementation_model(implementation):
    """Every variant of both classes for one implementation: four inputs (1D and 2D, each
    channels_last and channels_first), one output per layer."""

    def build(K, fmt):
        L = K.layers
        groups = [
            ((7, 3), variants(L.LocallyConnected1D, implementation, "channels_last", KERNELS_1D), None),
            ((3, 7), variants(L.LocallyConnected1D, implementation, "channels_first", KERNELS_1D), None),
            ((5, 4, 2), variants(L.LocallyConnected2D, implementation, "channels_last", KERNELS_2D, True), None),
            ((2, 5, 4), variants(L.LocallyConnected2D, implementation, "channels_first", KERNELS_2D), None),
        ]
        inputs = [rand((BATCH, 7, 3), 1), rand((BATCH, 3, 7), 2), rand((BATCH, 5, 4, 2), 3), rand((BATCH, 2, 5, 4), 4)]
        return runnable(multi_branches(K, groups), inputs)

    return build


def lc_stack(K, fmt):
    # Locally-connected layers of every implementation inside a small model.
    L = K.layers
    x = K.Input((7, 7, 1))
    z = L.Conv2D(2, 3, activation="relu")(x)
    z = L.LocallyConnected2D(3, 2, activation="relu", implementation=2)(z)
    z = L.LocallyConnected2D(2, 2, strides=2, implementation=3)(z)
    z = L.Reshape((4, 2))(z)
    z = L.LocallyConnected1D(3, 2, implementation=1)(z)
    z = L.Flatten()(z)
    out = L.Dense(3, activation="softmax")(z)
    return K.Model(x, out), [rand((BATCH, 7, 7, 1), 6)]


BUILDERS = {**{f"implementation{i}": implementation_model(i) for i in (1, 2, 3)}, "lc_stack": lc_stack}

if __name__ == "__main__":
    run("locally_connected", BUILDERS, FORMATS)
