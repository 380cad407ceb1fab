"""Vocabulary lookups: IntegerLookup and StringLookup (Keras's IndexLookup).

The vocabulary comes from the config (`vocabulary=` at construction) or, for an adapted layer or
a vocabulary file, from the `.keras` archive's `assets/.../vocabulary.txt` (which lists the mask
and OOV tokens first). Keras 3's legacy `.h5` does not store an adapted vocabulary (Keras itself
cannot reload it) and tf-keras cannot save lookup layers to `.h5` at all.

Indices, as keras/src/layers/preprocessing/index_lookup.py computes them: with a mask token (in
"int" mode) index 0 is the mask, then `num_oov_indices` OOV indices, then the vocabulary in
order. An unknown value gets the one OOV index, or (several OOV indices, integer vocabulary)
OOV index `value mod num_oov_indices`, text (and `oov_method="farmhash"`) the OOV index of its hash
bucket (FarmHash64, or SipHash with a salt: see `hashing`); with no OOV index it is an error.
Other output modes encode those indices like
CategoryEncoding over `vocabulary_size` (or `max_tokens` with `pad_to_max_tokens`) columns; the
mask goes to no column; "tf_idf" weighs the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import BadModelFile
from ...h5reader.text import shown
from ..base import Derived, Layer, Tensor, as_int, converter
from .encoding import encode, output_mode
from .hashing import fill_hashed, salt_words
from .resizing import as_dtype

MASK_CODE_ENCODED = np.iinfo(np.int64).max  # Keras's index of the mask token outside "int" mode: no column
MAX_VOCABULARY = 1 << 22


def string_table(tokens):
    # A vocabulary of text as a NumPy str array, built once at import.
    return np.array(tokens, dtype=str)


def lookup(x, keys, indices, mask_token, mask_index, oov_buckets, oov_start):
    # Keras's IndexLookup: each value's index (`keys` are the vocabulary sorted, `indices` their
    # indices); values equal to mask_token (unless None) get mask_index; unknown values get OOV
    # index oov_start, or with oov_buckets > 1 oov_start + value mod oov_buckets; oov_buckets == 0
    # makes them an error, as in Keras.
    found = np.zeros(x.shape, dtype=bool)
    result = np.full(x.shape, -1, dtype=np.int64)
    if len(keys):
        where = np.minimum(np.searchsorted(keys, x), len(keys) - 1)
        found = keys[where] == x
        result = np.where(found, indices[where], result)
    if mask_token is not None:
        masked = x == mask_token
        result = np.where(masked, mask_index, result)
        found = found | masked
    if oov_buckets == 0 and not found.all():
        raise ValueError(f"lookup: values not in the vocabulary (and no OOV index): {x[~found][:5]}")
    if oov_buckets > 1:
        return np.where(found, result, np.mod(x, oov_buckets) + oov_start)
    return np.where(found, result, oov_start)


def lookup_invert(x, table, oov_token):
    # Keras's IndexLookup(invert=True): table[i] for each index i, oov_token outside the table.
    index = x.astype(np.int64)
    inside = (index >= 0) & (index < len(table))
    return np.where(inside, table[np.where(inside, index, 0)], oov_token)


def scale_columns(x, weights):
    # "tf_idf": counts times each column's inverse document frequency.
    return x * weights


@dataclass
class Vocabulary:
    tokens: list  # the learned/given tokens, without the mask and OOV tokens
    mask_token: object
    oov_token: object
    num_oov: int
    mode: str
    invert: bool

    @property
    def oov_start(self) -> int:
        return 1 if self.mask_token is not None and self.mode == "int" else 0

    @property
    def token_start(self) -> int:
        return self.oov_start + self.num_oov

    @property
    def size(self) -> int:
        return self.token_start + len(self.tokens)


def _token(layer: Layer, value: object, text: bool, what: str) -> object:
    if text:
        if not isinstance(value, str):
            raise BadModelFile(f"{layer.describe()} has a non-text {what}")
        if value.endswith("\0"):  # NumPy str arrays drop trailing NULs: such tokens could not be told apart
            raise layer.unsupported(f"a {what} ending in a NUL character")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise BadModelFile(f"{layer.describe()} has a non-integer {what}")
    return value


def _asset_lines(layer: Layer, text: bool) -> list:
    """The vocabulary file Keras wrote into the archive, split as the writer's Keras reads it back."""
    data = layer.assets.get("vocabulary.txt")
    if data is None:
        if not layer.assets and layer.get("vocabulary") is None:
            raise layer.unsupported(
                "no vocabulary in the file (an adapted vocabulary is stored only in .keras archives)"
            )
        raise layer.unsupported("no vocabulary in the file")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadModelFile(f"{layer.describe()}: vocabulary.txt is not UTF-8") from None
    if layer.keras_major >= 3:
        lines = content.splitlines()
        while lines and lines[-1] == "":
            lines.pop()
    else:
        lines = content.split("\n")
    if text:
        return lines
    try:
        return [int(line) for line in lines]
    except ValueError:
        raise BadModelFile(f"{layer.describe()}: vocabulary.txt holds a line that is not an integer") from None


