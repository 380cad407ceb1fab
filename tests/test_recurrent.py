"""Recurrent layers beyond the generic fixture test: stateful models across calls, variable time
steps, the weight preparation against textbook formulas, masks, and clean refusals."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, convert_and_import

from konverter.errors import KonverterError, UnsupportedModel
from konverter.graph import build_program
from konverter.h5reader import ModelFile, read_model
from konverter.layers import activations, embedding
from konverter.layers.base import Layer
from konverter.layers.recurrent import cells, loops, rnn

STATEFUL = sorted((FIXTURES / "stateful").glob("*.npz"))


def _stateful_reference(npz):
    with np.load(npz) as data:
        return data["x"], data["y"], int(data["reset_at"])


# ----------------------------------------------------------------------------- stateful models


@pytest.mark.parametrize("npz", STATEFUL, ids=[p.stem for p in STATEFUL])
def test_stateful_carried_state_matches_keras(npz, tmp_path):
    """predict(x) carries the state between calls like Keras; reset_states() starts again from zeros."""
    module = convert_and_import(npz.with_suffix(".keras" if "keras" in npz.stem else ".h5"), tmp_path)
    xs, ys, reset_at = _stateful_reference(npz)
    for call, (x, y) in enumerate(zip(xs, ys)):
        if call == reset_at:
            module.reset_states()
        assert_close(module.predict(x), y, f"{npz.stem} call {call}")


@pytest.mark.parametrize("npz", STATEFUL, ids=[p.stem for p in STATEFUL])
def test_stateful_explicit_state_matches_keras(npz, tmp_path):
    """predict(x, state=s) returns (y, new_state), per sample too, and leaves the carried state alone."""
    module = convert_and_import(npz.with_suffix(".keras" if "keras" in npz.stem else ".h5"), tmp_path)
    xs, ys, reset_at = _stateful_reference(npz)
    state = None
    for call, (x, y) in enumerate(zip(xs, ys)):
        got, state = module.predict(x, state=None if call == reset_at else state)
        assert_close(got, y, f"{npz.stem} explicit call {call}")
        assert all(s.shape[0] == len(x) for s in state)
    # Each row of a stateful batch is its own stream: run the samples one by one, unbatched.
    for row in range(xs.shape[1]):
        state = None
        for call in range(len(xs)):
            got, state = module.predict(xs[call][row], state=None if call == reset_at else state)
            assert_close(got, ys[call][row], f"{npz.stem} sample {row} call {call}")
    # The explicit calls above did not touch the carried state: a fresh sequence still matches.
    assert_close(module.predict(xs[0]), ys[0], f"{npz.stem} carried after explicit calls")


def test_stateful_state_errors(tmp_path):
    module = convert_and_import(FIXTURES / "stateful" / "stateful_gru_lstm__k2h5.h5", tmp_path)
    xs, _, _ = _stateful_reference(FIXTURES / "stateful" / "stateful_gru_lstm__k2h5.npz")
    _, state = module.predict(xs[0], state=None)
    with pytest.raises(ValueError, match="state must be"):
        module.predict(xs[0], state=state[:1])
    with pytest.raises(ValueError, match="carried state has shape"):
        module.predict(xs[0][:1], state=state)  # a batch of 1 with the state of a batch of 2
    assert "reset_states" in module.__all__


def test_stateless_models_have_no_state_api(tmp_path):
    module = convert_and_import(FIXTURES / "recurrent" / "lstm__k3keras.keras", tmp_path)
    assert not hasattr(module, "reset_states")
    with pytest.raises(TypeError):
        module.predict(np.zeros((6, 3), np.float32), state=None)


# ----------------------------------------------------------------------------- textbook references


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid_k2(x):
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def reference_gru(x, kernel, recurrent_kernel, bias, reset_after, rec_act=_sigmoid, mask=None, go_backwards=False):
    """Keras's GRU written from its documented equations, float64, one sample at a time."""
    u = recurrent_kernel.shape[0]
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * u))
    outs, h = [], np.zeros(u)
    steps = range(x.shape[0])[::-1] if go_backwards else range(x.shape[0])
    for t in steps:
        xw = x[t] @ kernel + b_in
        hu = h @ recurrent_kernel + b_rec
        z = rec_act(xw[:u] + hu[:u])
        r = rec_act(xw[u : 2 * u] + hu[u : 2 * u])
        if reset_after:
            hh = np.tanh(xw[2 * u :] + r * hu[2 * u :])
        else:
            hh = np.tanh(xw[2 * u :] + (r * h) @ recurrent_kernel[:, 2 * u :])
        new = z * h + (1 - z) * hh
        if mask is None or mask[t]:
            h = new
        outs.append(h)
    return np.array(outs), h


