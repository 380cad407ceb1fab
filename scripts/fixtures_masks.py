"""Fixtures for issue 12's masks: a Keras mask (Masking, Embedding(mask_zero), a `mask=` argument)
through normalization, activations, dropout-like layers, merges, attention and Softmax.

Run with the fixture virtualenv: `/work/venv-keras/bin/python scripts/fixtures_masks.py [--only NAME]`.

A mask is invisible in a layer's own output values; a recurrent layer after it shows it (a masked
step carries the previous state), so most models end their branches in a small RNN. Inputs are
padded with zero steps (Masking's mask_value) after, before and between the real ones, and some
samples have steps that every input masks, where Keras's versions disagree most.
"""

from __future__ import annotations

import fixturelib
import numpy as np
from fixturelib import FIXTURES, is_keras3, keras_for, rand, run
from fixtures_breadth import formats, save
from fixtures_functional import deflate_archives

FAMILY = "masks"
BATCH = 4
KERAS3 = ("k3h5", "k3keras")


def padded(shape, seed, zero_steps):
    """Random (batch, steps, features) values with the steps listed per sample set to zero."""
    x = rand(shape, seed)
    for sample, steps in enumerate(zero_steps):
        x[sample, list(steps)] = 0.0
    return x


def rnn(K, units=2, **options):
    return K.layers.SimpleRNN(units, return_sequences=True, **options)


# ----------------------------------------------------------------------------- the issue's model


def issue_sequential(K, fmt):
    """The issue's model: a bidirectional GRU on Masking, then BatchNormalization (refused before);
    the Dense and LSTM after it show that the mask went on through both."""
    L = K.layers
    model = K.Sequential(
        [
            K.Input(shape=(6, 3)),
            L.Masking(),
            L.Bidirectional(L.GRU(4, return_sequences=True)),
            L.BatchNormalization(),
            L.Dense(4, activation="relu"),
            L.LSTM(3),
        ]
    )
    return model, [padded((BATCH, 6, 3), 1, [[4, 5], [0, 1], [2], []])]


def issue_functional(K, fmt):
    """The same in a Functional model (Keras 3.15 writes Masking as NotEqual/Any op nodes whose
    result reaches the bidirectional GRU and BatchNormalization as `mask=`), with the normalized
    sequence itself and a masked mean as outputs too."""
    L = K.layers
    x = K.Input(shape=(6, 3))
    h = L.Bidirectional(L.GRU(4, return_sequences=True))(L.Masking()(x))
    h = L.BatchNormalization()(h)
    last = L.GRU(3)(L.Dense(4, activation="tanh")(h))
    mean = L.GlobalAveragePooling1D()(h)
    return K.Model(x, [h, last, mean]), [padded((BATCH, 6, 3), 2, [[5], [0, 1, 2], [3], []])]


# ----------------------------------------------------------------------------- passing the mask on


def pass_through(K, fmt):
    """Layers that pass the mask on in every Keras: normalizations, activations, dropout-likes,
    Dense. A GRU at the end reads the mask they passed on. (tf-keras's GroupNormalization weighs
    its statistics by the mask, which a (batch, steps) mask cannot even broadcast to: Keras 3 only.)"""
    L = K.layers
    layers = [
        L.Masking(mask_value=0.0),
        L.LayerNormalization(),
        L.Dense(6),
        L.UnitNormalization(),
        *([L.GroupNormalization(groups=2)] if is_keras3(K) else []),
        L.Activation("tanh"),
        L.ReLU(negative_slope=0.1),
        L.LeakyReLU(),
        L.ELU(),
        L.PReLU(),
        L.Dropout(0.5),
        L.SpatialDropout1D(0.5),
        L.GaussianNoise(0.3),
        L.GaussianDropout(0.3),
        L.AlphaDropout(0.3),
        L.ActivityRegularization(l1=0.1),
        L.GRU(3, return_sequences=True),
    ]
    model = K.Sequential([K.Input(shape=(5, 4))] + layers)
    return model, [padded((BATCH, 5, 4), 3, [[3, 4], [0], [1, 2], []])]


def version_dependent(K, fmt):
    """Rescaling, Normalization and Identity pass the mask on in Keras 3 but not in tf-keras (their
    classes there do not support masking): the GRUs after them see it in one Keras only."""
    L = K.layers
    x = K.Input(shape=(5, 2))
    m = L.Masking()(x)
    scaled = L.Rescaling(0.5, offset=0.25)(m)
    normalized = L.Normalization(mean=[0.1, -0.2], variance=[2.0, 0.5])(m)
    same = L.Identity()(m)
    outs = [rnn(K)(scaled), rnn(K)(normalized), rnn(K)(same)]
    return K.Model(x, outs), [padded((BATCH, 5, 2), 4, [[4], [0, 1], [2], []])]