def _vocabulary(layer: Layer, text: bool, mode: str, invert: bool) -> Vocabulary:
    num_oov = as_int(layer.get("num_oov_indices", 1), "num_oov_indices")
    if num_oov < 0:
        raise BadModelFile(f"{layer.describe()} has num_oov_indices {num_oov}")
    mask = layer.get("mask_token")
    oov = layer.get("oov_token", "[UNK]" if text else -1)
    mask = None if mask is None else _token(layer, mask, text, "mask_token")
    oov = None if oov is None else _token(layer, oov, text, "oov_token")
    vocab = Vocabulary([], mask, oov, num_oov, mode, invert)
    given = layer.get("vocabulary")
    if isinstance(given, str):  # a file path (tf-keras keeps it in the config; Keras 3 copies the file into assets)
        if layer.keras_major < 3:
            raise layer.unsupported("a vocabulary file outside the model file")
        given = None
    values = _asset_lines(layer, text) if given is None else given
    if not isinstance(values, list):
        raise BadModelFile(f"{layer.describe()} has an invalid vocabulary")
    if len(values) > MAX_VOCABULARY:
        raise layer.unsupported(f"a vocabulary of more than {MAX_VOCABULARY} tokens")
    values = [_token(layer, v, text, "vocabulary token") for v in values]
    # As Keras's set_vocabulary: the special tokens may lead the list (a saved vocabulary file always has them).
    special = [mask] * vocab.oov_start + [oov] * num_oov
    tokens = values[len(special) :] if values[: len(special)] == special else values
    if len(set(tokens)) != len(tokens):
        raise BadModelFile(f"{layer.describe()} has repeated vocabulary tokens")
    if (mask is not None and mask in tokens) or (invert and oov is not None and oov in tokens):
        raise BadModelFile(f"{layer.describe()} has its mask or OOV token inside the vocabulary")
    vocab.tokens = tokens
    max_tokens = layer.get("max_tokens")
    if max_tokens is not None and vocab.size > as_int(max_tokens, "max_tokens"):
        raise BadModelFile(f"{layer.describe()} has a vocabulary larger than max_tokens")
    if vocab.size == 0:
        raise layer.unsupported("an empty vocabulary")
    return vocab


def _keys(layer: Layer, tokens: list, text: bool) -> object:
    """The sorted tokens as an array for np.searchsorted: built at import for text, embedded for integers."""
    if text:  # Python's str order is NumPy's (code points), so sorting here keeps searchsorted valid there
        return Derived(string_table, (tuple(sorted(tokens)),))
    return np.array(sorted(tokens), dtype=np.int64)


def _depth(layer: Layer, vocab: Vocabulary) -> int:
    if layer.get("pad_to_max_tokens"):
        return as_int(layer.get("max_tokens"), "max_tokens")
    frozen = layer.get("vocabulary_size")
    if frozen is not None and frozen != vocab.size:
        raise BadModelFile(f"{layer.describe()} has {vocab.size} vocabulary entries, its config says {frozen}")
    return vocab.size