def reference_lstm(x, kernel, recurrent_kernel, bias, rec_act=_sigmoid):
    u = recurrent_kernel.shape[0]
    h, c, outs = np.zeros(u), np.zeros(u), []
    for t in range(x.shape[0]):
        zz = x[t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = rec_act(zz[:u]), rec_act(zz[u : 2 * u]), np.tanh(zz[2 * u : 3 * u]), rec_act(zz[3 * u :])
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.array(outs), h, c


def _layer(class_name, config, weights, keras_major=3):
    return Layer("rnn", class_name, config, weights, keras_major, [], {})


def _weights(rng, features, units, gates, bias_shape):
    return [
        rng.normal(0, 0.5, (features, gates * units)).astype(np.float32),
        rng.normal(0, 0.5, (units, gates * units)).astype(np.float32),
        rng.normal(0, 0.5, bias_shape).astype(np.float32),
    ]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_against_equations(reset_after, recurrent_activation, go_backwards):
    """The folded/halved/reordered weights still compute Keras's GRU (batch of 3, variable lengths)."""
    rng = np.random.RandomState(1)
    units, features = 5, 4
    weights = _weights(rng, features, units, 3, (2, 3 * units) if reset_after else (3 * units,))
    config = {"units": units, "reset_after": reset_after, "recurrent_activation": recurrent_activation}
    config.update(return_sequences=True, go_backwards=go_backwards)
    spec = rnn.RNNSpec(_layer("GRU", config, weights, keras_major=2), "GRU", config, weights, features)
    assert spec.gate == recurrent_activation
    rec_act = _sigmoid if recurrent_activation == "sigmoid" else _hard_sigmoid_k2
    fn, args, options = spec.loop()
    for steps in (1, 3, 8):  # any number of time steps
        x = rng.normal(size=(3, steps, features)).astype(np.float32)
        seq, h = fn(x, None, None, *args, **options)
        # A batch of one runs on 1-D vectors: the same numbers.
        one, one_h = fn(x[1:2], None, None, *args, **options)
        assert one.shape == (1, steps, units) and one_h.shape == (1, units)
        assert_close(one[0], seq[1], "GRU batch of one")
        assert_close(one_h[0], h[1], "GRU batch of one, state")
        assert seq.dtype == np.float32 and seq.shape == (3, steps, units)
        for b in range(3):
            want, want_h = reference_gru(x[b].astype(np.float64), *weights, reset_after, rec_act, None, go_backwards)
            assert_close(seq[b], want, f"GRU sample {b}")
            assert_close(h[b], want_h, f"GRU state {b}")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_sigmoid_gru_mask_state_and_large_inputs(go_backwards, reset_after):
    """The exp-based GRU loop: masked steps carry the state, an initial state is used, and huge
    pre-activations (exp overflowing to inf) give the sigmoid's exact limits, not NaN."""
    rng = np.random.RandomState(4)
    units, features = 3, 2
    weights = _weights(rng, features, units, 3, (2, 3 * units) if reset_after else (3 * units,))
    config = {"units": units, "return_sequences": True, "go_backwards": go_backwards, "reset_after": reset_after}
    spec = rnn.RNNSpec(_layer("GRU", config, weights), "GRU", config, weights, features)
    assert spec.gate == "sigmoid"
    gru, args, options = spec.loop()
    forward = dict(options, go_backwards=False)
    x = rng.normal(size=(2, 5, features)).astype(np.float32)
    mask = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]], bool)
    seq, h = gru(x, None, mask, *args, **options)
    for b in range(2):
        want, want_h = reference_gru(
            x[b].astype(np.float64), *weights, reset_after, mask=mask[b], go_backwards=go_backwards
        )
        assert_close(seq[b], want, f"masked GRU sample {b}")
        assert_close(h[b], want_h, f"masked GRU state {b}")
    # An initial state: running 2 + 3 steps equals running 5 steps at once.
    _, h2 = gru(x[:, :2], None, None, *args, **forward)
    whole, _ = gru(x, None, None, *args, **forward)
    rest, _ = gru(x[:, 2:], h2, None, *args, **forward)
    assert_close(rest, whole[:, 2:], "GRU continued from a state")
    big = (x * 1e4).astype(np.float32)
    with np.errstate(all="ignore"):  # as in the generated predict()
        got, _ = gru(big, None, None, *args, **options)
    for b in range(2):
        with np.errstate(over="ignore"):
            want, _ = reference_gru(big[b].astype(np.float64), *weights, reset_after, go_backwards=go_backwards)
        assert np.all(np.isfinite(got[b]))
        assert_close(got[b], want, f"GRU with huge inputs, sample {b}")


