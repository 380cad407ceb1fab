"""Fixtures for issue 5: SimpleRNN, GRU, LSTM, Bidirectional, TimeDistributed, Embedding, Masking.

Run with the fixture virtualenv from `scripts/`:
    /work/venv-keras/bin/python fixtures_recurrent.py [--only NAME]          # tests/fixtures/recurrent/
    /work/venv-keras/bin/python fixtures_recurrent.py --stateful             # tests/fixtures/stateful/
    /work/venv-keras/bin/python fixtures_recurrent.py --old                  # CuDNN / Keras 2.2-era files

Every model is built and run by real Keras (tf-keras for k2*, Keras 3 for k3*). The `--old` files
cannot be produced by any Keras installable here (CuDNNGRU/CuDNNLSTM need TF 1.x and a GPU, Keras
2.2 needs Python <= 3.7): they are REWRITTEN with h5py from real tf-keras fixtures (weights converted
to the cuDNN layout exactly as tf-keras's `_convert_rnn_weights` does in reverse, class renamed,
2.2-era config keys added), and keep the outputs real tf-keras computed for the original model.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
from fixturelib import FIXTURES, ROOT, keras_for, rand, randomize, run

BATCH = 4


def seq(K, input_shape, layers, dtype=None):
    kwargs = {"dtype": dtype} if dtype else {}
    return K.Sequential([K.Input(shape=input_shape, **kwargs)] + layers)


def padded(shape, seed, lengths, pre=()):
    """Random sequences with zero steps after `lengths[i]` (post-padding) and before `pre[i]`."""
    x = rand(shape, seed)
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    for i, n in enumerate(pre):
        x[i, :n] = 0.0
    return x


# ----------------------------------------------------------------------------- plain recurrent layers


def simple_rnn(K, fmt):
    L = K.layers
    layers = [
        L.SimpleRNN(6, return_sequences=True, activation="relu"),
        L.SimpleRNN(5, go_backwards=True, return_sequences=True),
        L.SimpleRNN(4, use_bias=False),
        L.Dense(3),
    ]
    return seq(K, (7, 4), layers), [rand((BATCH, 7, 4), 1)]


def gru_reset_after(K, fmt):
    L = K.layers
    # Variable number of time steps (None) in the input shape.
    layers = [L.GRU(6, return_sequences=True), L.GRU(5, activation="softsign"), L.Dense(2)]
    return seq(K, (None, 4), layers), [rand((BATCH, 6, 4), 2)]


def gru_reset_before(K, fmt):
    # reset_after=False, go_backwards, no bias, and hard_sigmoid gates: Keras 2's hard_sigmoid is
    # clip(0.2x+0.5), Keras 3's clip(x/6+0.5): both computed by real Keras here.
    L = K.layers
    layers = [
        L.GRU(6, reset_after=False, return_sequences=True, go_backwards=True),
        L.GRU(5, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.GRU(4, reset_after=False, use_bias=False, return_sequences=True),
        L.GRU(3, reset_after=True, use_bias=False, go_backwards=True, return_sequences=True),
        L.LSTM(4, recurrent_activation="hard_sigmoid", activation="relu"),
    ]
    return seq(K, (5, 3), layers), [rand((BATCH, 5, 3), 3, 2.0)]


def lstm(K, fmt):
    L = K.layers
    layers = [
        L.LSTM(6, return_sequences=True),
        L.LSTM(5, use_bias=False, go_backwards=True, return_sequences=True, recurrent_activation="tanh"),
        L.LSTM(4, activation="elu", unroll=True),
        L.Dense(2, activation="softmax"),
    ]
    return seq(K, (6, 3), layers), [rand((BATCH, 6, 3), 5)]


def rnn_cells(K, fmt):
    # The generic RNN layer around the built-in cells, also inside Bidirectional.
    if fmt == "k2keras":
        return None
    L = K.layers
    layers = [
        L.RNN(L.LSTMCell(4), return_sequences=True),
        L.Bidirectional(L.RNN(L.SimpleRNNCell(2), return_sequences=True)),
        L.RNN(L.GRUCell(3, reset_after=False), go_backwards=True),
    ]
    return seq(K, (5, 3), layers), [rand((BATCH, 5, 3), 19)]


def stacked_cells(K, fmt):
    # RNN around StackedRNNCells (also given as a plain list of cells), inside Bidirectional, backwards.
    L = K.layers
    layers = [
        L.RNN(L.StackedRNNCells([L.LSTMCell(4), L.GRUCell(3)]), return_sequences=True),
        L.Bidirectional(L.RNN(L.StackedRNNCells([L.SimpleRNNCell(3), L.LSTMCell(2)]), return_sequences=True)),
        L.RNN([L.GRUCell(3, reset_after=False), L.SimpleRNNCell(2, activation="relu")], go_backwards=True),
    ]
    return seq(K, (5, 3), layers), [rand((BATCH, 5, 3), 20)]


def stacked_cells_states(K, fmt):
    # The cells' final states, flattened (LSTM h, c, then GRU h), returned and starting a second stack
    # (initial_state, nested per cell as both Kerases require).
    L = K.layers
    inp = K.Input(shape=(6, 3))

    def stack(**kwargs):
        return L.RNN(L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(2)]), return_sequences=True, **kwargs)

    y, *states = stack(return_state=True)(inp)
    states = [s for item in states for s in (item if isinstance(item, (list, tuple)) else [item])]
    z = stack(go_backwards=True)(y, initial_state=[states[:2], states[2]])
    return K.Model(inp, [z] + states), [rand((BATCH, 6, 3), 21)]


def stacked_cells_masked(K, fmt):
    # Masked steps skip every cell of the stack (Sequential: Keras 3.15 writes a Functional model's
    # Masking as explicit NotEqual/Any op nodes that its own .h5 loader cannot read back).
    L = K.layers
    layers = [
        L.Masking(),
        L.RNN(L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(2)]), return_sequences=True, zero_output_for_mask=True),
        L.RNN([L.SimpleRNNCell(3), L.GRUCell(2)], go_backwards=True),
    ]
    x = padded((BATCH, 6, 3), 22, lengths=[6, 4, 2, 6], pre=[0, 0, 0, 2])
    x[0, 3] = 0.0
    return seq(K, (6, 3), layers), [x]


# ----------------------------------------------------------------------------- masks and embeddings


def masked_lstm(K, fmt):
    # Padded sequences behind Masking: post-padding, pre-padding, a gap in the middle, one full row.
    L = K.layers
    layers = [
        L.Masking(mask_value=0.0),
        L.LSTM(6, return_sequences=True),
        L.Dense(5, activation="tanh"),
        L.Dropout(0.3),
        L.GRU(4, return_sequences=True, go_backwards=True),
        L.SimpleRNN(3),
    ]
    x = padded((BATCH, 7, 3), 6, lengths=[7, 4, 2, 7], pre=[0, 0, 0, 3])
    x[0, 3] = 0.0  # a masked step in the middle
    return seq(K, (7, 3), layers), [x]


def masked_sequences_out(K, fmt):
    # return_sequences outputs at masked steps: the previous output (zeros before the first real step).
    L = K.layers
    layers = [L.Masking(mask_value=0.5), L.GRU(4, return_sequences=True), L.TimeDistributed(L.Dense(2))]
    x = padded((BATCH, 5, 2), 7, lengths=[5, 3, 1, 5], pre=[0, 0, 0, 2]) + 0.5
    x[0, 2] = 0.5
    return seq(K, (5, 2), layers), [x.astype(np.float32)]


def text_classifier(K, fmt):
    # Embedding(mask_zero=True) + LSTM + softmax: integer inputs with zero padding.
    L = K.layers
    layers = [L.Embedding(30, 8, mask_zero=True), L.LSTM(8), L.Dense(3, activation="softmax")]
    x = np.random.RandomState(8).randint(1, 30, size=(BATCH, 9)).astype(np.int32)
    x[1, 5:] = 0
    x[2, :4] = 0
    x[3, 1:] = 0
    return seq(K, (9,), layers, dtype="int32"), [x]


def masked_average_classifier(K, fmt):
    # Embedding(mask_zero=True) -> GlobalAveragePooling1D (a mean over the real steps only) -> Dense.
    L = K.layers
    layers = [L.Embedding(20, 6, mask_zero=True), L.GlobalAveragePooling1D(), L.Dense(3, activation="softmax")]
    x = np.random.RandomState(18).randint(1, 20, size=(BATCH, 7)).astype(np.int32)
    x[0, 3:] = 0
    x[2, 1:] = 0
    return seq(K, (7,), layers, dtype="int32"), [x]


def embedding_float(K, fmt):
    # Float inputs holding integers, of rank 2 per sample, no mask: Embedding -> Reshape -> GRU.
    L = K.layers
    layers = [L.Embedding(12, 3), L.Reshape((4, 6)), L.GRU(3)]
    x = np.random.RandomState(9).randint(0, 12, size=(BATCH, 4, 2)).astype(np.float32)
    return seq(K, (4, 2), layers), [x]


def explicit_mask(K, fmt):
    # A mask given at call time (mask=): a boolean model input here; Keras 3.15 writes a Functional
    # model's Masking this way too (through NotEqual/Any op nodes).
    L = K.layers
    x_in = K.Input(shape=(5, 3), name="x")
    m_in = K.Input(shape=(5,), dtype="bool", name="m")
    seq = L.Bidirectional(L.GRU(3, return_sequences=True))(x_in, mask=m_in)
    seq = L.TimeDistributed(L.Dense(2))(seq, mask=m_in)
    last = L.LSTM(2)(seq, mask=m_in)
    model = K.Model([x_in, m_in], [seq, last])
    mask = np.ones((BATCH, 5), bool)
    mask[1, 3:] = False
    mask[2, :2] = False
    mask[3, 2] = False
    return model, [rand((BATCH, 5, 3), 23), mask]


def bidirectional_gru_sequences(K, fmt):
    L = K.layers
    layers = [
        L.Bidirectional(L.GRU(5, return_sequences=True)),
        L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.SimpleRNN(3), merge_mode="ave"),
    ]
    return seq(K, (6, 3), layers), [rand((BATCH, 6, 3), 10)]


def bidirectional_modes(K, fmt):
    L = K.layers
    layers = [
        L.Bidirectional(L.SimpleRNN(4, return_sequences=True), merge_mode="mul"),
        L.Bidirectional(L.GRU(3, reset_after=False, return_sequences=True)),
        L.TimeDistributed(L.Dense(2)),
    ]
    return seq(K, (5, 2), layers), [rand((BATCH, 5, 2), 11)]


def bidirectional_masked(K, fmt):
    # Inside Bidirectional, masked steps of returned sequences are zeros (Keras forces zero_output_for_mask).
    L = K.layers
    layers = [
        L.Masking(),
        L.Bidirectional(L.GRU(4, return_sequences=True)),
        L.Bidirectional(L.LSTM(3), merge_mode="concat"),
    ]
    x = padded((BATCH, 6, 3), 12, lengths=[6, 3, 1, 6], pre=[0, 0, 0, 2])
    return seq(K, (6, 3), layers), [x]


def bidirectional_functional(K, fmt):
    # An explicit, different backward layer (LSTM forward, GRU backward), states and merge_mode=None.
    L = K.layers
    inp = K.Input(shape=(5, 3))
    forward = L.LSTM(4, return_sequences=True)
    backward = L.GRU(4, return_sequences=True, go_backwards=True)  # Keras 3 mis-sizes unequal units
    mixed = L.Bidirectional(forward, backward_layer=backward)(inp)
    outs = L.Bidirectional(L.LSTM(3, return_state=True))(mixed)
    split = L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode=None)(inp)
    model = K.Model(inp, list(outs) + list(split))
    return model, [rand((BATCH, 5, 3), 13)]


def time_distributed(K, fmt):
    L = K.layers
    layers = [
        L.TimeDistributed(L.Flatten()),
        L.TimeDistributed(L.Dense(5, activation="relu")),
        L.TimeDistributed(L.BatchNormalization()),
        L.GRU(4, return_sequences=True),
        L.TimeDistributed(L.Dense(2, activation="softmax")),
    ]
    return seq(K, (6, 2, 3), layers), [rand((BATCH, 6, 2, 3), 14)]


def return_state_functional(K, fmt):
    # Encoder LSTM returning its states, decoder LSTM started from them (initial_state), GRU state too.
    L = K.layers
    enc_in = K.Input(shape=(5, 3), name="enc_in")
    dec_in = K.Input(shape=(4, 2), name="dec_in")
    enc_out, h, c = L.LSTM(4, return_state=True, name="encoder")(enc_in)
    dec_seq, h2, c2 = L.LSTM(4, return_sequences=True, return_state=True, name="decoder")(dec_in, initial_state=[h, c])
    g_out, g_state = L.GRU(3, return_state=True, go_backwards=True, name="gru")(dec_seq)
    y = L.Dense(2, name="head")(g_out)
    model = K.Model([enc_in, dec_in], [dec_seq, y, h2, c2, g_state, enc_out])
    return model, [rand((BATCH, 5, 3), 15), rand((BATCH, 4, 2), 16)]


def benchmark_gru(K, fmt):
    # The benchmark model: (20, 8) -> GRU 32 -> Dense 16 relu -> Dense 4 softmax.
    if fmt not in ("k2h5", "k3keras"):
        return None
    L = K.layers
    layers = [L.GRU(32), L.Dense(16, activation="relu"), L.Dense(4, activation="softmax")]
    return seq(K, (20, 8), layers), [rand((BATCH, 20, 8), 18)]


BUILDERS = {
    "benchmark_gru": benchmark_gru,
    "simple_rnn": simple_rnn,
    "gru_reset_after": gru_reset_after,
    "gru_reset_before": gru_reset_before,
    "lstm": lstm,
    "rnn_cells": rnn_cells,
    "stacked_cells": stacked_cells,
    "stacked_cells_states": stacked_cells_states,
    "stacked_cells_masked": stacked_cells_masked,
    "masked_lstm": masked_lstm,
    "masked_sequences_out": masked_sequences_out,
    "text_classifier": text_classifier,
    "masked_average_classifier": masked_average_classifier,
    "embedding_float": embedding_float,
    "explicit_mask": explicit_mask,
    "bidirectional_gru_sequences": bidirectional_gru_sequences,
    "bidirectional_modes": bidirectional_modes,
    "bidirectional_masked": bidirectional_masked,
    "bidirectional_functional": bidirectional_functional,
    "time_distributed": time_distributed,
    "return_state_functional": return_state_functional,
}

# tf-keras's own .keras format (2.12+) only for the fixtures that cover each layer's weight groups:
# the other models add nothing there and each file costs ~30 KB.
K2KERAS = {
    "simple_rnn",
    "gru_reset_after",
    "lstm",
    "bidirectional_gru_sequences",
    "time_distributed",
    "text_classifier",
    "stacked_cells",
}


def _k2keras_only_for_some(name, build):
    def wrapped(K, fmt):
        if fmt == "k2keras" and name not in K2KERAS:
            return None
        return build(K, fmt)

    return wrapped


BUILDERS = {name: _k2keras_only_for_some(name, build) for name, build in BUILDERS.items()}


# ----------------------------------------------------------------------------- stateful models


def _reset(model) -> None:
    for layer in model.layers:
        inner = [layer]
        if hasattr(layer, "forward_layer"):
            inner = [layer.forward_layer, layer.backward_layer]
        for item in inner:
            if getattr(item, "stateful", False):
                item.reset_states()


def stateful_models(K):
    L = K.layers
    gru = K.Sequential(
        [
            K.Input(batch_shape=(2, 3, 4)),
            L.GRU(5, stateful=True, return_sequences=True),
            L.LSTM(3, stateful=True),
            L.Dense(2),
        ]
    )
    bidir = K.Sequential(
        [
            K.Input(batch_shape=(3, 4, 2)),
            L.Bidirectional(L.SimpleRNN(3, stateful=True, return_sequences=True)),
            L.GRU(2, stateful=True, reset_after=False),
        ]
    )
    return {"stateful_gru_lstm": gru, "stateful_bidirectional": bidir}


def build_stateful() -> None:
    """Each file + npz: x (calls, batch, T, F) and y (calls, ...); states reset before call `reset_at`."""
    folder = FIXTURES / "stateful"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, fmt in enumerate(("k2h5", "k3keras", "k3h5")):
        K = keras_for(fmt)
        K.utils.set_random_seed(99 + seed)
        for name, model in stateful_models(K).items():
            randomize(model, 2000 + seed)
            _reset(model)
            ext = ".h5" if fmt.endswith("h5") else ".keras"
            path = folder / f"{name}__{fmt}{ext}"
            model.save(str(path))
            shape = (5,) + tuple(model.inputs[0].shape)
            xs = rand(shape, 20 + seed)
            reset_at = 3
            ys = []
            for i, x in enumerate(xs):
                if i == reset_at:
                    _reset(model)
                ys.append(np.asarray(model(x, training=False)))
            np.savez(folder / f"{name}__{fmt}.npz", x=xs, y=np.stack(ys), reset_at=reset_at)
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


# ----------------------------------------------------------------------------- old files (rewritten)


def _to_cudnn_gru(weights: list) -> list:
    kernel, recurrent, bias = weights
    kernel = np.hstack([k.T.reshape(k.shape, order="C") for k in np.hsplit(kernel, 3)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, 3)])
    return [kernel, recurrent, bias.reshape(-1)]


def _to_cudnn_lstm(weights: list) -> list:
    kernel, recurrent, bias = weights
    kernel = np.hstack([k.T.reshape(k.shape, order="C") for k in np.hsplit(kernel, 4)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, 4)])
    # Any split of the bias into two halves with the same sum is valid; an uneven one tests the sum.
    first = 0.25 * bias
    return [kernel, recurrent, np.concatenate([first, bias - first])]


CUDNN_KEYS = {
    "CuDNNGRU": ["units", "return_sequences", "return_state", "go_backwards", "stateful"],
    "CuDNNLSTM": ["units", "return_sequences", "return_state", "go_backwards", "stateful", "unit_forget_bias"],
}


def _rewrite(source, target, convert_layer) -> None:
    """Copy a tf-keras .h5, editing the model config and the weights of chosen layers."""
    import h5py

    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        root = f["model_weights"]
        for entry in config["config"]["layers"]:
            convert_layer(entry, root)
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
        f.attrs["keras_version"] = b"2.2.4"
        root.attrs["keras_version"] = b"2.2.4"


def _replace_weights(group, names: list, arrays: list, new_names: list) -> None:
    for name in names:
        del group[name]
    for name, array in zip(new_names, arrays):
        group.create_dataset(name, data=array.astype(np.float32))
    group.attrs["weight_names"] = np.array([n.encode("utf-8") for n in new_names])


def cudnn_models(K):
    L = K.layers
    return {
        "cudnn_gru": K.Sequential(
            [K.Input(shape=(5, 3)), L.GRU(4, return_sequences=True, name="gru_a"), L.GRU(3, name="gru_b")]
        ),
        "cudnn_lstm": K.Sequential(
            [
                K.Input(shape=(5, 3)),
                L.LSTM(4, return_sequences=True, go_backwards=True, name="lstm_a"),
                L.LSTM(3, name="lstm_b"),
                L.Dense(2, name="dense_1"),
            ]
        ),
        # A Keras 2.0-2.2-era config: old Embedding/LSTM arguments, `implementation`, `time_major`.
        "keras22_text": K.Sequential(
            [
                K.Input(shape=(6,)),
                L.Embedding(20, 4, mask_zero=True, name="embedding_1"),
                L.LSTM(5, recurrent_activation="hard_sigmoid", name="lstm_1"),
                L.Dense(2, activation="sigmoid", name="dense_1"),
            ]
        ),
    }


def build_old() -> None:
    import h5py

    K = keras_for("k2h5")
    folder = FIXTURES / "recurrent"
    for seed, (name, model) in enumerate(cudnn_models(K).items()):
        K.utils.set_random_seed(500 + seed)
        randomize(model, 3000 + seed)
        if name == "keras22_text":
            x = np.random.RandomState(30).randint(1, 20, size=(BATCH, 6)).astype(np.float32)
            x[1, 3:] = 0
        else:
            x = rand((BATCH,) + tuple(model.inputs[0].shape[1:]), 30 + seed)
        tmp = folder / f"_{name}_source.h5"
        model.save(str(tmp))
        y = np.asarray(model(x, training=False))

        def convert_layer(entry, root, name=name):
            cls, cfg = entry["class_name"], entry["config"]
            if cls in ("GRU", "LSTM") and name.startswith("cudnn"):
                group = root[cfg["name"]]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
                arrays = [group[n][()] for n in names]
                new_cls = "CuDNN" + cls
                arrays = _to_cudnn_gru(arrays) if cls == "GRU" else _to_cudnn_lstm(arrays)
                new_names = [f"{cfg['name']}/{w}:0" for w in ("kernel", "recurrent_kernel", "bias")]
                _replace_weights(group, names, arrays, new_names)
                entry["class_name"] = new_cls
                keep = ["name", "trainable", "batch_input_shape", "dtype"] + CUDNN_KEYS[new_cls]
                entry["config"] = {k: v for k, v in cfg.items() if k in keep}
                entry["config"]["kernel_initializer"] = {"class_name": "VarianceScaling", "config": {"seed": None}}
            elif name == "keras22_text":
                if cls == "Embedding":
                    cfg.update(input_length=6, embeddings_regularizer=None, activity_regularizer=None)
                    cfg["embeddings_initializer"] = {"class_name": "RandomUniform", "config": {"minval": -0.05}}
                if cls == "LSTM":
                    cfg.update(implementation=1, time_major=False, unroll=False)
                    cfg.pop("reset_after", None)
                    group = root[cfg["name"]]
                    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
                    arrays = [group[n][()] for n in names]
                    # Keras 2.2 named RNN weights `lstm_1/kernel:0` (no cell scope).
                    new_names = [f"lstm_1/{w}:0" for w in ("kernel", "recurrent_kernel", "bias")]
                    _replace_weights(group, names, arrays, new_names)

        _rewrite(tmp, folder / f"{name}__k22h5.h5", convert_layer)
        tmp.unlink()
        if name == "keras22_text":
            with h5py.File(folder / f"{name}__k22h5.h5", "r+") as f:
                config = json.loads(f.attrs["model_config"])
                # Keras <= 2.2.2: a Sequential config is a bare list of layers, the first with its input shape.
                layers = [e for e in config["config"]["layers"] if e["class_name"] != "InputLayer"]
                layers[0]["config"]["batch_input_shape"] = [None, 6]
                layers[0]["config"]["dtype"] = "float32"
                f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers}).encode()
        np.savez(folder / f"{name}__k22h5.npz", x0=x, y0=y)
        print(f"wrote tests/fixtures/recurrent/{name}__k22h5.h5", file=sys.stderr)


if __name__ == "__main__":
    if "--stateful" in sys.argv:
        build_stateful()
    elif "--old" in sys.argv:
        build_old()
    else:
        run("recurrent", BUILDERS)
