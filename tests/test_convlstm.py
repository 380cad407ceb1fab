"""ConvLSTM1D/2D/3D: the loop against Keras's cell equations written the slow way (naive convolutions,
float64, one time step at a time), both data formats; clean refusals. The fixtures check real Keras."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from test_conv import naive_conv

from konverter.errors import UnsupportedModel
from konverter.graph import build_program
from konverter.h5reader import ModelFile
from konverter.layers.activations import tanh
from konverter.layers.base import Layer
from konverter.layers.conv import conv_padding
from konverter.layers.recurrent.convlstm import _folded_weights, conv_lstm_sequence


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _hard_sigmoid_k3(v):
    return np.clip(v / 6.0 + 0.5, 0.0, 1.0)


def reference_conv_lstm(x, kernel, recurrent, bias, strides, dilation, padding, rec_act, go_backwards, h, c):
    """Keras's ConvLSTMCell, channels-last, columns i, f, c, o; returns the outputs of every step and the states."""
    f = recurrent.shape[-1] // 4
    ones = (1,) * (x.ndim - 3)
    outs = []
    steps = range(x.shape[1])[::-1] if go_backwards else range(x.shape[1])
    for t in steps:
        z = naive_conv(x[:, t], kernel, bias, strides, dilation, padding)
        z = z + naive_conv(h, recurrent, np.zeros(4 * f), ones, ones, "same")
        i, fg, cand, o = (
            rec_act(z[..., :f]),
            rec_act(z[..., f : 2 * f]),
            z[..., 2 * f : 3 * f],
            rec_act(z[..., 3 * f :]),
        )
        c = fg * c + i * np.tanh(cand)
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), h, c


CASES = [
    # spatial size, kernel size, strides, dilation, padding
    ((7,), (3,), (1,), (1,), "same"),
    ((7,), (2,), (2,), (1,), "same"),
    ((8,), (3,), (1,), (2,), "valid"),
    ((5, 6), (2, 3), (2, 1), (1, 1), "valid"),
    ((5, 6), (3, 3), (1, 1), (1, 2), "same"),
    ((3, 4, 3), (2, 1, 2), (1, 2, 1), (1, 1, 1), "same"),
]


@pytest.mark.parametrize("size,ks,strides,dilation,padding", CASES)
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_conv_lstm_matches_the_cell_equations(size, ks, strides, dilation, padding, channels_first, gate):
    rng = np.random.RandomState(len(size) + 10 * len(padding))
    batch, steps, channels, filters = 2, 3, 2, 3
    kernel = rng.normal(0, 0.4, ks + (channels, 4 * filters)).astype(np.float32)
    recurrent = rng.normal(0, 0.4, ks + (filters, 4 * filters)).astype(np.float32)
    bias = rng.normal(0, 0.4, 4 * filters).astype(np.float32)
    layer = Layer("c", f"ConvLSTM{len(size)}D", {}, [kernel, recurrent, bias], 3, [], {})
    folded = _folded_weights(layer, gate, filters, channels, ks)
    x = rng.normal(size=(batch, steps) + size + (channels,)).astype(np.float32)
    rec_act = _sigmoid if gate == "sigmoid" else _hard_sigmoid_k3
    out_size = [
        (n + sum(conv_padding(n, k, s, d, padding)) - (k - 1) * d - 1) // s + 1
        for n, k, s, d in zip(size, ks, strides, dilation)
    ]
    h0 = rng.normal(size=(batch, *out_size, filters))
    c0 = rng.normal(size=(batch, *out_size, filters))
    for go_backwards in (False, True):
        want, want_h, want_c = reference_conv_lstm(
            x.astype(np.float64), kernel, recurrent, bias, strides, dilation, padding, rec_act, go_backwards, h0, c0
        )
        options = dict(gate=gate, activation=tanh, kernel_size=ks, strides=strides, dilation=dilation)
        options.update(padding=padding, channels_first=channels_first, go_backwards=go_backwards)
        args = [x, h0.astype(np.float32), c0.astype(np.float32)]
        if channels_first:  # the same computation with the channel axis moved (after time for x)
            args = [np.moveaxis(x, -1, 2), np.moveaxis(args[1], -1, 1), np.moveaxis(args[2], -1, 1)]
        before = [a.copy() for a in args]
        seq, h, c = conv_lstm_sequence(*args, *folded, return_sequences=True, **options)
        last, _, _ = conv_lstm_sequence(*args, *folded, return_sequences=False, **options)
        for a, b in zip(args, before):
            assert np.array_equal(a, b), "the loop changed its input"
        if channels_first:
            seq, last, h, c = (
                np.moveaxis(seq, 2, -1),
                np.moveaxis(last, 1, -1),
                np.moveaxis(h, 1, -1),
                np.moveaxis(c, 1, -1),
            )
        assert seq.dtype == np.float32
        assert_close(seq, want, "ConvLSTM sequence")
        assert_close(last, want[:, -1], "ConvLSTM last output")
        assert_close(h, want_h, "ConvLSTM h")
        assert_close(c, want_c, "ConvLSTM c")


def _model(layers):
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": layers}}
    rng = np.random.RandomState(0)
    weights = {
        ("c",): [
            rng.normal(size=(3, 2, 8)).astype(np.float32),
            rng.normal(size=(3, 2, 8)).astype(np.float32),
            np.zeros(8, np.float32),
        ]
    }
    return ModelFile("m.h5", "h5", "3.5.0", "tensorflow", config, weights)


def _entry(cls, **config):
    return {"class_name": cls, "config": {"name": config.pop("name", cls.lower()), "trainable": True, **config}}


@pytest.mark.parametrize(
    "layers, message",
    [
        ([_entry("ConvLSTM1D", name="c", filters=2, kernel_size=3, padding="causal")], "padding 'causal'"),
        ([_entry("Masking"), _entry("ConvLSTM1D", name="c", filters=2, kernel_size=3)], "a mask"),
        (
            [_entry("Bidirectional", layer=_entry("ConvLSTM1D", name="c", filters=2, kernel_size=3))],
            "Bidirectional around ConvLSTM1D",
        ),
    ],
)
def test_conv_lstm_refusals_name_the_option(layers, message):
    inp = _entry("InputLayer", batch_shape=[None, 4, 5, 2])
    with pytest.raises(UnsupportedModel, match=message):
        build_program(_model([inp] + layers))


def test_conv_lstm_needs_known_spatial_sizes():
    inp = _entry("InputLayer", batch_shape=[None, 4, None, 2])
    with pytest.raises(UnsupportedModel, match="known sizes"):
        build_program(_model([inp, _entry("ConvLSTM1D", name="c", filters=2, kernel_size=3)]))