@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("batch", [2, 1])
def test_lstm_against_equations_with_mask(recurrent_activation, batch):
    """The LSTM loop with exp-based sigmoid gates and with hard_sigmoid (clipped) gates against the equations."""
    rng = np.random.RandomState(2)
    units, features = 4, 3
    weights = _weights(rng, features, units, 4, (4 * units,))
    config = {"units": units, "return_sequences": True, "recurrent_activation": recurrent_activation}
    spec = rnn.RNNSpec(_layer("LSTM", config, weights, keras_major=2), "LSTM", config, weights, features)
    rec_act = _sigmoid if recurrent_activation == "sigmoid" else _hard_sigmoid_k2
    assert spec.gate == recurrent_activation
    x = rng.normal(size=(2, 6, features)).astype(np.float32)[:batch]
    mask = np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1]], bool)[:batch]

    def run(mask, zero_masked=False):
        fn, args, options = spec.loop(zero_masked)
        return fn(x, None, None, mask, *args, **options)

    seq, h, c = run(mask)
    for b in range(batch):
        kept = x[b][mask[b]].astype(np.float64)
        want, want_h, want_c = reference_lstm(kept, *weights, rec_act=rec_act)
        # Masked steps repeat the previous output (zeros before the first real step).
        expected, last, k = [], np.zeros(units), 0
        for t in range(6):
            if mask[b, t]:
                last, k = want[k], k + 1
            expected.append(last)
        assert_close(seq[b], np.array(expected), f"LSTM sample {b}")
        assert_close(h[b], want_h, "LSTM h")
        assert_close(c[b], want_c, "LSTM c")
    zeroed, _, _ = run(mask, zero_masked=True)
    assert np.all(zeroed[~mask] == 0.0) and np.array_equal(zeroed[mask], seq[mask])
    # Without a mask (a batch of one then runs on 1-D vectors).
    seq, h, c = run(None)
    for b in range(batch):
        want, want_h, want_c = reference_lstm(x[b].astype(np.float64), *weights, rec_act=rec_act)
        assert_close(seq[b], want, f"LSTM unmasked sample {b}")
        assert_close(c[b], want_c, "LSTM unmasked c")


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("batch", [3, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_simple_rnn_against_equations(activation, batch, masked):
    """SimpleRNN on [x, h, 1] rows: in-place (tanh, relu) and copied-back (elu) activations, masks."""
    rng = np.random.RandomState(6)
    units, features = 4, 3
    weights = _weights(rng, features, units, 1, (units,))
    config = {"units": units, "activation": activation, "return_sequences": True, "go_backwards": True}
    spec = rnn.RNNSpec(_layer("SimpleRNN", config, weights), "SimpleRNN", config, weights, features)
    # tanh and relu run in place (activate_into), elu is computed and copied back.
    assert spec.activation is {"tanh": activations.tanh, "relu": activations.relu, "elu": cells.elu_default}[activation]
    x = rng.normal(size=(batch, 5, features)).astype(np.float32)
    mask = rng.rand(batch, 5) > 0.4 if masked else None
    fn, args, options = spec.loop()
    assert fn is loops.simple_rnn_sequence
    seq, h = fn(x, None, mask, *args, **options)
    act = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "elu": lambda v: np.where(v > 0, v, np.expm1(v))}
    kernel, recurrent_kernel, bias = (w.astype(np.float64) for w in weights)
    for b in range(batch):
        state, want = np.zeros(units), []
        for t in range(4, -1, -1):
            if mask is None or mask[b, t]:
                state = act[activation](x[b, t] @ kernel + state @ recurrent_kernel + bias)
            want.append(state)
        assert_close(seq[b], np.array(want), f"SimpleRNN sample {b}")
        assert_close(h[b], state, f"SimpleRNN state {b}")


@pytest.mark.parametrize("kind", ["GRU", "GRU_before", "LSTM", "SimpleRNN"])
def test_large_batches_run_in_chunks(kind):
    """Batches above chunk_rows go through the loops in chunks: same results, masks and states too."""
    rng = np.random.RandomState(7)
    units, features = 3, 2
    batch = loops.chunk_rows(np.empty((1, 4, features)), units) * 2 + 5
    assert batch < 20_000
    cls = kind.split("_")[0]
    gates = cells.GATE_COUNT[cls]
    bias_shape = (2, gates * units) if kind == "GRU" else (gates * units,)
    weights = _weights(rng, features, units, gates, bias_shape)
    config = {"units": units, "return_sequences": True, "reset_after": kind == "GRU"}
    spec = rnn.RNNSpec(_layer(cls, config, weights), cls, config, weights, features)
    fn, args, options = spec.loop(zero_masked=True)
    n_states = spec.state_count
    x = rng.normal(size=(batch, 4, features)).astype(np.float32)
    states = [rng.normal(size=(batch, units)).astype(np.float32) for _ in range(n_states)]
    mask = rng.rand(batch, 4) > 0.3
    whole = fn(x, *states, mask, *args, **options)
    parts = [
        fn(x[i : i + 1000], *[s[i : i + 1000] for s in states], mask[i : i + 1000], *args, **options)
        for i in range(0, batch, 1000)
    ]
    assert len(whole) == n_states + 1
    for got, want in zip(whole, zip(*parts)):
        assert got.shape[0] == batch
        assert_close(got, np.concatenate(want), f"{kind} in chunks")


@pytest.mark.parametrize("name", ["benchmark_gru__k2h5.h5", "bidirectional_masked__k3keras.keras"])
def test_recurrent_threads_equal_sequential(name, tmp_path):
    """The row loops allocate their buffers per call: concurrent predictions equal sequential ones."""
    module = convert_and_import(FIXTURES / "recurrent" / name, tmp_path)
    with np.load((FIXTURES / "recurrent" / name).with_suffix(".npz")) as ref:
        x = ref["x0"]
    data = x[np.random.default_rng(0).integers(len(x), size=24)]
    data[::3] *= 2.0  # vary the samples (a masked value stays masked: 0 * 2 = 0)
    large = np.concatenate([data] * 12)  # more than one chunk of the row loops
    calls = [lambda i: module.predict(data[i]), lambda i: module.predict(data[i : i + 1])]
    calls += [lambda i: module.predict(data[i : i + 4])]
    expected = [[call(i) for i in range(len(data))] for call in calls]
    expected_large = module.predict(large)
    start = threading.Barrier(4)

    def worker(seed: int) -> bool:
        start.wait()
        same = True
        for i in np.random.default_rng(seed).permutation(len(data)):
            for k, call in enumerate(calls):
                same &= np.array_equal(call(int(i)), expected[k][int(i)])
            if i % 6 == 0:
                same &= np.array_equal(module.predict(large), expected_large)
        return same

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(worker, range(4)))


