"""Fixtures for ConvLSTM1D, ConvLSTM2D, ConvLSTM3D (issue 12), written into tests/fixtures/recurrent/.

Run with the fixture virtualenv from `scripts/`:
    /work/venv-keras/bin/python fixtures_convlstm.py [--only NAME]      # tests/fixtures/recurrent/
    /work/venv-keras/bin/python fixtures_convlstm.py --stateful         # tests/fixtures/stateful/
Several layers share one input as parallel branches of a Functional model (one output each), which
keeps the files few and small: padding, strides, dilation, return_sequences, return_state,
go_backwards, both data formats, no bias, hard_sigmoid gates and other activations, initial states.
"""

from __future__ import annotations

import sys

import numpy as np
from fixturelib import FIXTURES, ROOT, keras_for, rand, randomize, run

BATCH = 3


def branches(K, shape, layers):
    """One input, each layer applied to it, every output of every layer an output of the model."""
    return multi_branches(K, [(shape, layers, None)])


def multi_branches(K, groups):
    """Several inputs, each with its own parallel layers: groups of (input_shape, layers, sample or None).

    With a sample, a layer this Keras cannot compute on CPU (TensorFlow runs some channels_first
    convolutions only as NHWC) is left out; an input left without layers is dropped."""
    inputs, outputs = [], []
    for shape, layers, sample in groups:
        x = K.Input(shape=shape)
        kept = [layer for layer in layers if sample is None or _computes(layer, sample)]
        if kept:
            inputs.append(x)
        for layer in kept:
            y = layer(x)
            outputs += list(y) if isinstance(y, (list, tuple)) else [y]
    return K.Model(inputs, outputs)


def _computes(layer, sample) -> bool:
    try:
        layer(sample)
    except Exception as err:  # noqa: BLE001 - any backend failure means "leave this layer out"
        print(f"skipped {layer.name}: {type(err).__name__}: {str(err).splitlines()[0][:100]}")
        return False
    return True


def conv_lstm1d(K, fmt):
    L = K.layers
    layers = [
        L.ConvLSTM1D(3, 3, padding="same", return_sequences=True),
        L.ConvLSTM1D(2, 2, strides=2, padding="same", go_backwards=True),  # odd length 7 -> 4
        L.ConvLSTM1D(2, 3, dilation_rate=2, return_sequences=True, use_bias=False, activation="relu"),
        L.ConvLSTM1D(2, 3, recurrent_activation="hard_sigmoid", return_state=True),
    ]
    return branches(K, (4, 7, 2), layers), [rand((BATCH, 4, 7, 2), 40)]


def conv_lstm2d(K, fmt):
    L = K.layers
    layers = [
        L.ConvLSTM2D(3, 3, padding="same", return_sequences=True),
        L.ConvLSTM2D(2, (2, 3), strides=(2, 1), padding="valid", go_backwards=True, return_sequences=True),
        L.ConvLSTM2D(2, 3, dilation_rate=(1, 2), padding="same", recurrent_activation="hard_sigmoid", use_bias=False),
        L.ConvLSTM2D(2, 2, strides=2, padding="same", return_state=True, activation="elu"),
    ]
    return branches(K, (3, 5, 6, 2), layers), [rand((BATCH, 3, 5, 6, 2), 41)]


def conv_lstm3d(K, fmt):
    L = K.layers
    layers = [
        L.ConvLSTM3D(2, 2, padding="same", return_sequences=True),
        L.ConvLSTM3D(2, (2, 1, 2), strides=(1, 2, 1), go_backwards=True, return_state=True),
    ]
    return branches(K, (3, 3, 4, 3, 2), layers), [rand((BATCH, 3, 3, 4, 3, 2), 42)]


def conv_lstm_channels_first(K, fmt):
    # Every channels_first ConvLSTM that this Keras computes on CPU, side by side.
    L = K.layers
    cf = {"data_format": "channels_first"}
    samples = [rand((BATCH, 3, 2, 6), 43), rand((BATCH, 3, 2, 5, 4), 44), rand((BATCH, 2, 2, 3, 4, 3), 45)]
    groups = [
        (
            (3, 2, 6),
            [
                L.ConvLSTM1D(3, 3, padding="same", return_sequences=True, **cf),
                L.ConvLSTM1D(2, 2, strides=2, go_backwards=True, return_state=True, **cf),
            ],
            samples[0],
        ),
        (
            (3, 2, 5, 4),
            [
                L.ConvLSTM2D(2, (3, 2), padding="same", return_sequences=True, **cf),
                L.ConvLSTM2D(2, 2, strides=2, padding="same", **cf),
            ],
            samples[1],
        ),
        ((2, 2, 3, 4, 3), [L.ConvLSTM3D(2, 2, padding="same", return_sequences=True, **cf)], samples[2]),
    ]
    model = multi_branches(K, groups)
    shapes = [tuple(t.shape[1:]) for t in model.inputs]  # the inputs that kept a layer
    return model, [s for s in samples if tuple(s.shape[1:]) in shapes]


def conv_lstm_states(K, fmt):
    # An encoder's final states start a decoder (initial_state); its sequence feeds a Conv2D head.
    L = K.layers
    enc_in = K.Input(shape=(3, 4, 4, 2), name="enc_in")
    dec_in = K.Input(shape=(2, 4, 4, 1), name="dec_in")
    _, h, c = L.ConvLSTM2D(3, 3, padding="same", return_state=True, name="encoder")(enc_in)
    seq = L.ConvLSTM2D(3, 3, padding="same", return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    head = L.TimeDistributed(L.Conv2D(1, 1))(seq)
    return K.Model([enc_in, dec_in], [head, h]), [rand((BATCH, 3, 4, 4, 2), 46), rand((BATCH, 2, 4, 4, 1), 47)]


BUILDERS = {
    "conv_lstm1d": conv_lstm1d,
    "conv_lstm2d": conv_lstm2d,
    "conv_lstm3d": conv_lstm3d,
    "conv_lstm_channels_first": conv_lstm_channels_first,
    "conv_lstm_states": conv_lstm_states,
}


def build_stateful() -> None:
    """A stateful ConvLSTM1D into tests/fixtures/stateful/, as fixtures_recurrent.py --stateful writes them:
    x (calls, batch, ...) and y (calls, ...), states reset before call `reset_at`."""
    folder = FIXTURES / "stateful"
    for seed, fmt in enumerate(("k2h5", "k3keras", "k3h5")):
        K = keras_for(fmt)
        K.utils.set_random_seed(150 + seed)
        L = K.layers
        layer = L.ConvLSTM1D(2, 3, padding="same", stateful=True, return_sequences=True)
        model = K.Sequential([K.Input(batch_shape=(2, 3, 5, 2)), layer, L.ConvLSTM1D(2, 2, stateful=True)])
        randomize(model, 2100 + seed)
        resets = [item for item in model.layers if getattr(item, "stateful", False)]
        for item in resets:
            item.reset_states()
        ext = ".h5" if fmt.endswith("h5") else ".keras"
        path = folder / f"stateful_conv_lstm__{fmt}{ext}"
        model.save(str(path))
        xs, reset_at, ys = rand((4, 2, 3, 5, 2), 60 + seed), 2, []
        for i, x in enumerate(xs):
            if i == reset_at:
                for item in resets:
                    item.reset_states()
            ys.append(np.asarray(model(x, training=False)))
        np.savez(folder / f"stateful_conv_lstm__{fmt}.npz", x=xs, y=np.stack(ys), reset_at=reset_at)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    if "--stateful" in sys.argv:
        build_stateful()
    else:
        run("recurrent", BUILDERS)