def dropped(K, fmt):
    """Layers that do not support masking: Keras computes without the mask and drops it (the GRU
    after a convolution sees none); GlobalMaxPooling1D takes the masked steps into its maximum."""
    L = K.layers
    x = K.Input(shape=(6, 3))
    m = L.Masking()(x)
    conv = L.Conv1D(4, 3, padding="same")(m)
    outs = [rnn(K)(conv), L.GlobalMaxPooling1D()(m), rnn(K)(L.Reshape((6, 3))(m))]
    return K.Model(x, outs), [padded((BATCH, 6, 3), 5, [[5], [0, 1], [], [2, 3]])]


# ----------------------------------------------------------------------------- merges


def merges(K, fmt):
    """Every merge of two masked branches and of a masked with an unmasked one (tf-keras ANDs the
    masks that exist; Keras 3 ORs them when all exist, else drops them, and lets masked steps take
    no part in Multiply, Maximum and Minimum); Concatenate along the features and along time."""
    L = K.layers
    a, b = K.Input(shape=(5, 3)), K.Input(shape=(5, 3))
    ma, mb = L.Masking()(a), L.Masking()(b)
    merged = [
        L.Add()([ma, mb]),
        L.Add()([ma, b]),
        L.Add()([b, ma]),
        L.Subtract()([ma, mb]),
        L.Average()([ma, mb, b]),
        L.Multiply()([ma, mb]),
        L.Multiply()([ma, b]),
        L.Maximum()([ma, mb]),
        L.Maximum()([b, ma]),
        L.Minimum()([ma, b, mb]),
        L.Concatenate()([ma, mb]),
        L.Concatenate()([b, ma]),
        L.Concatenate(axis=1)([ma, mb]),
    ]
    if is_keras3(K):  # tf-keras cannot build it: an unmasked input's all-True mask has the features' width
        merged.append(L.Concatenate(axis=1)([b, ma]))
    probes = {3: rnn(K), 6: rnn(K)}  # one RNN per width, shared (a weight group less per merge)
    outs = []
    for y in merged:
        outs += [y, probes[y.shape[-1]](y)]
    dot = L.Dot(axes=(2, 2))([ma, mb])  # drops the masks: the RNN sees none
    outs.append(rnn(K)(dot))
    xa = padded((BATCH, 5, 3), 6, [[4], [1, 2], [], [0, 1, 2, 3, 4]])
    xb = padded((BATCH, 5, 3), 7, [[4], [0], [3], [2]])
    return K.Model([a, b], outs), [xa, xb]


def embedding_merge(K, fmt):
    """Masks from Embedding(mask_zero=True) (Keras 3.15 writes NotEqual op nodes) through Dense and
    a residual Add, into an LSTM and a masked mean."""
    L = K.layers
    tokens = K.Input(shape=(6,), dtype="int32")
    e = L.Embedding(10, 4, mask_zero=True)(tokens)
    h = L.Add()([e, L.Dense(4, activation="relu")(e)])
    h = L.LayerNormalization()(h)
    x = np.random.RandomState(8).randint(1, 10, size=(BATCH, 6)).astype(np.int32)
    x[0, 4:] = 0
    x[1, :2] = 0
    x[2, 3] = 0
    return K.Model(tokens, [L.LSTM(3)(h), L.GlobalAveragePooling1D()(h)]), [x]


# ----------------------------------------------------------------------------- attention


def attention(K, fmt):
    """Attention and AdditiveAttention on a masked query and value (masked value steps get no
    weight, masked query steps give zeros), causal too; the outputs keep the query's mask."""
    L = K.layers
    q, v = K.Input(shape=(4, 3)), K.Input(shape=(5, 3))
    mq, mv = L.Masking()(q), L.Masking()(v)
    probe, outs = rnn(K), []  # one RNN, shared
    for layer in (
        L.Attention(),
        L.Attention(use_scale=True, score_mode="concat"),
        L.AdditiveAttention(),
    ):
        y = layer([mq, mv])
        outs += [y, probe(y)]
    outs.append(L.Attention()([mq, mv], use_causal_mask=True))
    outs.append(L.Attention()([q, mv]))  # only the value masked
    xq = padded((BATCH, 4, 3), 9, [[3], [0], [], [1, 2]])
    xv = padded((BATCH, 5, 3), 10, [[4], [1, 2], [0, 1, 2, 3, 4], []])
    return K.Model([q, v], outs), [xq, xv]