def test_cudnn_layout_round_trip():
    """from_cudnn undoes the cuDNN layout that tf-keras writes (the fixture script writes it the same way)."""
    rng = np.random.RandomState(3)
    kernel, rec = rng.normal(size=(3, 8)), rng.normal(size=(2, 8))
    cudnn_kernel = np.hstack([k.T.reshape(k.shape, order="C") for k in np.hsplit(kernel, 4)])
    cudnn_rec = np.hstack([k.T for k in np.hsplit(rec, 4)])
    bias = rng.normal(size=8)
    got = cells.from_cudnn([cudnn_kernel, cudnn_rec, np.concatenate([bias, -bias / 2])], 4)
    assert np.array_equal(got[0], kernel) and np.array_equal(got[1], rec)
    assert np.allclose(got[2], bias / 2)


def test_variable_time_steps(tmp_path):
    """A GRU with input shape (None, 4) runs on any length; checked against the equations."""
    path = FIXTURES / "recurrent" / "gru_reset_after__k3keras.keras"
    module = convert_and_import(path, tmp_path)
    assert module.INPUT_SHAPE == (None, None, 4)
    w1, w2, dense = read_model(path).weights.values()  # the GRU, the GRU, the Dense, in order
    rng = np.random.RandomState(4)
    for steps in (1, 2, 11):
        x = rng.normal(size=(2, steps, 4)).astype(np.float32)
        got = module.predict(x)
        for b in range(2):
            seq, _ = reference_gru(x[b].astype(np.float64), *w1, True)
            u = w2[1].shape[0]
            b_in, b_rec = w2[2]
            h = np.zeros(u)
            for t in range(steps):  # second GRU uses softsign as its activation
                xw, hu = seq[t] @ w2[0] + b_in, h @ w2[1] + b_rec
                z, r = _sigmoid(xw[:u] + hu[:u]), _sigmoid(xw[u : 2 * u] + hu[u : 2 * u])
                pre = xw[2 * u :] + r * hu[2 * u :]
                h = z * h + (1 - z) * pre / (1 + np.abs(pre))
            assert_close(got[b], h @ dense[0] + dense[1], f"{steps} steps sample {b}")