def _idf_weights(layer: Layer, vocab: Vocabulary, depth: int) -> np.ndarray:
    """The per-column weights of "tf_idf": stored with the layer, or built from the config as Keras 3 does."""
    if len(layer.weights) == 1:
        (weights,) = layer.expect_weights((depth,))
        return np.asarray(weights, dtype=np.float32)
    given = layer.get("idf_weights")
    if layer.keras_major < 3 or not isinstance(given, list) or layer.weights:
        raise layer.unsupported("output_mode 'tf_idf' without its idf_weights in the file")
    idf = np.array(given, dtype=np.float64)
    vocabulary = layer.get("vocabulary")
    special = len(vocabulary) - len(vocab.tokens) if isinstance(vocabulary, list) else 0
    if idf.ndim != 1 or len(idf) != len(vocab.tokens) + special:
        raise BadModelFile(f"{layer.describe()} has idf_weights of the wrong length")
    # Keras 3 (set_vocabulary): the special tokens' columns get the mean weight, unless listed; zeros up to max_tokens.
    front = [np.average(idf)] * (vocab.token_start if special == 0 else 0)
    weights = np.concatenate([front, idf]).astype(np.float32)
    return np.pad(weights, (0, depth - len(weights))) if depth > len(weights) else weights


def _lookup(layer: Layer, text: bool) -> Tensor:
    if layer.get("sparse"):
        raise layer.unsupported("sparse=True (sparse tensor outputs)")
    if text and str(layer.get("encoding", "utf-8")).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise layer.unsupported(f"encoding {shown(layer.get('encoding'), 20)} (only UTF-8 is supported)")
    x = layer.input
    mode, invert = output_mode(layer, "int"), bool(layer.get("invert"))
    if invert and mode != "int":
        raise BadModelFile(f"{layer.describe()} has invert=True with output_mode {shown(mode, 20)}")
    vocab = _vocabulary(layer, text, mode, invert)
    if invert:
        if x.dtype == "string":
            raise layer.unsupported("invert=True on a text input (it maps indices to tokens)")
        if vocab.oov_token is None:
            raise layer.unsupported("invert=True without an oov_token")
        entries = [vocab.mask_token] * vocab.oov_start + [vocab.oov_token] * vocab.num_oov + vocab.tokens
        table = Derived(string_table, (tuple(entries),)) if text else np.array(entries, dtype=np.int64)
        dtype = "string" if text else "int64"
        return layer.call(lookup_invert, x, table, shape=x.shape, dtype=dtype, oov_token=vocab.oov_token)
    if text != (x.dtype == "string"):
        raise layer.unsupported(f"a {x.dtype} input (it needs {'text' if text else 'integers'})")
    # Several OOV indices: integers go to `value mod n`, text (and Keras 3's oov_method="farmhash") to a hash bucket.
    hashed = vocab.num_oov > 1 and (text or layer.get("oov_method", "floormod") == "farmhash")
    if not text:
        x = layer.call(as_dtype, x, shape=x.shape, dtype="int64", to="int64")  # Keras casts to int64 (truncating)
    positions = sorted(range(len(vocab.tokens)), key=lambda i: vocab.tokens[i])
    indices = np.array([vocab.token_start + i for i in positions], dtype=np.int64)
    mask_index = 0 if mode == "int" else int(MASK_CODE_ENCODED)
    # A hashed OOV index is filled in by `fill_hashed`: `lookup` marks unknown values with -1 for it.
    buckets, start = (1, -1) if hashed else (vocab.num_oov, vocab.oov_start)
    codes = layer.call(
        lookup,
        x,
        _keys(layer, vocab.tokens, text),
        indices,
        shape=x.shape,
        dtype="int64",
        mask_token=vocab.mask_token,
        mask_index=mask_index,
        oov_buckets=buckets,
        oov_start=start,
    )
    if hashed:
        codes = layer.call(
            fill_hashed,
            x,
            codes,
            shape=x.shape,
            dtype="int64",
            buckets=vocab.num_oov,
            start=vocab.oov_start,
            salt=salt_words(layer),
        )
    if mode == "int":
        return codes
    depth = _depth(layer, vocab)
    # Keras 3 encodes into its int64 lookup dtype, tf-keras into float32; tf_idf is float32 in both.
    dtype = "int64" if layer.keras_major >= 3 and mode != "tf_idf" else "float32"
    if mode != "tf_idf":
        return encode(layer, codes, mode, depth, dtype, bounded=True)
    counts = encode(layer, codes, "count", depth, "float32", bounded=True)
    return layer.call(scale_columns, counts, _idf_weights(layer, vocab, depth), shape=counts.shape)


@converter("IntegerLookup", mask="drop")
def integer_lookup_layer(layer: Layer) -> Tensor:
    return _lookup(layer, text=False)


@converter("StringLookup", mask="drop")
def string_lookup_layer(layer: Layer) -> Tensor:
    return _lookup(layer, text=True)