def multi_head_attention(K, fmt):
    """MultiHeadAttention with masked query and value (masked query steps are fully masked rows:
    uniform weights in Keras 3.7+'s fused kernel and in tf-keras, zeros through Keras 3's Softmax
    when dropout is set), causal self-attention, an attention_mask given at call time, and a
    transformer block: Keras 3.7+ deletes the masks of the tensors MultiHeadAttention was called
    on, so the residual Add after it has none and the second attention sees none. (Each attention
    has Masking layers of its own: where two read one masked tensor side by side, which of them
    Keras runs first decides what the other sees, and Konverter refuses that.)"""
    L = K.layers
    q, v = K.Input(shape=(4, 3)), K.Input(shape=(5, 3))
    allowed = K.Input(shape=(4, 5), dtype="bool")

    def masked(x):
        return L.Masking()(x)

    cross = L.MultiHeadAttention(num_heads=2, key_dim=2)(masked(q), masked(v))
    dropout = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2, dropout=0.4)(masked(q), masked(v))
    given = L.MultiHeadAttention(num_heads=1, key_dim=2)(masked(q), masked(v), attention_mask=allowed)
    mv = masked(v)
    causal = L.MultiHeadAttention(num_heads=2, key_dim=2)(mv, mv, use_causal_mask=True)
    d = L.Dropout(0.2)(masked(q))  # the identity at inference, a tensor of its own in Keras
    a = L.MultiHeadAttention(num_heads=2, key_dim=2)(d, d)
    h = L.LayerNormalization()(L.Add()([d, a]))
    block = L.MultiHeadAttention(num_heads=2, key_dim=2)(h, h)
    probe = rnn(K)  # shared
    outs = [cross, probe(cross), dropout, given, causal, probe(causal), h, block, probe(block)]
    xq = padded((BATCH, 4, 3), 11, [[3], [0, 1], [], [2]])
    xv = padded((BATCH, 5, 3), 12, [[4], [1], [0, 1, 2, 3, 4], []])
    mask = np.random.RandomState(13).rand(BATCH, 4, 5) > 0.3
    mask[:, :, 0] = True
    return K.Model([q, v, allowed], outs), [xq, xv, mask]


def group_query_attention(K, fmt):
    """Keras 3's GroupQueryAttention on masked query and value, with and without dropout (the two
    softmax paths) and causal."""
    L = K.layers
    q, v = K.Input(shape=(4, 4)), K.Input(shape=(5, 4))
    mq, mv = L.Masking()(q), L.Masking()(v)
    gqa = L.GroupQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2)
    slow = L.GroupQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=1, dropout=0.3)
    y = gqa(mq, mv)
    outs = [y, rnn(K)(y), slow(mq, mv), gqa(mv, mv, use_causal_mask=True)]
    xq = padded((BATCH, 4, 4), 14, [[3], [0, 1], [], [2]])
    xv = padded((BATCH, 5, 4), 15, [[4], [1], [0, 1, 2, 3, 4], []])
    return K.Model([q, v], outs), [xq, xv]


# ----------------------------------------------------------------------------- Softmax


def softmax(K, fmt):
    """Softmax called with a boolean mask (an input): of the same shape, broadcast along the query
    axis, along axis 1, and with rows that the mask hides entirely (zeros in Keras 3.10+, uniform in
    tf-keras); tf-keras's robust_masking too. A GRU after one shows the mask passed on."""
    L = K.layers
    x = K.Input(shape=(3, 4))
    full = K.Input(shape=(3, 4), dtype="bool")
    columns = K.Input(shape=(1, 4), dtype="bool")
    outs = [
        L.Softmax()(x, mask=full),
        L.Softmax()(x, mask=columns),
        L.Softmax(axis=1)(x, mask=full),
    ]
    if not is_keras3(K):
        outs.append(L.Softmax(robust_masking=True)(x, mask=full))
    rng = np.random.RandomState(16)
    m_full = rng.rand(BATCH, 3, 4) > 0.4
    m_full[0, 1] = False  # a row with every position masked
    m_cols = rng.rand(BATCH, 1, 4) > 0.4
    m_cols[1] = False
    return K.Model([x, full, columns], outs), [rand((BATCH, 3, 4), 17, scale=3.0), m_full, m_cols]


NOT_K2KERAS = ("k2h5", "k3h5", "k3keras")  # tf-keras's .keras adds nothing for these layers but 30 KB each
BUILDERS = {
    "issue_sequential": issue_sequential,
    "issue_functional": issue_functional,
    "pass_through": formats(*NOT_K2KERAS)(pass_through),
    "version_dependent": formats(*NOT_K2KERAS)(version_dependent),
    "dropped": formats(*NOT_K2KERAS)(dropped),
    "merges": formats(*NOT_K2KERAS)(merges),
    "embedding_merge": formats(*NOT_K2KERAS)(embedding_merge),
    "attention": formats(*NOT_K2KERAS)(attention),
    "multi_head_attention": formats(*NOT_K2KERAS)(multi_head_attention),
    "group_query_attention": formats(*KERAS3)(group_query_attention),
    "softmax": formats(*NOT_K2KERAS)(softmax),
}

# fixtures_breadth's save: Keras 3 writes op nodes (the masks) into .h5 but cannot read them back,
# so such a file is kept without the reload check (the outputs come from the in-memory model).
fixturelib.save = save


if __name__ == "__main__":
    keras_for("k3keras")  # fail early without Keras
    run(FAMILY, BUILDERS)
    deflate_archives(FIXTURES / FAMILY)