# ----------------------------------------------------------------------------- embeddings and masks


def test_embedding_lookup_indices():
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(embedding.embedding_lookup(np.array([[3.0, 0.0]], np.float32), table), table[[[3, 0]]])
    assert embedding.embedding_lookup(np.array([[[1, 2]]], np.int32), table).shape == (1, 1, 2, 3)
    for bad in ([[-1]], [[4]]):
        with pytest.raises(ValueError, match="embedding indices"):
            embedding.embedding_lookup(np.array(bad, np.int32), table)


def test_masking_function():
    x = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]], np.float32)
    out, keep = embedding.masking(x, 0.0)
    assert keep.tolist() == [[False, True, False]]
    assert np.array_equal(out, x) and out.dtype == np.float32


def _model(layers, keras_version="3.5.0", weights=None):
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": layers}}
    return ModelFile("m.h5", "h5", keras_version, "tensorflow", config, weights or {})


def _entry(cls, **config):
    # Real layer configs always carry `trainable` (an entry without it reads as a Keras 3 op node).
    return {"class_name": cls, "config": {"name": config.pop("name", cls.lower()), "trainable": True, **config}}


def test_mask_passes_through_dense_to_the_rnn():
    rng = np.random.RandomState(5)
    layers = [
        _entry("InputLayer", batch_shape=[None, 4, 2]),
        _entry("Masking", mask_value=0.0),
        _entry("Dense", units=3, activation="relu", name="dense"),
        _entry("SimpleRNN", units=2, name="rnn"),
    ]
    weights = {
        ("dense",): [rng.normal(size=(2, 3)).astype(np.float32), np.zeros(3, np.float32)],
        ("rnn",): [rng.normal(size=(3, 2)).astype(np.float32), np.eye(2, dtype=np.float32), np.zeros(2, np.float32)],
    }
    program = build_program(_model(layers, weights=weights))
    rnn_op = [op for op in program.ops if op.fn is loops.simple_rnn_sequence][0]
    mask_arg = rnn_op.args[2]
    assert mask_arg is not None and mask_arg.dtype == "bool"


@pytest.mark.parametrize(
    "inner, message",
    [
        (_entry("Lambda", function="x"), "Lambda"),
        (_entry("NoSuchLayer"), "not supported"),
    ],
)
def test_time_distributed_refuses_unsupported_inner_layers(inner, message):
    layers = [_entry("InputLayer", batch_shape=[None, 4, 2]), _entry("TimeDistributed", layer=inner)]
    with pytest.raises(KonverterError, match=message):
        build_program(_model(layers))


def test_recurrent_options_refused_cleanly():
    base = [_entry("InputLayer", batch_shape=[None, 4, 2])]
    w = {("rnn",): [np.zeros((2, 6), np.float32), np.zeros((2, 6), np.float32), np.zeros(6, np.float32)]}
    for extra, message in (({"time_major": True}, "time_major"), ({"recurrent_activation": "swish"}, "swish")):
        layers = base + [_entry("GRU", units=2, name="rnn", reset_after=False, **extra)]
        with pytest.raises(UnsupportedModel, match=message):
            build_program(_model(layers, weights=w))


def test_keras2_hard_sigmoid_is_not_sigmoid():
    """The Keras 2 hard_sigmoid folds 0.2 and 0.5 into the weights; Keras 3's folds 1/6."""
    weights = [np.ones((1, 3), np.float32), np.zeros((1, 3), np.float32), np.zeros(3, np.float32)]
    config = {"units": 1, "recurrent_activation": "hard_sigmoid", "reset_after": False}
    k2 = rnn.RNNSpec(_layer("GRU", config, weights, 2), "GRU", config, weights, 1)
    k3 = rnn.RNNSpec(_layer("GRU", config, weights, 3), "GRU", config, weights, 1)
    assert k2.gate == k3.gate == "hard_sigmoid"  # a clip on folded columns
    k2_step, k3_step = k2.weights["step_kernel"], k3.weights["step_kernel"]  # rows: W, U, bias
    assert k2_step[0, :2].tolist() == pytest.approx([0.2, 0.2]) and k2_step[-1, :2].tolist() == [0.5, 0.5]
    assert k3_step[0, :2].tolist() == pytest.approx([1 / 6, 1 / 6]) and k3_step[-1, :2].tolist() == [0.5, 0.5]


def test_generated_recurrent_file_is_deterministic_and_numpy_only(tmp_path):
    from konverter.convert import generate_source

    model = FIXTURES / "recurrent" / "bidirectional_masked__k3keras.keras"
    first, _, _ = generate_source(model)
    second, _, _ = generate_source(model)
    assert first == second
    imports = {line.split()[1] for line in first.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"base64", "math", "numpy"}
    # Activations passed to the loops are copied in as plain functions, never referenced by module.
    assert "gru_sequence(" in first and "lstm_sequence(" in first and "activations." not in first


def test_bad_recurrent_weights_are_bad_files():
    from konverter.errors import BadModelFile

    base = [_entry("InputLayer", batch_shape=[None, 4, 2])]
    wrong_kernel = {("rnn",): [np.zeros((3, 6), np.float32), np.zeros((2, 6), np.float32), np.zeros(6, np.float32)]}
    with pytest.raises(BadModelFile, match="kernel has shape"):
        build_program(_model(base + [_entry("GRU", units=2, name="rnn")], weights=wrong_kernel))
    two_row_bias = {
        ("rnn",): [np.zeros((2, 6), np.float32), np.zeros((2, 6), np.float32), np.zeros((2, 6), np.float32)]
    }
    with pytest.raises(BadModelFile, match="contradicts reset_after"):
        build_program(_model(base + [_entry("GRU", units=2, name="rnn", reset_after=False)], weights=two_row_bias))


def test_every_unsupported_wrapped_layer_is_reported_at_once():
    inp = _entry("InputLayer", batch_shape=[None, 4, 2], name="inp")
    layers = [inp, _entry("Bidirectional", name="b", layer=_entry("NoSuchRNN", units=2, name="inner_rnn"))]
    layers.append(_entry("TimeDistributed", name="t", layer=_entry("Lambda", function="f", name="lam")))
    with pytest.raises(UnsupportedModel) as info:
        build_program(_model(layers))
    assert "'inner_rnn' (NoSuchRNN: not supported)" in str(info.value)
    assert "'lam' (Lambda: runs Python code" in str(info.value)


def test_changing_a_result_does_not_change_the_carried_state(tmp_path):
    """stateful_bidirectional ends in a stateful GRU: its output IS its state unless copied."""
    npz = FIXTURES / "stateful" / "stateful_bidirectional__k3h5.npz"
    module = convert_and_import(npz.with_suffix(".h5"), tmp_path)
    xs, ys, _ = _stateful_reference(npz)
    y0 = module.predict(xs[0])
    y0 += 100.0
    assert_close(module.predict(xs[1]), ys[1], "after changing the first result")


def test_stacked_cells_refusals_and_bad_weights():
    from konverter.errors import BadModelFile

    base = [_entry("InputLayer", batch_shape=[None, 4, 2])]
    cells = [_entry("SimpleRNNCell", units=2), _entry("GRUCell", units=2, reset_after=False)]
    w = [np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
    w += [np.zeros((2, 6), np.float32), np.zeros((2, 6), np.float32), np.zeros(6, np.float32)]
    reversed_states = _entry("StackedRNNCells", cells=cells, reverse_state_order=True)
    with pytest.raises(UnsupportedModel, match="reverse_state_order"):
        build_program(_model(base + [_entry("RNN", name="rnn", cell=reversed_states)], weights={("rnn",): w}))
    stack = _entry("StackedRNNCells", cells=cells)
    with pytest.raises(BadModelFile, match="more than its cells use"):
        build_program(_model(base + [_entry("RNN", name="rnn", cell=stack)], weights={("rnn",): w + w[:1]}))
    program = build_program(_model(base + [_entry("RNN", name="rnn", cell=stack)], weights={("rnn",): w}))
    # One loop per cell, in the stack's order.
    assert [op.fn for op in program.ops] == [loops.simple_rnn_sequence, loops.gru_sequence]
